//! NetFlow v9 with a template cache that persists across inputs.
#![no_main]
use libfuzzer_sys::fuzz_target;
include!("stateful.rs");

fuzz_target!(|data: &[u8]| run(9, data));
