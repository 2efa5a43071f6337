//! The HTTP client: one blocking call per API endpoint, timeouts, retries, token redaction.

use std::fmt;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::config::{ClientConfig, Token};
use crate::error::Error;
use crate::model::{
    Account, AccountId, Created, Credential, CredentialId, Entity, EntityId, List, NewEntity,
    Profile, Sensor, SensorId, StatusInfo,
};
use crate::roots::{root_certs_with, tls_message};
use crate::values::{ValueBatch, WireValue};

/// Longest response body read; the largest real answer is an account's entity list.
const MAX_BODY: u64 = 32 * 1024 * 1024;
/// Longest server message kept in an [`Error`].
const MAX_MESSAGE: usize = 512;
/// What replaces the token wherever text could contain it.
const REDACTED: &str = "<redacted>";

/// What a successful [`Client::post_values`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostReport {
    /// Values sent (and acknowledged with 2xx).
    pub values: usize,
    /// POST requests made that succeeded.
    pub requests: usize,
    /// Attempts that failed and were retried.
    pub retries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// When a failed call may be tried again.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Idempotent read: after transport errors, timeouts and 5xx.
    Read,
    /// Values POST: after 5xx (all-or-nothing on the backend) and never-sent requests.
    Values,
    /// Creating POST: only when the request can't have reached the server.
    NotSent,
}

/// A blocking Grafolean API client for one bot token.
///
/// Every call has a timeout; reads are retried with backoff after transient failures.
/// The token is sent as the `b` query parameter and never appears in logs or errors.
/// `Client` is cheap to clone (connections are pooled and shared) and `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Token,
    config: ClientConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token)
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    /// A client for `backend_url` (the bot's `BACKEND_URL`, which already ends in `/api`,
    /// e.g. `https://grafolean.example.org/api`) with default settings.
    pub fn new(backend_url: &str, token: Token) -> Result<Client, Error> {
        Client::with_config(backend_url, token, ClientConfig::default())
    }

    /// A client with explicit timeouts, retries and batch size.
    pub fn with_config(
        backend_url: &str,
        token: Token,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let base = backend_url.trim().trim_end_matches('/');
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || base.len() <= "https://".len()
        {
            return Err(Error::Config(format!(
                "BACKEND_URL must be an http:// or https:// URL ending in /api, got {base:?}"
            )));
        }
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("grafolean-client/", env!("CARGO_PKG_VERSION")));
        let roots = match &config.ca_file {
            Some(path) => Some(root_certs_with(path)?),
            None if cfg!(feature = "platform-certs") => {
                Some(ureq::tls::RootCerts::PlatformVerifier)
            }
            None => None,
        };
        let agent_config = match roots {
            Some(roots) => {
                agent_config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            }
            None => agent_config,
        };
        let agent = ureq::Agent::new_with_config(agent_config.build());
        Ok(Client {
            agent,
            base: base.to_owned(),
            token,
            config,
        })
    }

    /// The base URL (`BACKEND_URL` without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The settings in use.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `GET status/info` (no authentication), retried like every read.
    pub fn status(&self) -> Result<StatusInfo, Error> {
        self.get_json("status/info", false)
    }

    /// Polls `status/info` until the backend is migrated and has a user, backing off from
    /// `backoff_initial` to `backoff_max` between polls and logging why it waits.
    ///
    /// Gives up with [`Error::NotReady`] after `give_up_after` (`None`: wait forever, as the
    /// original bot did).
    pub fn wait_until_ready(&self, give_up_after: Option<Duration>) -> Result<StatusInfo, Error> {
        let never = AtomicBool::new(false);
        let start = Instant::now();
        self.wait_until_ready_or_stop(give_up_after, &never)?
            .ok_or_else(|| Error::NotReady {
                waited: start.elapsed(),
                last: "stopped".to_owned(),
            })
    }

    /// [`Client::wait_until_ready`] that also returns `Ok(None)` soon after `stop` is set (it
    /// sleeps between polls in slices of at most 100 ms), so that a process asked to stop
    /// while the backend is down exits at once instead of waiting for it.
    pub fn wait_until_ready_or_stop(
        &self,
        give_up_after: Option<Duration>,
        stop: &AtomicBool,
    ) -> Result<Option<StatusInfo>, Error> {
        let start = Instant::now();
        let mut delay = self.config.backoff_initial;
        let mut polls: u64 = 0;
        loop {
            polls += 1;
            let why = match self.request_once(Method::Get, "status/info", None, false) {
                Ok(body) => match parse::<StatusInfo>(Method::Get, "status/info", &body) {
                    Ok(s) if s.is_ready() => {
                        if polls > 1 {
                            info!(polls, waited = ?start.elapsed(), "Grafolean backend is ready");
                        }
                        return Ok(Some(s));
                    }
                    Ok(s) => {
                        let why = if s.db_migration_needed {
                            "database migration needed"
                        } else {
                            "no user exists yet"
                        };
                        info!(polls, why, "waiting for the Grafolean backend");
                        why.to_owned()
                    }
                    Err(e) => {
                        warn!(polls, error = %e, "waiting for the Grafolean backend");
                        e.to_string()
                    }
                },
                Err(e) => {
                    warn!(polls, error = %e, "waiting for the Grafolean backend");
                    e.to_string()
                }
            };
            let waited = start.elapsed();
            if let Some(limit) = give_up_after
                && waited + delay > limit
            {
                return Err(Error::NotReady { waited, last: why });
            }
            let wake = Instant::now() + delay;
            while let Some(left) = wake.checked_duration_since(Instant::now()) {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                thread::sleep(left.min(Duration::from_millis(100)));
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            delay = (delay * 2).min(self.config.backoff_max);
        }
    }

    /// `GET profile/`: this bot's own user id and record.
    pub fn profile(&self) -> Result<Profile, Error> {
        self.get_json("profile/", true)
    }

    /// `GET accounts/`: the accounts this bot may use.
    pub fn accounts(&self) -> Result<Vec<Account>, Error> {
        Ok(self.get_json::<List<Account>>("accounts/", true)?.list)
    }

    /// `GET accounts/{id}/entities/`: all entities of an account, sorted by id.
    ///
    /// Fails if any item does not parse; [`Client::job_config`] uses a lenient variant.
    pub fn entities(&self, account: AccountId) -> Result<Vec<Entity>, Error> {
        Ok(self
            .get_json::<List<Entity>>(&format!("accounts/{account}/entities/"), true)?
            .list)
    }

    /// The entity list as raw JSON items, for callers that tolerate malformed entities.
    pub(crate) fn entities_raw(&self, account: AccountId) -> Result<Vec<serde_json::Value>, Error> {
        Ok(self
            .get_json::<List<serde_json::Value>>(&format!("accounts/{account}/entities/"), true)?
            .list)
    }

    /// `GET accounts/{id}/entities/{eid}`.
    pub fn entity(&self, account: AccountId, entity: EntityId) -> Result<Entity, Error> {
        self.get_json(&format!("accounts/{account}/entities/{entity}"), true)
    }

    /// `GET accounts/{id}/credentials/{cid}`.
    pub fn credential(
        &self,
        account: AccountId,
        credential: CredentialId,
    ) -> Result<Credential, Error> {
        self.get_json(
            &format!("accounts/{account}/credentials/{credential}"),
            true,
        )
    }

    /// `GET accounts/{id}/sensors/{sid}`.
    pub fn sensor(&self, account: AccountId, sensor: SensorId) -> Result<Sensor, Error> {
        self.get_json(&format!("accounts/{account}/sensors/{sensor}"), true)
    }

    /// `POST accounts/{id}/values/`: sends a batch, split into requests of at most
    /// `max_values_per_request` values. An empty batch sends nothing.
    ///
    /// Each request is retried up to `post_retries` times after a 5xx or a connection that
    /// was never made, never after a 2xx, a timeout or a connection broken mid-request (the
    /// backend may have stored the values; a duplicate would be a second data point). On
    /// error, the requests before the failing one have been stored; the error says which.
    /// The backend stamps all values of one request with its own clock.
    pub fn post_values(&self, account: AccountId, batch: &ValueBatch) -> Result<PostReport, Error> {
        let resource = format!("accounts/{account}/values/");
        let items: Vec<WireValue<'_>> = batch.iter().map(|(p, v)| WireValue { p, v }).collect();
        let mut report = PostReport {
            values: 0,
            requests: 0,
            retries: 0,
        };
        for chunk in items.chunks(self.config.max_values_per_request.max(1)) {
            let body = serde_json::to_vec(chunk).map_err(|e| Error::Decode {
                method: "POST",
                resource: resource.clone(),
                message: format!("cannot encode values: {e}"),
            })?;
            let (_, retries) = self.request(Method::Post, &resource, Some(&body), Retry::Values)?;
            report.retries += retries;
            report.requests += 1;
            report.values += chunk.len();
        }
        debug!(%account, values = report.values, requests = report.requests, "values posted");
        Ok(report)
    }

    /// `POST accounts/{id}/entities/`: suggests an entity; returns the new id.
    ///
    /// Not retried once the request may have reached the server (the backend would create
    /// a duplicate). An account bot made in the web UI gets [`Error::Forbidden`].
    pub fn suggest_entity(
        &self,
        account: AccountId,
        entity: &NewEntity,
    ) -> Result<EntityId, Error> {
        let resource = format!("accounts/{account}/entities/");
        let body = serde_json::to_vec(entity).map_err(|e| Error::Decode {
            method: "POST",
            resource: resource.clone(),
            message: format!("cannot encode entity: {e}"),
        })?;
        let (text, _) = self.request(Method::Post, &resource, Some(&body), Retry::NotSent)?;
        Ok(parse::<Created>(Method::Post, &resource, &text)?.id)
    }

    fn get_json<T: DeserializeOwned>(&self, resource: &str, auth: bool) -> Result<T, Error> {
        let (text, _) = self.request_auth(Method::Get, resource, None, Retry::Read, auth)?;
        parse(Method::Get, resource, &text)
    }

    fn request(
        &self,
        method: Method,
        resource: &str,
        body: Option<&[u8]>,
        retry: Retry,
    ) -> Result<(String, usize), Error> {
        self.request_auth(method, resource, body, retry, true)
    }

    /// One call with its retry policy; returns the body and the number of retries made.
    fn request_auth(
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
    fn request_once(
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

fn parse<T: DeserializeOwned>(method: Method, resource: &str, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Decode {
        method: method.as_str(),
        resource: resource.to_owned(),
        message: e.to_string(),
    })
}

/// Cuts a server message to [`MAX_MESSAGE`] bytes on a character boundary.
fn shorten(text: &str) -> String {
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
fn query_encode(s: &str) -> String {
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
    fn test_token_is_trimmed_and_hidden() {
        let t = Token::new(" 2950cb50-8be5-4079-881e-312732065f11\n");
        let t = t.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.secret(), "2950cb50-8be5-4079-881e-312732065f11");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(Token::new(" \n").is_err());
    }

    #[test]
    fn test_backend_url_is_checked() {
        let t = Token::new("x").unwrap_or_else(|e| panic!("{e}"));
        assert!(Client::new("127.0.0.1:8000/api", t.clone()).is_err());
        assert!(Client::new("https://", t.clone()).is_err());
        let c = Client::new("https://grafolean.example.org/api/", t);
        assert_eq!(
            c.map(|c| c.base_url().to_owned()).ok().as_deref(),
            Some("https://grafolean.example.org/api")
        );
    }

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
