//! The job-configuration walk: accounts → NetFlow-enabled device entities of this bot →
//! credential and sensors, as the original's `fetch_job_configs('netflow')` did.
//!
//! The original kept an entity only if it is a `device`, has `netflow` in `protocols`,
//! `protocols.netflow.bot` is null or this bot's user id, has a credential, and has
//! sensors. This walk keeps the same entities and adds one rule: `details.ipv4` must be an
//! address, because it is how flows are matched to the entity. It never fails because
//! of one entity: entities that are enabled for this bot but malformed are skipped, logged
//! at `warn` and listed in [`AccountJobs::skipped`]; entities that simply are not ours
//! (another bot, NetFlow not enabled, not a device) are skipped quietly.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::Error;
use crate::model::{
    Account, AccountId, Credential, CredentialId, Entity, EntityId, ProtocolSettings, Sensor,
    SensorId, UserId,
};

/// The protocol key the NetFlow bot looks for in `entity.protocols`.
pub const NETFLOW_PROTOCOL: &str = "netflow";

/// Everything the bot needs to schedule its jobs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobConfig {
    /// This bot's user id (from `profile/`).
    pub bot_id: UserId,
    /// Accounts whose entities could be listed, in the backend's order (by name).
    pub accounts: Vec<AccountJobs>,
    /// Accounts whose entities could not be listed (403 or 404), with the reason.
    pub unavailable: Vec<(Account, Error)>,
}

impl JobConfig {
    /// All entity jobs of all accounts.
    pub fn entities(&self) -> impl Iterator<Item = &EntityJob> {
        self.accounts.iter().flat_map(|a| a.entities.iter())
    }
}

/// One account's part of the job configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AccountJobs {
    /// The account.
    pub account: Account,
    /// Entities this bot collects NetFlow for, by entity id.
    pub entities: Vec<EntityJob>,
    /// `details.ipv4` of every device entity of the account (whatever its protocols),
    /// which the exporter-suggestion job needs to avoid suggesting known devices again.
    pub device_addresses: BTreeSet<IpAddr>,
    /// NetFlow entities of this bot that were skipped, and why.
    pub skipped: Vec<Skipped>,
}

/// One entity the bot collects NetFlow for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EntityJob {
    /// The entity's account.
    pub account_id: AccountId,
    /// The entity id (the `E` in `...entity.E...` paths).
    pub entity_id: EntityId,
    /// Entity name.
    pub name: String,
    /// Entity type (always `device`).
    pub entity_type: String,
    /// Parent entity.
    pub parent: Option<EntityId>,
    /// The entity's raw details.
    pub details: Value,
    /// The exporter address (`details.ipv4`) whose flows belong to this entity.
    pub exporter: IpAddr,
    /// The NetFlow credential.
    pub credential: Credential,
    /// The sensors, in the entity's order.
    pub sensors: Vec<SensorJob>,
}

/// A sensor of an [`EntityJob`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SensorJob {
    /// Sensor id.
    pub sensor_id: SensorId,
    /// The entity's interval if set, else the sensor's default (the NetFlow bot ignores it).
    pub interval: Option<u64>,
    /// The sensor record.
    pub sensor: Sensor,
}

/// An entity enabled for this bot that the walk could not use.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Skipped {
    /// The entity id, if it had one.
    pub entity_id: Option<EntityId>,
    /// The entity name, if it had one.
    pub name: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why an entity was skipped.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The list item is not an entity object (no integer `id`, ...).
    Malformed(String),
    /// `protocols.netflow` is not `{credential, sensors, bot}`.
    MalformedSettings(String),
    /// No `details.ipv4`.
    NoAddress,
    /// `details.ipv4` is not an IP address.
    BadAddress(String),
    /// No credential set.
    NoCredential,
    /// `sensors` missing or empty.
    NoSensors,
    /// The credential could not be read.
    Credential(CredentialId, Error),
    /// A sensor could not be read.
    Sensor(SensorId, Error),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Malformed(m) => write!(f, "not an entity: {m}"),
            SkipReason::MalformedSettings(m) => write!(f, "malformed protocols.netflow: {m}"),
            SkipReason::NoAddress => f.write_str("details.ipv4 is missing"),
            SkipReason::BadAddress(a) => write!(f, "details.ipv4 {a:?} is not an IP address"),
            SkipReason::NoCredential => f.write_str("no credential set"),
            SkipReason::NoSensors => f.write_str("no sensors set"),
            SkipReason::Credential(id, e) => write!(f, "credential {id}: {e}"),
            SkipReason::Sensor(id, e) => write!(f, "sensor {id}: {e}"),
        }
    }
}

/// Outcome of looking at one entity list item.
enum Verdict {
    Keep(Box<EntityJob>),
    NotOurs(&'static str),
    Skip(Skipped),
}

impl Client {
    /// Reads the whole job configuration: `profile/`, `accounts/`, each account's entities,
    /// and the credential and sensors of each entity this bot collects for. Credentials and
    /// sensors are fetched once per walk even when many entities share them.
    ///
    /// Fails only on errors that make the whole configuration unknowable (401, 5xx,
    /// transport, a malformed `profile` or `accounts` answer); per-account 403/404 go to
    /// [`JobConfig::unavailable`] and per-entity problems to [`AccountJobs::skipped`].
    pub fn job_config(&self) -> Result<JobConfig, Error> {
        let bot_id = self.profile()?.user_id;
        let mut config = JobConfig {
            bot_id,
            accounts: Vec::new(),
            unavailable: Vec::new(),
        };
        for account in self.accounts()? {
            let items = match self.entities_raw(account.id) {
                Ok(items) => items,
                Err(e @ (Error::Forbidden { .. } | Error::NotFound { .. })) => {
                    warn!(account = %account.id, error = %e, "cannot list the account's entities, skipping it");
                    config.unavailable.push((account, e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            config
                .accounts
                .push(self.account_jobs(account, bot_id, &items)?);
        }
        Ok(config)
    }

    fn account_jobs(
        &self,
        account: Account,
        bot_id: UserId,
        items: &[Value],
    ) -> Result<AccountJobs, Error> {
        let mut jobs = AccountJobs {
            account,
            entities: Vec::new(),
            device_addresses: BTreeSet::new(),
            skipped: Vec::new(),
        };
        let mut credentials = HashMap::new();
        let mut sensors = HashMap::new();
        for item in items {
            let verdict = self.entity_job(
                jobs.account.id,
                bot_id,
                item,
                &mut credentials,
                &mut sensors,
                &mut jobs.device_addresses,
            )?;
            match verdict {
                Verdict::Keep(job) => jobs.entities.push(*job),
                Verdict::NotOurs(why) => {
                    debug!(account = %jobs.account.id, entity = ?item.get("id"), why, "entity not collected by this bot");
                }
                Verdict::Skip(s) => {
                    warn!(account = %jobs.account.id, entity = ?s.entity_id, name = %s.name, reason = %s.reason, "skipping NetFlow entity");
                    jobs.skipped.push(s);
                }
            }
        }
        Ok(jobs)
    }

    /// Decides about one entity list item. `Err` only for errors that end the whole walk.
    fn entity_job(
        &self,
        account_id: AccountId,
        bot_id: UserId,
        item: &Value,
        credentials: &mut HashMap<CredentialId, Result<Credential, Error>>,
        sensors: &mut HashMap<SensorId, Result<Sensor, Error>>,
        device_addresses: &mut BTreeSet<IpAddr>,
    ) -> Result<Verdict, Error> {
        let entity: Entity = match serde_json::from_value(item.clone()) {
            Ok(e) => e,
            Err(e) => {
                return Ok(Verdict::Skip(Skipped {
                    entity_id: item.get("id").and_then(Value::as_i64).map(EntityId),
                    name: item
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    reason: SkipReason::Malformed(e.to_string()),
                }));
            }
        };
        if entity.entity_type != "device" {
            return Ok(Verdict::NotOurs("not a device"));
        }
        let address = entity.ipv4();
        if let Some(a) = address {
            device_addresses.insert(a);
        }
        let Some(raw) = entity.protocols.get(NETFLOW_PROTOCOL) else {
            return Ok(Verdict::NotOurs("NetFlow not enabled"));
        };
        let skip = |reason| {
            Ok(Verdict::Skip(Skipped {
                entity_id: Some(entity.id),
                name: entity.name.clone(),
                reason,
            }))
        };
        // Read `bot` first, leniently, so a foreign bot's malformed entity stays quiet.
        match raw.get("bot") {
            None | Some(Value::Null) => {}
            Some(b) if b.as_i64() == Some(bot_id.0) => {}
            Some(_) => return Ok(Verdict::NotOurs("another bot collects it")),
        }
        let settings: ProtocolSettings = match serde_json::from_value(raw.clone()) {
            Ok(s) => s,
            Err(e) => return skip(SkipReason::MalformedSettings(e.to_string())),
        };
        let credential_id = match settings.credential {
            Some(c) if c.0 != 0 => c,
            _ => return skip(SkipReason::NoCredential),
        };
        let sensor_refs = match settings.sensors {
            Some(s) if !s.is_empty() => s,
            _ => return skip(SkipReason::NoSensors),
        };
        let exporter = match address {
            Some(a) => a,
            None => {
                return match entity.details.get("ipv4") {
                    None | Some(Value::Null) => skip(SkipReason::NoAddress),
                    Some(v) => skip(SkipReason::BadAddress(
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )),
                };
            }
        };
        let credential = match lookup(credentials, credential_id, || {
            self.credential(account_id, credential_id)
        })? {
            Ok(c) => c,
            Err(e) => return skip(SkipReason::Credential(credential_id, e)),
        };
        let mut sensor_jobs = Vec::with_capacity(sensor_refs.len());
        for r in sensor_refs {
            let sensor = match lookup(sensors, r.sensor, || self.sensor(account_id, r.sensor))? {
                Ok(s) => s,
                Err(e) => return skip(SkipReason::Sensor(r.sensor, e)),
            };
            sensor_jobs.push(SensorJob {
                sensor_id: r.sensor,
                interval: r.interval.or(sensor.default_interval),
                sensor,
            });
        }
        Ok(Verdict::Keep(Box::new(EntityJob {
            account_id,
            entity_id: entity.id,
            name: entity.name,
            entity_type: entity.entity_type,
            parent: entity.parent,
            details: entity.details,
            exporter,
            credential,
            sensors: sensor_jobs,
        })))
    }
}

/// Fetches through a per-walk cache. A 403/404 is a per-entity outcome (cached too);
/// any other error ends the walk.
fn lookup<K: std::hash::Hash + Eq + Copy, T: Clone>(
    cache: &mut HashMap<K, Result<T, Error>>,
    key: K,
    fetch: impl FnOnce() -> Result<T, Error>,
) -> Result<Result<T, Error>, Error> {
    if let Some(hit) = cache.get(&key) {
        return Ok(hit.clone());
    }
    let got = match fetch() {
        Ok(v) => Ok(v),
        Err(e @ (Error::NotFound { .. } | Error::Forbidden { .. })) => Err(e),
        Err(e) => return Err(e),
    };
    cache.insert(key, got.clone());
    Ok(got)
}
