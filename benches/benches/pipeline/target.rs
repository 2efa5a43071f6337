//! The store a bench run writes: a scratch PostgreSQL database on 127.0.0.1:5432, or a
//! scratch database on the benchmarks' own ClickHouse server (netflow-store's test-support,
//! HTTP port 18126, apart from the tests' servers so that its CPU is this run's). Both are
//! dropped at the end.

use netflow_store::test_support::clickhouse::{ClickHouseServer, TestDatabase};
use netflow_store::{Backend, ClickHouseConfig, StoreConfig};

use super::{Usage, usage};

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    ClickHouse,
}

impl Kind {
    /// `postgres,clickhouse` (the value of `NETFLOW_BENCH_STORES`).
    pub fn list(s: &str) -> Vec<Kind> {
        s.split(',')
            .filter_map(|k| match k.trim().to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" | "pg" => Some(Kind::Postgres),
                "clickhouse" | "ch" => Some(Kind::ClickHouse),
                _ => None,
            })
            .collect()
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Postgres => "PostgreSQL",
            Kind::ClickHouse => "ClickHouse",
        }
    }
}

/// A scratch PostgreSQL database, dropped on drop.
pub struct Db {
    pub name: String,
}

impl Db {
    pub fn new(tag: &str) -> Db {
        let name = format!("netflow_bench_{tag}_{}", std::process::id());
        let mut c = postgres::Client::connect(ADMIN, postgres::NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        Db { name }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port=5432 user=postgres dbname={}",
                self.name
            ),
            postgres::NoTls,
        )
        .expect("connect")
    }

    fn count(&self) -> i64 {
        self.client()
            .query_one("SELECT count(*) FROM netflow_flows", &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// Server processes serving this database (the writer's or the bot's connections).
    pub fn backends(&self) -> Vec<u32> {
        let mut c = self.client();
        c.query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&self.name],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| r.get::<_, i32>(0).unsigned_abs())
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(ADMIN, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// One run's store.
pub enum Target {
    Postgres(Db),
    ClickHouse(ClickHouseServer, TestDatabase),
}

impl Target {
    pub fn new(kind: Kind, tag: &str) -> Target {
        match kind {
            Kind::Postgres => Target::Postgres(Db::new(tag)),
            Kind::ClickHouse => {
                let server = ClickHouseServer::bench();
                let db = TestDatabase::new(&server, &format!("bench_{tag}"));
                Target::ClickHouse(server, db)
            }
        }
    }

    /// The writer's store settings.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Postgres(db) => vec![
                ("DB_HOST", "127.0.0.1".into()),
                ("DB_DATABASE", db.name.clone()),
                ("DB_USERNAME", "postgres".into()),
            ],
            Target::ClickHouse(server, db) => vec![
                ("CLICKHOUSE_URL", server.url()),
                ("CLICKHOUSE_DATABASE", db.name.clone()),
            ],
        }
    }

    pub fn config(&self) -> StoreConfig {
        match self {
            Target::Postgres(db) => {
                StoreConfig::postgres("127.0.0.1", &db.name, "postgres", None).expect("config")
            }
            Target::ClickHouse(server, db) => StoreConfig::new(Backend::ClickHouse(
                ClickHouseConfig::new(&server.url(), &db.name, None, None).expect("config"),
            )),
        }
    }

    /// Flows stored and visible (on ClickHouse: of committed batches, from their commit
    /// records, so that polling does not scan the flows).
    pub fn stored(&self) -> i64 {
        match self {
            Target::Postgres(db) => db.count(),
            Target::ClickHouse(server, db) => server
                .query(&format!(
                    "SELECT sum(flows) FROM {}.netflow_batches",
                    db.name
                ))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        }
    }

    /// CPU so far of the server side: PostgreSQL, this database's backend connections (not
    /// the checkpointer or WAL writer); ClickHouse, the whole server process (its merges
    /// included), so a run takes the difference. Peak RSS: the backends' largest; the
    /// ClickHouse server's since it started.
    pub fn server_usage(&self) -> Usage {
        match self {
            Target::Postgres(db) => {
                db.backends()
                    .iter()
                    .map(|&p| usage(p))
                    .fold(Usage::default(), |a, u| Usage {
                        cpu: a.cpu + u.cpu,
                        rss_mib: a.rss_mib.max(u.rss_mib),
                    })
            }
            Target::ClickHouse(server, _) => server.pid().map(usage).unwrap_or_default(),
        }
    }

    /// Prepares the flows table for reading (PostgreSQL: `VACUUM ANALYZE`, as autovacuum
    /// would; ClickHouse: nothing, its parts are merged in the background as in production).
    pub fn settle(&self) {
        if let Target::Postgres(db) = self {
            let _ = db.client().batch_execute("VACUUM ANALYZE netflow_flows");
        }
    }
}
