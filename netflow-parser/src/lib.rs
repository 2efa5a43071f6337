//! Zero-copy NetFlow v5/v9 decoder (work in progress).
#![forbid(unsafe_code)]

pub mod flow;
pub use flow::Flow;
