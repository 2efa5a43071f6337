//! First-run examples; see the `examples/` directory.
