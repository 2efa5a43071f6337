//! Library side of the NetFlow binaries: thin wiring over the library crates.
//!
//! Each binary in `src/bin/` parses its arguments and calls into a module here:
//! [`app`] holds the `run` function of every long-running binary; [`collector`], [`frame`],
//! [`writer`] and [`bot`] are the stages, [`generator`] the test-flow sender.
#![forbid(unsafe_code)]

pub mod app;
pub mod backoff;
pub mod bot;
pub mod capture;
pub mod collector;
pub mod config;
pub mod decode;
pub mod delivery;
pub mod flowjson;
pub mod frame;
pub mod generator;
pub mod query;
pub mod sequence_loss;
pub mod spool;
pub mod stats;
pub mod writer;

/// Errors of the apps' library code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or malformed: the one line a user sees.
    #[error("setting {0}: {1}")]
    Setting(&'static str, String),
    /// An I/O operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] netflow_store::StoreError),
    /// Grafolean failed.
    #[error("Grafolean: {0}")]
    Grafolean(#[from] grafolean_client::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |e| Error::Io(what, e)
    }
}
