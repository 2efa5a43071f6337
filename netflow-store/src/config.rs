//! Store settings: which backend, where, table prefix, retention.

use std::path::PathBuf;
use std::time::Duration;

use crate::StoreError;

/// Default table-name prefix, as the original bot used.
pub const DEFAULT_TABLE_PREFIX: &str = "netflow_";
/// Default retention in days, as the original bot used.
pub const DEFAULT_RETENTION_DAYS: u32 = 5;
/// Default number of hourly partitions created ahead of the current hour.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 3;

/// Where the flows go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// A PostgreSQL server (production). `postgres::Config`'s `Debug` hides the password.
    Postgres(Box<postgres::Config>),
    /// An SQLite database file (the zero-setup default); created if missing.
    Sqlite(PathBuf),
    /// A ClickHouse server over HTTP (for more flows than one PostgreSQL server holds).
    ClickHouse(ClickHouseConfig),
}

/// Default ClickHouse database (`CLICKHOUSE_DATABASE`).
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "netflow";

/// Where a ClickHouse store lives. `Debug` hides the password.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://host:8123` (or `https://`).
    pub url: String,
    /// The database (created if missing): `[A-Za-z_][A-Za-z0-9_]*`.
    pub database: String,
    /// User name (the server's `default` user when `None`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Where the bot's window sums are computed (`CLICKHOUSE_AGGREGATION`).
    pub aggregation: Aggregation,
}

/// Where the bot's window sums are computed on ClickHouse (`CLICKHOUSE_AGGREGATION`). Both send
/// the same values to Grafolean; they differ in where the work is done and what travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// `server`: by the ClickHouse server (`GROUP BY`, `LIMIT n BY`); only the sums travel.
    /// For a bot far from the servers, or servers with cores to spare.
    #[default]
    Server,
    /// `bot`: the window's flows are streamed to the bot, which sums them. Measured faster on
    /// ClickHouse 18.16 with the bot on the server's machine (`benches/README.md`: 1.5-1.9 s
    /// against 5.6-6.7 s for a 3M-flow window on two cores).
    Bot,
}

impl std::str::FromStr for Aggregation {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Aggregation, StoreError> {
        match s.trim() {
            "server" => Ok(Aggregation::Server),
            "bot" => Ok(Aggregation::Bot),
            _ => Err(StoreError::Config {
                setting: "CLICKHOUSE_AGGREGATION",
                why: "expected server or bot",
            }),
        }
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("aggregation", &self.aggregation)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Checks `url` (`http://` or `https://`, `CLICKHOUSE_URL`) and `database`
    /// (`CLICKHOUSE_DATABASE`); empty user and password count as unset. The bot's sums are
    /// computed by the server ([`Aggregation::Server`]); set `aggregation` to change it.
    ///
    /// ```
    /// use netflow_store::{Backend, ClickHouseConfig, StoreConfig};
    /// let c = ClickHouseConfig::new("http://127.0.0.1:8123", "netflow", None, None)?;
    /// let store = StoreConfig::new(Backend::ClickHouse(c));
    /// assert!(matches!(store.backend, Backend::ClickHouse(_)));
    /// # Ok::<(), netflow_store::StoreError>(())
    /// ```
    pub fn new(
        url: &str,
        database: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<ClickHouseConfig, StoreError> {
        let url = url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or(StoreError::Config {
                setting: "CLICKHOUSE_URL",
                why: "expected http://host:port or https://host:port",
            })?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(StoreError::Config {
                setting: "CLICKHOUSE_URL",
                why: "expected http://host:port or https://host:port (no query)",
            });
        }
        let d = database.as_bytes();
        let ok = !d.is_empty()
            && d.len() <= 64
            && (d[0].is_ascii_alphabetic() || d[0] == b'_')
            && d.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(StoreError::Config {
                setting: "CLICKHOUSE_DATABASE",
                why: "must match [A-Za-z_][A-Za-z0-9_]* and be at most 64 characters",
            });
        }
        let some = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(ClickHouseConfig {
            url: url.to_owned(),
            database: database.to_owned(),
            user: some(user),
            password: some(password),
            aggregation: Aggregation::default(),
        })
    }
}

/// Everything [`crate::open`] needs.
///
/// Build one with [`StoreConfig::from_url`], [`StoreConfig::postgres`] or
/// [`StoreConfig::new`], then adjust the public fields.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Backend and its location.
    pub backend: Backend,
    /// Prefix of every table name (default [`DEFAULT_TABLE_PREFIX`]): `[a-z_][a-z0-9_]*`, at
    /// most 30 characters, so that partition names stay within PostgreSQL's 63-byte limit.
    pub table_prefix: String,
    /// Flows older than this many days are forgotten by [`crate::Upkeep::expire`]
    /// (default [`DEFAULT_RETENTION_DAYS`]).
    pub retention_days: u32,
    /// Hourly partitions that [`crate::PgStore::ensure_partitions`] creates after the current hour
    /// (default [`DEFAULT_PARTITIONS_AHEAD`]). PostgreSQL only.
    pub partitions_ahead: u32,
}

impl StoreConfig {
    /// A configuration with default prefix, retention and partitions ahead.
    #[must_use]
    pub fn new(backend: Backend) -> StoreConfig {
        StoreConfig {
            backend,
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            retention_days: DEFAULT_RETENTION_DAYS,
            partitions_ahead: DEFAULT_PARTITIONS_AHEAD,
        }
    }

    /// Parses a store URL:
    ///
    /// * `postgres://user:password@host:port/database?options` (or `postgresql://`, or a
    ///   libpq `key=value` string) selects PostgreSQL;
    /// * `sqlite:PATH`, `sqlite://PATH` or a plain file path selects SQLite.
    ///
    /// ```
    /// use netflow_store::{Backend, StoreConfig};
    /// let c = StoreConfig::from_url("sqlite:/var/lib/netflow/flows.db")?;
    /// assert!(matches!(c.backend, Backend::Sqlite(_)));
    /// let c = StoreConfig::from_url("postgres://bot@db.example:5432/grafolean")?;
    /// assert!(matches!(c.backend, Backend::Postgres(_)));
    /// # Ok::<(), netflow_store::StoreError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<StoreConfig, StoreError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::Config {
                setting: "store URL",
                why: "empty",
            });
        }
        let backend = if url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.contains('=')
        {
            let config: postgres::Config = url.parse().map_err(|_| StoreError::Config {
                setting: "store URL",
                why: "not a valid PostgreSQL connection URL",
            })?;
            Backend::Postgres(Box::new(with_defaults(config)))
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config {
                    setting: "store URL",
                    why: "sqlite: without a path",
                });
            }
            Backend::Sqlite(PathBuf::from(path))
        } else if url.contains("://") {
            return Err(StoreError::Config {
                setting: "store URL",
                why: "unknown scheme (expected postgres://, postgresql:// or sqlite:)",
            });
        } else {
            Backend::Sqlite(PathBuf::from(url))
        };
        Ok(StoreConfig::new(backend))
    }

    /// PostgreSQL on `host` (a host name or address, optionally `host:port` or `[v6]:port`),
    /// `database` as `user`, with an optional `password` (empty = none). Errors name the
    /// parameter (`host`, `database`, `user`); the caller maps them onto its own settings.
    pub fn postgres(
        host: &str,
        database: &str,
        user: &str,
        password: Option<&str>,
    ) -> Result<StoreConfig, StoreError> {
        let (host, port) = split_host_port(host.trim())?;
        if database.is_empty() {
            return Err(StoreError::Config {
                setting: "database",
                why: "empty",
            });
        }
        if user.is_empty() {
            return Err(StoreError::Config {
                setting: "user",
                why: "empty",
            });
        }
        let mut c = postgres::Config::new();
        c.host(host).dbname(database).user(user);
        if let Some(port) = port {
            c.port(port);
        }
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            c.password(p);
        }
        Ok(StoreConfig::new(Backend::Postgres(Box::new(
            with_defaults(c),
        ))))
    }

    /// Checks the prefix; called by [`crate::open`].
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let p = self.table_prefix.as_bytes();
        let ok = !p.is_empty()
            && p.len() <= 30
            && (p[0].is_ascii_lowercase() || p[0] == b'_')
            && p.iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(StoreError::Config {
                setting: "table prefix",
                why: "must match [a-z_][a-z0-9_]* and be at most 30 characters",
            });
        }
        Ok(())
    }
}

/// A connect timeout unless one was given: a server that is down must give a retryable error,
/// not a hang.
///
/// Also turns the server's notices (`CREATE TABLE IF NOT EXISTS` on an existing table says
/// "already exists, skipping" at every start) into debug-level log records: the `postgres`
/// crate's default logs them at info, which reads like news to an operator.
fn with_defaults(mut c: postgres::Config) -> postgres::Config {
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(Duration::from_secs(10));
    }
    c.notice_callback(|notice| {
        log::debug!(target: "netflow_store::postgres", "{}: {}", notice.severity(), notice.message());
    });
    c
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), StoreError> {
    const BAD: StoreError = StoreError::Config {
        setting: "host",
        why: "expected host, host:port or [v6]:port",
    };
    if s.is_empty() {
        return Err(StoreError::Config {
            setting: "host",
            why: "empty",
        });
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or(BAD)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| BAD)?),
            None if after.is_empty() => None,
            None => return Err(BAD),
        };
        return Ok((addr, port));
    }
    match s.split_once(':') {
        // exactly one colon: host:port; more: a bare IPv6 address
        Some((h, p)) if !p.contains(':') => Ok((h, Some(p.parse().map_err(|_| BAD)?))),
        _ => Ok((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_urls() {
        assert!(
            matches!(StoreConfig::from_url("flows.db").map(|c| c.backend), Ok(Backend::Sqlite(p)) if p == std::path::Path::new("flows.db"))
        );
        assert!(
            matches!(StoreConfig::from_url("sqlite://x/y.db").map(|c| c.backend), Ok(Backend::Sqlite(p)) if p == std::path::Path::new("x/y.db"))
        );
        assert!(matches!(
            StoreConfig::from_url("sqlite:").map(|c| c.backend),
            Err(StoreError::Config { .. })
        ));
        assert!(matches!(
            StoreConfig::from_url("mysql://x").map(|c| c.backend),
            Err(StoreError::Config { .. })
        ));
        let Ok(StoreConfig {
            backend: Backend::Postgres(c),
            ..
        }) = StoreConfig::from_url("postgresql://u:secret@h:5433/db")
        else {
            panic!("not postgres")
        };
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_dbname(), Some("db"));
        assert!(c.get_connect_timeout().is_some());
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn test_postgres_parameters() {
        let Ok(StoreConfig {
            backend: Backend::Postgres(c),
            ..
        }) = StoreConfig::postgres("[::1]:6543", "grafolean", "admin", Some(""))
        else {
            panic!("expected postgres")
        };
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("admin"));
        assert!(c.get_password().is_none());
        assert!(matches!(
            StoreConfig::postgres("db", "", "admin", None),
            Err(StoreError::Config {
                setting: "database",
                ..
            })
        ));
        assert!(matches!(split_host_port("db:5432"), Ok(("db", Some(5432)))));
        assert!(matches!(split_host_port("fe80::1"), Ok(("fe80::1", None))));
        assert!(split_host_port("db:x").is_err());
    }

    #[test]
    fn test_clickhouse_settings() {
        let c = ClickHouseConfig::new("http://ch:8123/", "netflow", Some(""), Some("pw")).unwrap();
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (None, Some("pw"))
        );
        assert!(!format!("{c:?}").contains("pw"));
        for bad in ["ch:8123", "tcp://ch:9000", "http://", "http://ch/?x=1"] {
            assert!(
                matches!(
                    ClickHouseConfig::new(bad, "netflow", None, None),
                    Err(StoreError::Config {
                        setting: "CLICKHOUSE_URL",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for bad in ["", "1db", "a-b", "db;drop"] {
            assert!(
                ClickHouseConfig::new("http://ch", bad, None, None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_prefix_validation() {
        let mut c = StoreConfig::new(Backend::Sqlite("x".into()));
        assert!(c.validate().is_ok());
        for bad in ["", "Netflow_", "a-b", "1abc", "a;drop", &"a".repeat(31)] {
            c.table_prefix = bad.to_owned();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
