//! Where flows are stored: `DB_FILE` (SQLite), `DB_HOST`... (PostgreSQL) or `CLICKHOUSE_URL`...,
//! mapped onto a typed [`StoreConfig`].

use std::path::PathBuf;

use clap::Args;
use netflow_store::StoreConfig;

use crate::Error;

/// Where flows are stored.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// PostgreSQL host, optionally host:port. When unset, the embedded SQLite store (DB_FILE) is used.
    #[arg(long, env = "DB_HOST")]
    pub db_host: Option<String>,
    /// PostgreSQL database name (required with DB_HOST).
    #[arg(long, env = "DB_DATABASE")]
    pub db_database: Option<String>,
    /// PostgreSQL user name (required with DB_HOST).
    #[arg(long, env = "DB_USERNAME")]
    pub db_username: Option<String>,
    /// PostgreSQL password (may be empty).
    #[arg(long, env = "DB_PASSWORD", hide_env_values = true)]
    pub db_password: Option<String>,
    /// ClickHouse HTTP interface, e.g. http://127.0.0.1:8123: the flows go to ClickHouse (not with DB_HOST).
    #[arg(long, env = "CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database (created if missing).
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = netflow_store::DEFAULT_CLICKHOUSE_DATABASE)]
    pub clickhouse_database: String,
    /// ClickHouse user (the server's `default` user when unset).
    #[arg(long, env = "CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password (may be empty).
    #[arg(long, env = "CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,
    /// Where the bot sums a window on ClickHouse: server (GROUP BY in ClickHouse, only the sums travel) or bot (the flows are streamed to the bot). Same values either way.
    #[arg(long, env = "CLICKHOUSE_AGGREGATION", default_value = "server")]
    pub clickhouse_aggregation: String,
    /// SQLite database file used when neither DB_HOST nor CLICKHOUSE_URL is set.
    #[arg(long, env = "DB_FILE", default_value = "netflow.db")]
    pub db_file: PathBuf,
    /// Days of raw flows kept (older hours are dropped by the bot's retention job).
    #[arg(long, env = "RETENTION_DAYS", default_value_t = netflow_store::DEFAULT_RETENTION_DAYS)]
    pub retention_days: u32,
}

impl StoreArgs {
    /// `CLICKHOUSE_URL` when set and not empty.
    fn clickhouse(&self) -> Option<&str> {
        self.clickhouse_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// The store configuration: PostgreSQL when `DB_HOST` is set, ClickHouse when
    /// `CLICKHOUSE_URL` is, else SQLite; both set is an error.
    pub fn store_config(&self) -> Result<StoreConfig, Error> {
        let pg = self
            .db_host
            .as_deref()
            .is_some_and(|h| !h.trim().is_empty());
        if let Some(url) = self.clickhouse() {
            if pg {
                return Err(Error::Setting(
                    "CLICKHOUSE_URL",
                    "set together with DB_HOST: choose one store (unset one of them)".into(),
                ));
            }
            let setting = |e| match e {
                netflow_store::StoreError::Config { setting, why } => {
                    Error::Setting(setting, why.into())
                }
                e => Error::Setting("CLICKHOUSE_URL", e.to_string()),
            };
            let mut c = netflow_store::ClickHouseConfig::new(
                url,
                &self.clickhouse_database,
                self.clickhouse_user.as_deref(),
                self.clickhouse_password.as_deref(),
            )
            .map_err(setting)?;
            c.aggregation = self.clickhouse_aggregation.parse().map_err(setting)?;
            let mut cfg = StoreConfig::new(netflow_store::Backend::ClickHouse(c));
            cfg.retention_days = self.retention_days;
            return Ok(cfg);
        }
        let mut cfg = match self.db_host.as_deref().map(str::trim) {
            Some(host) if !host.is_empty() => {
                let db = self
                    .db_database
                    .as_deref()
                    .ok_or(Error::Setting("DB_DATABASE", "not set (DB_HOST is)".into()))?;
                let user = self
                    .db_username
                    .as_deref()
                    .ok_or(Error::Setting("DB_USERNAME", "not set (DB_HOST is)".into()))?;
                StoreConfig::postgres(host, db, user, self.db_password.as_deref()).map_err(|e| {
                    let setting = match &e {
                        netflow_store::StoreError::Config {
                            setting: "database",
                            ..
                        } => "DB_DATABASE",
                        netflow_store::StoreError::Config {
                            setting: "user", ..
                        } => "DB_USERNAME",
                        _ => "DB_HOST",
                    };
                    Error::Setting(setting, e.to_string())
                })?
            }
            _ => StoreConfig::new(netflow_store::Backend::Sqlite(self.db_file.clone())),
        };
        cfg.retention_days = self.retention_days;
        Ok(cfg)
    }

    /// A short description for logs, without the password.
    pub fn describe(&self) -> String {
        if let Some(url) = self.clickhouse() {
            return format!("ClickHouse {url}/{}", self.clickhouse_database);
        }
        match self.db_host.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => format!(
                "PostgreSQL {}/{}",
                h,
                self.db_database.as_deref().unwrap_or("?")
            ),
            _ => format!("SQLite {}", self.db_file.display()),
        }
    }
}
