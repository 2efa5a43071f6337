//! Test fixtures: a fresh PostgreSQL database or SQLite file per test, removed afterwards.
#![allow(dead_code)] // each test binary uses a part

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use netflow_store::{Backend, Flow, Store, StoreConfig};

/// Environment variable naming the PostgreSQL server tests use (an admin connection that may
/// create databases).
pub const PG_URL_VAR: &str = "NETFLOW_STORE_TEST_PG";
/// Its default: the CI server.
pub const PG_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique_name(kind: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "nfstore_{kind}_{}_{}_{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn pg_admin_config() -> postgres::Config {
    let url = std::env::var(PG_URL_VAR).unwrap_or_else(|_| PG_URL_DEFAULT.to_owned());
    url.parse()
        .unwrap_or_else(|e| panic!("{PG_URL_VAR}={url:?} is not a PostgreSQL URL: {e}"))
}

pub fn pg_admin() -> postgres::Client {
    pg_admin_config().connect(postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL test server unreachable ({e}); start it (see .ci/run) or set {PG_URL_VAR}"
        )
    })
}

/// A database of its own for one test; dropped (with its connections) when this is dropped.
pub struct PgDb {
    pub name: String,
    pub config: StoreConfig,
    admin: postgres::Config,
}

impl PgDb {
    /// On the shared test server ([`PG_URL_VAR`]).
    pub fn new() -> PgDb {
        PgDb::create(pg_admin(), pg_admin_config())
    }

    /// On the server `admin` connects to (a `netflow_store::test_support::PrivateServer`).
    pub fn on(admin: postgres::Config) -> PgDb {
        let client = admin
            .connect(postgres::NoTls)
            .expect("connect to the test server");
        PgDb::create(client, admin)
    }

    fn create(mut client: postgres::Client, admin: postgres::Config) -> PgDb {
        let name = unique_name("test");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        let mut pg = admin.clone();
        pg.dbname(&name);
        PgDb {
            name,
            config: StoreConfig::new(Backend::Postgres(Box::new(pg))),
            admin,
        }
    }

    /// A plain client on the test database, for checks behind the store's back.
    pub fn client(&self) -> postgres::Client {
        let mut pg = self.admin.clone();
        pg.dbname(&self.name);
        pg.connect(postgres::NoTls)
            .expect("connect to test database")
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// An SQLite file in a directory of its own, removed when this is dropped.
pub struct SqliteDb {
    pub dir: PathBuf,
    pub config: StoreConfig,
}

impl SqliteDb {
    pub fn new() -> SqliteDb {
        let dir = std::env::temp_dir().join(unique_name("sqlite"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let config = StoreConfig::new(Backend::Sqlite(dir.join("flows.db")));
        SqliteDb { dir, config }
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 2023-11-14T22:13:20Z, a round base time for tests.
pub const T0: i64 = 1_700_000_000_000_000;
pub const HOUR: i64 = 3_600_000_000;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub fn flow(ts_micros: i64, exporter: &str) -> Flow {
    Flow {
        ts_micros,
        exporter: ip(exporter),
        src_addr: ip("10.0.0.1"),
        dst_addr: ip("10.0.0.2"),
        protocol: 6,
        src_port: 1234,
        dst_port: 443,
        bytes: 1000,
        packets: 2,
        ..Flow::default()
    }
}

/// What a stored flow reads back as: counters saturated at i64::MAX, unstored fields default.
pub fn as_stored(f: &Flow) -> Flow {
    let sat = |v: u64| v.min(i64::MAX as u64);
    Flow {
        bytes: sat(f.bytes),
        packets: sat(f.packets),
        sampling_interval: 1,
        start_ms: 0,
        end_ms: 0,
        ..*f
    }
}

type Key = (
    (i64, IpAddr, IpAddr, IpAddr, u32, u32),
    (u8, u8, u16, u16, u64, u64, u8),
);

fn key(f: &Flow) -> Key {
    (
        (
            f.ts_micros,
            f.exporter,
            f.src_addr,
            f.dst_addr,
            f.input_if,
            f.output_if,
        ),
        (
            f.direction,
            f.protocol,
            f.src_port,
            f.dst_port,
            f.bytes,
            f.packets,
            f.tcp_flags,
        ),
    )
}

pub fn sorted(mut v: Vec<Flow>) -> Vec<Flow> {
    v.sort_by_key(key);
    v
}

/// Every flow of `exporters` in (after, upto], sorted.
pub fn read(store: &mut dyn Store, exporters: &[IpAddr], after: i64, upto: i64) -> Vec<Flow> {
    let mut out = Vec::new();
    let n = store
        .for_each_flow(exporters, after, upto, &mut |f| {
            out.push(*f);
            std::ops::ControlFlow::Continue(())
        })
        .expect("for_each_flow");
    assert_eq!(n as usize, out.len());
    sorted(out)
}

/// Every flow in the store whose exporter is one of `exporters`.
pub fn read_all(store: &mut dyn Store, exporters: &[IpAddr]) -> Vec<Flow> {
    read(store, exporters, i64::MIN, i64::MAX)
}

/// After an upgrade: a job recorded before schema 5 (its window ending at `job_end`, the store's
/// max ts `max_ts`) gets a late flow written now (ts `job_end - 1`) with its next window.
pub fn assert_upgraded_job_gets_late_flows(
    s: &mut dyn Store,
    job_end: i64,
    max_ts: i64,
    from: u32,
) {
    let late = flow(job_end - 1, "192.0.2.1");
    assert_eq!(s.write_flows(&[late]).unwrap().late, 1, "from {from}");
    let mut got = Vec::new();
    let w = netflow_store::jobs::read_window(
        s,
        "1min",
        &[ip("192.0.2.1")],
        60_000_000,
        netflow_store::Fields::All,
        &mut |f| {
            got.push(*f);
            std::ops::ControlFlow::Continue(())
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (w.after, w.upto, w.late_flows),
        (job_end, max_ts, 1),
        "from {from}"
    );
    assert!(got.contains(&late), "from {from}");
}

/// A ClickHouse database of its own on the shared test server (netflow-store's test-support
/// starts it if it is down), dropped when this is dropped.
pub struct ClickHouseDb {
    pub config: StoreConfig,
    pub db: netflow_store::test_support::clickhouse::TestDatabase,
}

impl ClickHouseDb {
    pub fn new() -> ClickHouseDb {
        let server = netflow_store::test_support::clickhouse::ClickHouseServer::shared();
        ClickHouseDb::on(&server)
    }

    pub fn on(server: &netflow_store::test_support::clickhouse::ClickHouseServer) -> ClickHouseDb {
        let db = netflow_store::test_support::clickhouse::TestDatabase::new(server, "conf");
        let c = netflow_store::ClickHouseConfig::new(&server.url(), &db.name, None, None)
            .expect("ClickHouse test config");
        ClickHouseDb {
            config: StoreConfig::new(Backend::ClickHouse(c)),
            db,
        }
    }
}
