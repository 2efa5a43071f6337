//! The crate's error type.
//!
//! Every variant is something a caller acts on differently: stop and fix the token
//! ([`Error::Unauthorized`]), skip a job and say why once ([`Error::Forbidden`]), drop a
//! stale id ([`Error::NotFound`]), fix the request ([`Error::Rejected`]) or the settings
//! ([`Error::Config`], [`Error::CaFile`]), or try again
//! later ([`Error::Server`], [`Error::Transport`], [`Error::Timeout`]).
//!
//! No variant ever carries the bot token: resources are API paths without the query
//! string, and any text that comes from the HTTP stack is redacted before it is stored.

use std::path::PathBuf;
use std::time::Duration;

use crate::path::PathError;

/// Anything that can go wrong talking to Grafolean or building what is sent to it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: the backend does not know the bot token (wrong, malformed or missing).
    #[error("unauthorized (401) on {method} {resource}: the bot token was rejected")]
    Unauthorized {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
    },
    /// 403: the token is valid but lacks the permission, e.g. an account bot may not
    /// create entities. Retrying does not help until someone changes the permissions.
    #[error("forbidden (403) on {method} {resource}: insufficient permissions")]
    Forbidden {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
    },
    /// 404: the account, entity, credential or sensor does not exist (any more).
    #[error("not found (404) on {method} {resource}: {message}")]
    NotFound {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// The server's message, e.g. `{"detail":"No such entity"}`.
        message: String,
    },
    /// 400, 422 or another 4xx: the server refused the input. Sending it again will not help.
    #[error("rejected ({status}) on {method} {resource}: {message}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// The server's message, e.g. `Input validation failed: ...`.
        message: String,
    },
    /// 5xx: the server failed (database down, or a request it cannot handle).
    #[error("server error ({status}) on {method} {resource}: {message}")]
    Server {
        /// HTTP status code.
        status: u16,
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// The server's message, e.g. `Could not validate access`.
        message: String,
    },
    /// The call did not complete in time. For a POST the server may still have acted on it.
    #[error("timeout after {after:?} on {method} {resource}")]
    Timeout {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// The configured timeout.
        after: Duration,
    },
    /// Connecting, TLS, or reading/writing the connection failed.
    #[error("transport error on {method} {resource}: {message}")]
    Transport {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// True when no request can have reached the server (connection refused, host not
        /// found, TLS handshake): a POST may then be retried without duplicating it.
        before_send: bool,
        /// What the HTTP stack reported, with the token redacted.
        message: String,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected response to {method} {resource}: {message}")]
    Decode {
        /// HTTP method of the call.
        method: &'static str,
        /// API path of the call, relative to `BACKEND_URL`, without the query string.
        resource: String,
        /// What did not parse.
        message: String,
    },
    /// A value path the backend would reject; nothing was sent.
    #[error("invalid value path: {0}")]
    InvalidPath(#[from] PathError),
    /// NaN or an infinity: the backend stores them but then fails every read of the path.
    #[error("value {0} is not a finite number")]
    NonFiniteValue(f64),
    /// The client is misconfigured (e.g. `BACKEND_URL` is not an http(s) URL, no token).
    #[error("configuration: {0}")]
    Config(String),
    /// The CA file ([`ClientConfig::ca_file`](crate::ClientConfig::ca_file), `BACKEND_CA_FILE`)
    /// cannot be used: missing or unreadable, not PEM, no certificate in it, or a certificate
    /// that cannot be a trust anchor. Fix the file or the setting; retrying does not help.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file as configured.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// [`Client::wait_until_ready`](crate::Client::wait_until_ready) gave up.
    #[error("Grafolean backend not ready after {waited:?}: {last}")]
    NotReady {
        /// How long it waited.
        waited: Duration,
        /// Why the last check failed.
        last: String,
    },
}

impl Error {
    /// The HTTP status code, for errors that come from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Rejected { status, .. } | Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the request may have reached the server and been acted on although the call
    /// failed: a timeout, or a connection that broke after the request was (partly) sent. For
    /// a values POST this means the values may be stored: Grafolean stamps values with their
    /// arrival time, so sending them again could make a second data point. [`Client`] never
    /// retries such a POST itself, and callers should not either: count the outcome as unknown.
    /// False for errors that certainly did not land (answers other than 2xx, connections never
    /// made, input refused before sending); those the client has already retried where safe.
    ///
    /// [`Client`]: crate::Client
    pub fn may_have_landed(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Transport {
                    before_send: false,
                    ..
                }
        )
    }

    /// True for failures that may go away by themselves (5xx, timeouts, transport). Whether
    /// trying again is safe is another question: see [`Error::may_have_landed`].
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Server { .. } | Error::Timeout { .. } | Error::Transport { .. }
        )
    }
}
