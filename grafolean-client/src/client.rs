//! The HTTP client: one blocking call per API endpoint (how each call travels, retries and
//! timeouts included, is in `transport.rs`).

use std::fmt;
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
use crate::roots::root_certs_with;
use crate::transport::{Method, Retry, parse};
use crate::values::{ValueBatch, WireValue};

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

/// A blocking Grafolean API client for one bot token.
///
/// Every call has a timeout; reads are retried with backoff after transient failures.
/// The token is sent as the `b` query parameter and never appears in logs or errors.
/// `Client` is cheap to clone (connections are pooled and shared) and `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    pub(crate) agent: ureq::Agent,
    pub(crate) base: String,
    pub(crate) token: Token,
    pub(crate) config: ClientConfig,
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
}
