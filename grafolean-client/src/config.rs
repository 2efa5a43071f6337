//! What a [`Client`](crate::Client) is made with: the bot's token and its timeouts, retries
//! and trusted roots. Typed values only: the binaries map `BOT_TOKEN`, `BACKEND_CA_FILE`...
//! onto them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// A bot token (the `b` query parameter). Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from text; surrounding whitespace (e.g. a file's trailing newline, which
    /// makes the backend answer 500) is trimmed. Empty text is refused.
    pub fn new(token: &str) -> Result<Token, Error> {
        let t = token.trim();
        if t.is_empty() {
            return Err(Error::Config("the bot token is empty".to_owned()));
        }
        Ok(Token(t.to_owned()))
    }

    /// Reads the token from a file (the bot's `BOT_TOKEN_FROM_FILE`), trimmed.
    pub fn from_file(path: &Path) -> Result<Token, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read bot token file {}: {e}",
                path.display()
            ))
        })?;
        Token::new(&text)
    }

    /// The secret itself, for code that must pass it on. Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Timeouts, retries and batch size. `Default` suits a bot talking to a real backend.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Whole-call timeout (connect, send, answer) for reads and small POSTs. Default 10 s.
    pub timeout: Duration,
    /// Whole-call timeout for a values POST; the real backend needs about 1 s per 1,000
    /// new paths on a small machine. Default 60 s.
    pub values_timeout: Duration,
    /// Extra attempts for GETs after a transport error, timeout or 5xx. Default 3.
    pub read_retries: u32,
    /// Extra attempts for a values POST after a 5xx or a connection that was never made.
    /// A values POST is not retried after a timeout or a broken connection, because the
    /// backend may have stored it; never after a 2xx. Default 2.
    pub post_retries: u32,
    /// First delay between attempts; doubles each time, up to `backoff_max`. Default 500 ms.
    pub backoff_initial: Duration,
    /// Longest delay between attempts (retries and readiness polls). Default 10 s, as the
    /// original bot polled `status/info`.
    pub backoff_max: Duration,
    /// A batch larger than this is sent as several POSTs. Default 1,000.
    pub max_values_per_request: usize,
    /// A PEM file of extra root certificates to trust for HTTPS (`BACKEND_CA_FILE`), e.g. a
    /// self-hosted Grafolean's private CA. They are trusted in addition to the bundled
    /// Mozilla roots, or with the `platform-certs` feature in addition to the system's roots
    /// (read with `rustls-native-certs`). Read once, when the [`Client`](crate::Client) is made; a missing,
    /// unreadable or invalid file is [`Error::CaFile`]. Default: none.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            timeout: Duration::from_secs(10),
            values_timeout: Duration::from_secs(60),
            read_retries: 3,
            post_retries: 2,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(10),
            max_values_per_request: 1000,
            ca_file: None,
        }
    }
}

impl ClientConfig {
    /// Sets [`timeout`](Self::timeout) and [`values_timeout`](Self::values_timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> ClientConfig {
        self.timeout = timeout;
        self.values_timeout = timeout;
        self
    }

    /// Sets both retry counts.
    pub fn with_retries(mut self, read_retries: u32, post_retries: u32) -> ClientConfig {
        self.read_retries = read_retries;
        self.post_retries = post_retries;
        self
    }

    /// Sets the backoff bounds.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> ClientConfig {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Sets [`max_values_per_request`](Self::max_values_per_request) (at least 1).
    pub fn with_max_values_per_request(mut self, n: usize) -> ClientConfig {
        self.max_values_per_request = n.max(1);
        self
    }

    /// Sets [`ca_file`](Self::ca_file): extra root certificates to trust, from a PEM file.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> ClientConfig {
        self.ca_file = Some(path.into());
        self
    }
}
