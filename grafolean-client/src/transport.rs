//! One HTTP exchange with the backend: the retry policy, timeouts, how transport failures map
//! to [`Error`], response size limits, and keeping the token out of every message.

use std::io::ErrorKind;
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tracing::warn;

use crate::client::Client;
use crate::error::Error;
use crate::roots::tls_message;

/// Longest response body read; the largest real answer is an account's entity list.
const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Longest server message kept in an [`Error`].
const MAX_MESSAGE: usize = 512;
/// What replaces the token wherever text could contain it.
const REDACTED: &str = "<redacted>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// When a failed call may be tried again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Retry {
    /// Idempotent read: after transport errors, timeouts and 5xx.
    Read,
    /// Values POST: after 5xx (all-or-nothing on the backend) and never-sent requests.
    Values,
    /// Creating POST: only when the request can't have reached the server.
    NotSent,
}

impl Client {
    pub(crate) fn request(
        &self,
        method: Method,
        resource: &str,
        body: Option<&[u8]>,
        retry: Retry,
    ) -> Result<(String, usize), Error> {
        self.request_auth(method, resource, body, retry, true)
    }

    /// One call with its retry policy; returns the body and the number of retries made.
    pub(crate) fn request_auth(
        &self,
        method: Method,
        resource: &str,
        body: Option<&[u8]>,
        retry: Retry,
        auth: bool,
    ) -> Result<(String, usize), Error> {
        let max_retries = match retry {
            Retry::Read => self.config.read_retries,
            Retry::Values => self.config.post_retries,
            Retry::NotSent => self.config.post_retries,
        };
        let mut delay = self.config.backoff_initial;
        let mut attempt: u32 = 0;
        loop {
            match self.request_once(method, resource, body, auth) {
                Ok(text) => return Ok((text, attempt as usize)),
                Err(e) => {
                    let again = match retry {
                        Retry::Read => e.is_transient(),
                        Retry::Values => matches!(
                            e,
                            Error::Server { .. }
                                | Error::Transport {
                                    before_send: true,
                                    ..
                                }
                        ),
                        Retry::NotSent => matches!(
                            e,
                            Error::Transport {
                                before_send: true,
                                ..
                            }
                        ),
                    };
                    if !again || attempt >= max_retries {
                        return Err(e);
                    }
                    attempt += 1;
                    warn!(
                        method = method.as_str(),
                        resource,
                        attempt,
                        of = max_retries,
                        delay = ?delay,
                        error = %e,
                        "Grafolean call failed, retrying"
                    );
                    thread::sleep(delay);
                    delay = (delay * 2).min(self.config.backoff_max);
                }
            }
        }
    }

    /// Exactly one HTTP exchange, classified into our error type.
    pub(crate) fn request_once(
        &self,
        method: Method,
        resource: &str,
        body: Option<&[u8]>,
        auth: bool,
    ) -> Result<String, Error> {
        let mut url = format!("{}/{}", self.base, resource);
        if auth {
            url.push_str("?b=");
            url.push_str(&query_encode(self.token.secret()));
        }
        let timeout = match (method, body.is_some()) {
            (Method::Post, true) if resource.ends_with("/values/") => self.config.values_timeout,
            _ => self.config.timeout,
        };
        let result = match method {
            Method::Get => self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            Method::Post => self
                .agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(b"")),
        };
        let mut response =
            result.map_err(|e| self.transport_error(method, resource, timeout, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport_error(method, resource, timeout, e))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let method_s = method.as_str();
        let resource = resource.to_owned();
        let message = self.redact(&shorten(text.trim()));
        Err(match status {
            401 => Error::Unauthorized {
                method: method_s,
                resource,
            },
            403 => Error::Forbidden {
                method: method_s,
                resource,
            },
            404 => Error::NotFound {
                method: method_s,
                resource,
                message,
            },
            500..=599 => Error::Server {
                status,
                method: method_s,
                resource,
                message,
            },
            _ => Error::Rejected {
                status,
                method: method_s,
                resource,
                message,
            },
        })
    }

    fn transport_error(
        &self,
        method: Method,
        resource: &str,
        timeout: Duration,
        e: ureq::Error,
    ) -> Error {
        let method_s = method.as_str();
        let resource = resource.to_owned();
        let before_send = match &e {
            ureq::Error::Timeout(_) => {
                return Error::Timeout {
                    method: method_s,
                    resource,
                    after: timeout,
                };
            }
            ureq::Error::Io(io) if io.kind() == ErrorKind::TimedOut => {
                return Error::Timeout {
                    method: method_s,
                    resource,
                    after: timeout,
                };
            }
            ureq::Error::BadUri(_) => {
                return Error::Config(format!(
                    "BACKEND_URL is not a valid URL: {}",
                    self.redact(&e.to_string())
                ));
            }
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref()) {
                // ureq's rustls transport reports TLS failures as I/O errors. The certificate
                // is checked in the handshake, before any request byte is sent.
                Some(tls) => {
                    return Error::Transport {
                        method: method_s,
                        resource,
                        before_send: matches!(
                            tls,
                            rustls::Error::InvalidCertificate(_)
                                | rustls::Error::PeerIncompatible(_)
                        ),
                        message: self.redact(&tls_message(tls)),
                    };
                }
                None => matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::NotFound
                ),
            },
            // TLS problems show up in the handshake, before the request is written.
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::TlsRequired => true,
            _ => false,
        };
        Error::Transport {
            method: method_s,
            resource,
            before_send,
            message: self.redact(&e.to_string()),
        }
    }

    /// Removes the token (plain and query-encoded) from text that may contain a URL.
    fn redact(&self, text: &str) -> String {
        let secret = self.token.secret();
        let encoded = query_encode(secret);
        let mut out = text.replace(secret, REDACTED);
        if encoded != secret {
            out = out.replace(&encoded, REDACTED);
        }
        out
    }
}

pub(crate) fn parse<T: DeserializeOwned>(
    method: Method,
    resource: &str,
    text: &str,
) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Decode {
        method: method.as_str(),
        resource: resource.to_owned(),
        message: e.to_string(),
    })
}

/// Cuts a server message to [`MAX_MESSAGE`] bytes on a character boundary.
pub(crate) fn shorten(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
pub(crate) fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_query_encode() {
        assert_eq!(query_encode("ab-12"), "ab-12");
        assert_eq!(query_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn test_shorten_keeps_char_boundaries() {
        let s = "č".repeat(MAX_MESSAGE);
        let short = shorten(&s);
        assert!(short.len() <= MAX_MESSAGE + 3);
        assert!(short.ends_with("..."));
    }
}
