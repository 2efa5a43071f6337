//! Library side of the NetFlow binaries: thin wiring over the library crates.
//!
//! Each binary in `src/bin/` parses its arguments and calls into a module here.

pub mod capture;
pub mod decode;
pub mod flowjson;
