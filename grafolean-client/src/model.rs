//! What the backend sends and receives, as `serde` types (`grafolean-api.md` §3, §5).
//!
//! IDs are random integers in 1..2^31 on the real backend: never assume small or
//! increasing values. Entity `details` are not validated by the backend, so they stay
//! raw JSON here; [`Entity::ipv4`] reads the address the NetFlow bot needs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),*) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}

id_type!(
    /// An account id.
    AccountId,
    /// An entity id (also the `E` in `netflow.L.D.entity.E` paths).
    EntityId,
    /// A credential id.
    CredentialId,
    /// A sensor id.
    SensorId,
    /// A user id; bots are users (`profile` → `user_id`, `protocols.netflow.bot`).
    UserId
);

/// `GET status/info`: readiness (no authentication needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Always true when the backend answers.
    #[serde(default)]
    pub alive: bool,
    /// True until the database schema has been migrated.
    #[serde(default)]
    pub db_migration_needed: bool,
    /// Schema version.
    #[serde(default)]
    pub db_version: Option<i64>,
    /// `null` before migration, `false` before the first admin exists.
    #[serde(default)]
    pub user_exists: Option<bool>,
}

impl StatusInfo {
    /// The original bot's readiness test: migrated, and the first user exists.
    pub fn is_ready(&self) -> bool {
        !self.db_migration_needed && self.user_exists == Some(true)
    }
}

/// `GET profile/`: who the token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// This bot's user id, compared with `protocols.netflow.bot` of entities.
    pub user_id: UserId,
    /// `"bot"` for bots, `"person"` for people.
    #[serde(default)]
    pub user_type: String,
    /// The bot record (name, protocol, `tied_to_account`, ...).
    #[serde(default)]
    pub record: Value,
}

impl Profile {
    /// The account an account bot is tied to; `None` for a systemwide bot.
    pub fn tied_to_account(&self) -> Option<AccountId> {
        self.record
            .get("tied_to_account")
            .and_then(Value::as_i64)
            .map(AccountId)
    }
}

/// One account, from `GET accounts/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Account id.
    pub id: AccountId,
    /// Account name.
    #[serde(default)]
    pub name: String,
}

/// An entity as the backend returns it (`GET accounts/{id}/entities/[{eid}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Entity id.
    pub id: EntityId,
    /// Name (not unique).
    #[serde(default)]
    pub name: String,
    /// `"device"` for the entities the NetFlow bot cares about.
    #[serde(default)]
    pub entity_type: String,
    /// Parent entity, if any.
    #[serde(default)]
    pub parent: Option<EntityId>,
    /// Free-form details; not validated by the backend.
    #[serde(default)]
    pub details: Value,
    /// Enabled protocols by name (`"netflow"`, `"snmp"`, ...), raw.
    #[serde(default)]
    pub protocols: BTreeMap<String, Value>,
}

impl Entity {
    /// `details.ipv4` parsed as an address (surrounding whitespace ignored; an IPv6
    /// address there is accepted too). `None` if missing or not an address.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.details
            .get("ipv4")
            .and_then(Value::as_str)
            .and_then(|s| s.trim().parse().ok())
    }
}

/// `protocols.<name>` of an entity: which credential, sensors and bot it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolSettings {
    /// Credential id (required by the backend's schema, but read leniently).
    #[serde(default)]
    pub credential: Option<CredentialId>,
    /// Sensors with their optional per-entity interval.
    #[serde(default)]
    pub sensors: Option<Vec<SensorRef>>,
    /// The bot that collects for this entity; `None` means any bot of the protocol.
    #[serde(default)]
    pub bot: Option<UserId>,
}

/// One `protocols.<name>.sensors[]` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorRef {
    /// Sensor id.
    pub sensor: SensorId,
    /// Interval in seconds set on the entity, overriding the sensor's default.
    #[serde(default)]
    pub interval: Option<u64>,
}

/// `GET accounts/{id}/credentials/{cid}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// Credential id.
    pub id: CredentialId,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Protocol (`"netflow"`).
    #[serde(default)]
    pub protocol: String,
    /// Protocol-specific details (`{}` for NetFlow).
    #[serde(default)]
    pub details: Value,
}

/// `GET accounts/{id}/sensors/{sid}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    /// Sensor id.
    pub id: SensorId,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Protocol (`"netflow"`).
    #[serde(default)]
    pub protocol: String,
    /// Default interval in seconds, used when the entity sets none.
    #[serde(default)]
    pub default_interval: Option<u64>,
    /// Protocol-specific details (`{}` for NetFlow).
    #[serde(default)]
    pub details: Value,
}

/// The body of an entity suggestion (`POST accounts/{id}/entities/`): a device with an
/// address and no protocol enabled, for a person to review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewEntity {
    /// Name shown in Grafolean.
    pub name: String,
    /// Entity type.
    pub entity_type: String,
    /// Details.
    pub details: Value,
}

impl NewEntity {
    /// The original bot's suggestion for an exporter it saw:
    /// `{"name": "<ip> (NetFlow exporter)", "entity_type": "device", "details": {"ipv4": "<ip>"}}`.
    pub fn netflow_exporter(addr: IpAddr) -> NewEntity {
        NewEntity {
            name: format!("{addr} (NetFlow exporter)"),
            entity_type: "device".to_owned(),
            details: serde_json::json!({ "ipv4": addr.to_string() }),
        }
    }
}

/// `{"list": [...]}` wrapper of list answers.
#[derive(Deserialize)]
pub(crate) struct List<T> {
    pub(crate) list: Vec<T>,
}

/// `{"id": N}` answer to a POST that creates something.
#[derive(Deserialize)]
pub(crate) struct Created {
    pub(crate) id: EntityId,
}
