//! Library side of the NetFlow binaries: thin wiring over the library crates.
