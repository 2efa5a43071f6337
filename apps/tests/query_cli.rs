//! The `netflow-query` command line: output keys, exit statuses, one-line errors, and SQL
//! injection through every value position of the filter (each a filter error, the store
//! untouched), on each backend: SQLite, PostgreSQL and ClickHouse.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{PgDb, TempDir, bin};
use netflow_store::test_support::clickhouse::{ClickHouseServer, TestDatabase};
use netflow_store::{Backend, ClickHouseConfig, Flow, StoreConfig};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The store settings every run starts without.
const STORE_VARS: [&str; 9] = [
    "DB_HOST",
    "DB_DATABASE",
    "DB_USERNAME",
    "DB_PASSWORD",
    "DB_FILE",
    "CLICKHOUSE_URL",
    "CLICKHOUSE_DATABASE",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
    ClickHouse,
}

/// A store of one backend, removed on drop, and the environment that names it.
struct Db {
    _dir: TempDir,
    _pg: Option<PgDb>,
    _ch: Option<TestDatabase>,
    env: Vec<(&'static str, String)>,
}

/// Three flows ten minutes ago in a fresh store.
fn db(kind: Kind) -> Db {
    let dir = TempDir::new("query-cli");
    let (mut pg, mut ch) = (None, None);
    let (config, env) = match kind {
        Kind::Sqlite => {
            let file = dir.path().join("flows.db").display().to_string();
            (
                StoreConfig::new(Backend::Sqlite(file.clone().into())),
                vec![("DB_FILE", file)],
            )
        }
        Kind::Postgres => {
            let db = PgDb::new("querycli");
            let c: ::postgres::Config = format!(
                "host=127.0.0.1 port={} user=postgres dbname={}",
                db.port, db.name
            )
            .parse()
            .expect("PostgreSQL config");
            let env = db.env();
            pg = Some(db);
            (StoreConfig::new(Backend::Postgres(Box::new(c))), env)
        }
        Kind::ClickHouse => {
            let server = ClickHouseServer::shared();
            let db = TestDatabase::new(&server, "querycli");
            let c = ClickHouseConfig::new(&server.url(), &db.name, None, None)
                .expect("ClickHouse config");
            let env = vec![
                ("CLICKHOUSE_URL", server.url()),
                ("CLICKHOUSE_DATABASE", db.name.clone()),
            ];
            ch = Some(db);
            (StoreConfig::new(Backend::ClickHouse(c)), env)
        }
    };
    let mut s = netflow_store::open(&config).expect("open");
    let t = now_us() - 600_000_000;
    let f = |i: i64, src: &str, port: u16, bytes: u64| Flow {
        ts_micros: t + i,
        exporter: "192.0.2.1".parse().unwrap(),
        src_addr: src.parse().unwrap(),
        dst_addr: "198.51.100.7".parse().unwrap(),
        protocol: 6,
        src_port: 40000,
        dst_port: port,
        bytes,
        packets: 3,
        input_if: 2,
        output_if: 5,
        tcp_flags: 0x12,
        ..Flow::default()
    };
    s.write_flows(&[
        f(0, "10.0.0.1", 443, 100),
        f(1, "10.0.0.2", 443, 300),
        f(2, "10.0.0.2", 22, 50),
    ])
    .expect("write");
    Db {
        _dir: dir,
        _pg: pg,
        _ch: ch,
        env,
    }
}

fn run_with(env: &[(&str, String)], args: &[&str]) -> Output {
    let mut c = Command::new(bin("netflow-query"));
    for k in STORE_VARS {
        c.env_remove(k);
    }
    c.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run netflow-query")
}

fn query(db: &Db, args: &[&str]) -> Output {
    run_with(&db.env, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::Kind::Sqlite);
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::Kind::Postgres);
            })*
        }
        mod clickhouse {
            $(#[test]
            fn $name() {
                super::$name(super::Kind::ClickHouse);
            })*
        }
    };
}

every_backend!(
    ndjson_keys_and_summary,
    sql_injection_through_every_value_position_is_a_filter_error
);

fn ndjson_keys_and_summary(kind: Kind) {
    let db = db(kind);
    let o = query(&db, &["-o", "ndjson", "-s", "srcip/bytes"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "{\"srcip\":\"10.0.0.2\",\"flows\":2,\"packets\":6,\"bytes\":350}\n\
         {\"srcip\":\"10.0.0.1\",\"flows\":1,\"packets\":3,\"bytes\":100}\n"
    );
    let err = text(&o.stderr);
    assert!(
        err.starts_with("netflow-query: 3 flows, 9 packets, 450 bytes"),
        "{err}"
    );
    let o = query(&db, &["-o", "ndjson", "-s", "record", "dst port 443"]);
    let first = text(&o.stdout).lines().next().unwrap_or("").to_owned();
    assert_eq!(
        first,
        "{\"srcip\":\"10.0.0.1\",\"dstip\":\"198.51.100.7\",\"srcport\":\"40000\",\"dstport\":\"443\",\"proto\":\"TCP\",\"flows\":1,\"packets\":3,\"bytes\":100}"
    );
    let o = query(&db, &["-o", "ndjson", "-c", "1"]);
    let line = text(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "ts",
        "exporter",
        "src_addr",
        "dst_addr",
        "src_port",
        "dst_port",
        "protocol",
        "bytes",
        "packets",
        "input_if",
        "output_if",
        "direction",
        "tcp_flags",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(v["src_addr"], "10.0.0.2");
    assert_eq!(v["dst_port"], 22, "newest first");
    assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn exit_statuses_and_one_line_errors() {
    let db = db(Kind::Sqlite);
    // an empty result is a success
    let o = query(&db, &["-s", "dstip", "port 9"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    for (args, needle) in [
        (
            &["dst port https"][..],
            "filter:1:10: expected a port number after 'dst port', found 'https'",
        ),
        (&["-s", "talkers"][..], "unknown statistic 'talkers'"),
        (&["-t", "yesterday"][..], "-t yesterday"),
        (&["--last", "5w"][..], "--last"),
        (&["-A", "srcip4/33"][..], "-A: unknown key"),
        (&["--frobnicate"][..], "--frobnicate"),
    ] {
        let o = query(&db, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let o = run_with(&[("DB_FILE", "/nonexistent/flows.db".into())], &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("setting DB_FILE"), "{err}");
    for (env, setting) in [
        (
            vec![
                ("DB_HOST", "127.0.0.1:1".to_owned()),
                ("DB_DATABASE", "x".to_owned()),
                ("DB_USERNAME", "x".to_owned()),
            ],
            "setting DB_HOST",
        ),
        (
            vec![("CLICKHOUSE_URL", "http://127.0.0.1:1".to_owned())],
            "setting CLICKHOUSE_URL",
        ),
    ] {
        let o = run_with(&env, &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(setting), "{err}");
    }
    let o = query(&db, &["--help"]);
    let help = text(&o.stdout);
    for needle in [
        "FILTER",
        "src ip ADDR",
        "port in [80 443]",
        "-s srcip/bytes",
        "EXAMPLES",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

fn sql_injection_through_every_value_position_is_a_filter_error(kind: Kind) {
    let db = db(kind);
    let attacks = [
        "src ip 10.0.0.1'; DROP TABLE netflow_flows; --",
        "dst ip 10.0.0.1' OR '1'='1",
        "ip in [10.0.0.1, 10.0.0.2'); DELETE FROM netflow_flows; --]",
        "src net 10.0.0.0/8' OR 1=1 --",
        "net 10.0.0.0/8); DROP TABLE netflow_flows; --",
        "src port 443 OR 1=1",
        "dst port 443'; DROP TABLE netflow_flows; --",
        "port in [443) OR (1=1]",
        "port > 1023; DELETE FROM netflow_flows",
        "proto tcp' OR '1'='1",
        "in if 2 OR 1=1",
        "out if 5; DROP TABLE netflow_flows",
        "if 2'--",
        "exporter 192.0.2.1' OR ''='",
        "router ip 192.0.2.1; DROP TABLE netflow_flows",
        "flags SA' OR 1=1 --",
        "bytes > 1k); DROP TABLE netflow_flows; --",
        "packets < 10 UNION SELECT * FROM netflow_flows",
        "ipv4; DROP TABLE netflow_flows",
    ];
    for a in attacks {
        for args in [vec![a], vec!["-s", "srcip", a]] {
            let o = query(&db, &args);
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{a}: {err}");
            assert!(err.contains("filter:1:"), "{a}: {err}");
            assert!(o.stdout.is_empty(), "{a}: printed rows");
        }
    }
    // and the store still holds its three flows
    let o = query(&db, &["-s", "proto"]);
    assert!(text(&o.stderr).contains("3 flows"), "{}", text(&o.stderr));
    // every value position reaches the store's SQL and selects what it says
    let all = "src ip 10.0.0.2 and dst ip 198.51.100.7 and ip in [10.0.0.2 2001:db8::1] and \
               src net 10.0.0.0/8 and not net 2001:db8::/32 and src port 40000 and \
               dst port 443 and port in [443 8443] and port > 1023 and proto tcp and \
               in if 2 and out if 5 and if < 6 and exporter 192.0.2.0/24 and \
               router ip 192.0.2.1 and flags SA and bytes > 200 and packets < 10 and ipv4";
    let o = query(&db, &["-o", "ndjson", "-s", "srcip/bytes", all]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "{\"srcip\":\"10.0.0.2\",\"flows\":1,\"packets\":3,\"bytes\":300}\n"
    );
}
