//! Forensic queries: `netflow-query` on SQLite, PostgreSQL and ClickHouse against `nfdump` on
//! nfcapd files, the same flows in all four. Prints the markdown table of `benches/README.md`
//! ("## Forensic queries").
//!
//! ```text
//! cargo build --release -p netflow-apps --bin netflow-query
//! cargo bench -p netflow-benches --bench query
//! NETFLOW_BENCH_PG=postgres://postgres@127.0.0.1:5432/postgres   server (admin URL; default shown)
//! NETFLOW_BENCH_FLOWS=10000000                                    flows generated
//! NETFLOW_BENCH_DIR=target/query-bench                            nfcapd files, SQLite file (kept)
//! NETFLOW_BENCH_REUSE=1                                           time the stores built before
//! ```
//!
//! 1. The generator sends the flows (NetFlow v9, 4 exporters, sources from 10.0.0.0/16, 10 %
//!    IPv6, flows up to 20 s long) to `nfcapd` over loopback UDP.
//! 2. `nfdump -R DIR` exports every flow it stored; each becomes one stored flow (`ts` = the
//!    flow's end) in a fresh SQLite file, a fresh PostgreSQL database and a fresh ClickHouse
//!    database (the benchmarks' server of netflow-store's test support, HTTP port 18126),
//!    loaded in parallel in batches of 50k with `Store::write_flows`. So the four hold exactly
//!    the same flows.
//! 3. Each query runs as a process, best of three wall-clock runs, output (`-o csv`) to
//!    /dev/null: `nfdump -R DIR -s STAT -n 10 -o csv FILTER` and `netflow-query -t WINDOW
//!    -s STAT -n 10 -o csv FILTER` with `DB_FILE`, `DB_HOST` or `CLICKHOUSE_URL`. The first
//!    rows are compared so that no contender wins by answering something else.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use netflow_apps::generator::{self, Options, Prefix};
use netflow_store::test_support::clickhouse::ClickHouseServer;
use netflow_store::{Flow, StoreConfig};

const BATCH: usize = 50_000;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn flag_bits(s: &str) -> u8 {
    // nfdump prints eight positions CEUAPRSF, '.' for a clear flag
    s.trim()
        .chars()
        .zip([0x80u8, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01])
        .filter(|(c, _)| *c != '.')
        .fold(0, |m, (_, b)| m | b)
}

fn parse_line(l: &str) -> Option<Flow> {
    let v: Vec<&str> = l.split(',').map(str::trim).collect();
    if v.len() != 12 {
        return None;
    }
    Some(Flow {
        ts_micros: netflow_apps::query::time::parse_instant(v[0]).ok()?,
        exporter: v[1].parse().ok()?,
        input_if: v[2].parse().ok()?,
        output_if: v[3].parse().ok()?,
        protocol: v[4].parse().ok()?,
        src_addr: v[5].parse().ok()?,
        dst_addr: v[6].parse().ok()?,
        src_port: v[7].parse().ok()?,
        dst_port: v[8].split('.').next()?.parse().ok()?,
        bytes: v[9].parse().ok()?,
        packets: v[10].parse().ok()?,
        tcp_flags: flag_bits(v[11]),
        ..Flow::default()
    })
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends `n` flows to a fresh nfcapd writing into `dir`; returns what nfcapd stored.
fn capture(dir: &Path, n: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("mkdir");
    let port = free_udp_port();
    let mut nfcapd = Command::new("nfcapd")
        .arg("-w")
        .arg(dir)
        .args([
            "-p",
            &port.to_string(),
            "-b",
            "127.0.0.1",
            "-B",
            "33554432",
            "-t",
            "3600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nfcapd (apt-get install nfdump)");
    std::thread::sleep(Duration::from_secs(1));
    let mut o = Options::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    o.exporters = (1..=4)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    o.interfaces = 8;
    o.src_pool = ["10.0.0.0/16", "2001:db8::/112"]
        .map(|p| p.parse::<Prefix>().expect("prefix"))
        .to_vec();
    o.dst_pool = ["192.0.2.0/24", "198.51.100.0/24", "2001:db8:1::/120"]
        .map(|p| p.parse::<Prefix>().expect("prefix"))
        .to_vec();
    o.ipv6_percent = 10;
    o.rate = 250_000.0;
    o.count = Some(n);
    o.flows_per_packet = 24;
    o.max_flow_duration = Duration::from_secs(20);
    let t = Instant::now();
    let sent = generator::run(&o, None, &AtomicBool::new(false)).expect("generator");
    eprintln!(
        "sent {} flows in {:.1} s ({} send errors)",
        sent.flows,
        t.elapsed().as_secs_f64(),
        sent.send_errors
    );
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &nfcapd.id().to_string()])
        .status();
    let _ = nfcapd.wait();
}

/// Loads nfdump's export of `dir` into both stores; returns the flow count.
fn load(dir: &Path, stores: Vec<(&'static str, StoreConfig)>) -> u64 {
    let mut child = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(dir)
        .args([
            "-q",
            "-N",
            "-6",
            "-o",
            "fmt:%te,%ra,%in,%out,%pr,%sa,%da,%sp,%dp,%byt,%pkt,%flg",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("nfdump");
    let out = child.stdout.take().expect("stdout");
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for (name, cfg) in stores {
        let (tx, rx) = sync_channel::<Arc<Vec<Flow>>>(4);
        senders.push(tx);
        writers.push(std::thread::spawn(move || {
            let mut s = netflow_store::open(&cfg).expect("open store");
            let t = Instant::now();
            let mut n = 0;
            for b in rx {
                if let Err(e) = s.write_flows(&b) {
                    panic!("{name}: {e}");
                }
                n += b.len();
            }
            eprintln!(
                "{name}: {n} flows stored in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }));
    }
    let mut batch = Vec::with_capacity(BATCH);
    let (mut n, mut bad) = (0u64, 0u64);
    for line in BufReader::new(out).lines() {
        let line = line.expect("read nfdump");
        match parse_line(&line) {
            Some(f) => batch.push(f),
            None => bad += 1,
        }
        if batch.len() == BATCH {
            let b = Arc::new(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
            for s in &senders {
                s.send(Arc::clone(&b)).expect("writer gone");
            }
            n += BATCH as u64;
        }
    }
    n += batch.len() as u64;
    let b = Arc::new(batch);
    for s in &senders {
        s.send(Arc::clone(&b)).expect("writer gone");
    }
    drop(senders);
    for w in writers {
        w.join().expect("writer");
    }
    let _ = child.wait();
    assert_eq!(bad, 0, "lines of nfdump's export not understood");
    n
}

/// Best of three wall-clock runs of `cmd` (stdout to a pipe read here); returns the seconds and
/// the first data line.
fn time(mut cmd: impl FnMut() -> Command) -> (f64, String) {
    let mut best = f64::MAX;
    let mut first = String::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = cmd().stderr(Stdio::null()).output().expect("run");
        best = best.min(t.elapsed().as_secs_f64());
        assert!(out.status.success(), "{:?}", out.status);
        first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap_or("")
            .to_owned();
    }
    (best, first)
}

fn main() {
    let admin = env_or(
        "NETFLOW_BENCH_PG",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let n: u64 = env_or("NETFLOW_BENCH_FLOWS", "10000000")
        .parse()
        .expect("NETFLOW_BENCH_FLOWS");
    let dir = PathBuf::from(env_or(
        "NETFLOW_BENCH_DIR",
        &repo().join("target/query-bench").display().to_string(),
    ));
    let reuse = std::env::var_os("NETFLOW_BENCH_REUSE").is_some();
    let query_bin = repo().join("target/release/netflow-query");
    assert!(
        query_bin.is_file(),
        "build it first: cargo build --release -p netflow-apps --bin netflow-query"
    );
    let nf_dir = dir.join("nfcapd");
    let db_file = dir.join("flows.db");
    let db_name = "netflow_query_bench";
    let pg_url = {
        let mut c: postgres::Config = admin.parse().expect("NETFLOW_BENCH_PG");
        c.dbname(db_name);
        c
    };
    let ch = ClickHouseServer::bench();
    let ch_config = || {
        StoreConfig::new(netflow_store::Backend::ClickHouse(
            netflow_store::ClickHouseConfig::new(&ch.url(), db_name, None, None).expect("config"),
        ))
    };
    if !reuse {
        capture(&nf_dir, n);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db_file.display()));
        }
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("PostgreSQL");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {db_name}"))
            .expect("create database");
        ch.query(&format!("DROP DATABASE IF EXISTS {db_name}"))
            .expect("drop the ClickHouse database");
        let sqlite = StoreConfig::new(netflow_store::Backend::Sqlite(db_file.clone()));
        let pg = StoreConfig::new(netflow_store::Backend::Postgres(Box::new(pg_url.clone())));
        let t = Instant::now();
        let stored = load(
            &nf_dir,
            vec![
                ("SQLite", sqlite),
                ("PostgreSQL", pg),
                ("ClickHouse", ch_config()),
            ],
        );
        eprintln!(
            "{stored} flows loaded in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut c = pg_url.connect(postgres::NoTls).expect("bench database");
        c.batch_execute("VACUUM ANALYZE netflow_flows")
            .expect("analyze");
    }
    let mut pg = pg_url.connect(postgres::NoTls).expect("bench database");
    let row = pg
        .query_one(
            "SELECT count(*), min(ts)::text, max(ts)::text FROM netflow_flows",
            &[],
        )
        .expect("count");
    let (stored, lo, hi): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    // the window of every query: all stored flows (whole seconds around them)
    let mut s = netflow_store::open(&StoreConfig::new(netflow_store::Backend::Postgres(
        Box::new(pg_url.clone()),
    )))
    .expect("open");
    let max = s.max_ts().expect("max ts").unwrap_or(0) / 1_000_000 + 1;
    let min = netflow_apps::query::time::parse_instant(&lo[..19]).unwrap_or(0) / 1_000_000 - 1;
    let window = format!(
        "{}-{}",
        netflow_apps::query::time::iso(min * 1_000_000),
        netflow_apps::query::time::iso(max * 1_000_000)
    );
    // a source with a few hundred flows, for the selective query
    let x: IpAddr = pg
        .query_one(
            "SELECT src_addr FROM netflow_flows WHERE family(src_addr) = 4 GROUP BY src_addr \
             HAVING count(*) BETWEEN 100 AND 400 ORDER BY src_addr LIMIT 1",
            &[],
        )
        .expect("pick a source")
        .get(0);
    let selective = format!("src ip {x} and dst port 443");
    let hits: i64 = pg
        .query_one(
            "SELECT count(*) FROM netflow_flows WHERE src_addr = $1 AND dst_port = 443",
            &[&x],
        )
        .expect("count")
        .get(0);
    eprintln!("{stored} flows from {lo} to {hi}; selective filter '{selective}' matches {hits}");

    let queries: [(&str, &[&str]); 3] = [
        ("-s srcip/bytes", &["-s", "srcip/bytes", "-n", "10"]),
        ("-s record/bytes", &["-s", "record/bytes", "-n", "10"]),
        (
            "selective filter",
            &["-s", "record/bytes", "-n", "10", selective.as_str()],
        ),
    ];
    println!(
        "| query | nfdump {} | netflow-query SQLite | netflow-query PostgreSQL | netflow-query ClickHouse | PostgreSQL / nfdump | ClickHouse / nfdump |",
        nfdump_version()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, args) in queries {
        let (nf, nf_first) = time(|| {
            let mut c = Command::new("nfdump");
            c.env("TZ", "UTC")
                .arg("-R")
                .arg(&nf_dir)
                .args(args)
                .args(["-o", "csv"]);
            c
        });
        let ours = |env: Vec<(&str, String)>| {
            time(|| {
                let mut c = Command::new(&query_bin);
                for k in [
                    "DB_HOST",
                    "DB_DATABASE",
                    "DB_USERNAME",
                    "DB_PASSWORD",
                    "DB_FILE",
                    "CLICKHOUSE_URL",
                    "CLICKHOUSE_DATABASE",
                    "CLICKHOUSE_USER",
                    "CLICKHOUSE_PASSWORD",
                ] {
                    c.env_remove(k);
                }
                c.envs(env.clone())
                    .args(["-t", &window])
                    .args(args)
                    .args(["-o", "csv"]);
                c
            })
        };
        let (lite, lite_first) = ours(vec![("DB_FILE", db_file.display().to_string())]);
        let (pgt, pg_first) = ours(vec![
            ("DB_HOST", pg_host(&pg_url)),
            ("DB_DATABASE", db_name.to_owned()),
            (
                "DB_USERNAME",
                pg_url.get_user().unwrap_or("postgres").to_owned(),
            ),
        ]);
        let (cht, ch_first) = ours(vec![
            ("CLICKHOUSE_URL", ch.url()),
            ("CLICKHOUSE_DATABASE", db_name.to_owned()),
        ]);
        assert_eq!(
            lite_first, pg_first,
            "{name}: SQLite and PostgreSQL disagree"
        );
        assert_eq!(
            ch_first, pg_first,
            "{name}: ClickHouse and PostgreSQL disagree"
        );
        let nf_bytes = nf_first.split(',').nth(9).unwrap_or("?").trim().to_owned();
        let our_bytes = pg_first.rsplit(',').next().unwrap_or("?").to_owned();
        eprintln!("{name}: first row nfdump [{nf_first}] ours [{pg_first}]");
        if name != "-s record/bytes" && name != "selective filter" {
            assert_eq!(nf_bytes, our_bytes, "{name}: top row bytes differ");
        }
        println!(
            "| `{name}` | {} | {} | {} | {} | {:.2}x | {:.2}x |",
            fmt_s(nf),
            fmt_s(lite),
            fmt_s(pgt),
            fmt_s(cht),
            pgt / nf,
            cht / nf
        );
    }
    println!("\n{stored} flows ({n} sent); selective filter `{selective}` matches {hits} flows.");
}

/// `host:port` of the bench server, as DB_HOST takes it.
fn pg_host(c: &postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}

fn fmt_s(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn nfdump_version() -> String {
    Command::new("nfdump")
        .arg("-V")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .last()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}
