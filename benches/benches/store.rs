//! Store ingest throughput: flows/s into both backends for batch sizes 1k, 10k and 100k, and
//! what the flow-table index costs (PostgreSQL). Prints the markdown table of
//! `benches/README.md` ("## Store ingest").
//!
//! ```text
//! cargo bench -p netflow-benches --bench store
//! NETFLOW_BENCH_PG=postgres://postgres@127.0.0.1:5432/postgres   server (admin URL; default shown)
//! NETFLOW_BENCH_FLOWS=1000000                                     flows per measurement
//! NETFLOW_BENCH_CH=http://127.0.0.1:18123                         ClickHouse HTTP (default: the
//!                                                                 tests' own server, started
//!                                                                 if down)
//! ```
//!
//! Each measurement writes into fresh tables (own prefix) in a scratch database that is dropped
//! at the end. Partitions are created ahead (as the writer does), so DDL is not timed.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::time::Instant;

use netflow_store::{Backend, Flow, FlowWrite, PgStore, SqliteStore, Store, StoreConfig};

/// 2023-11-14 22:00:00 UTC: the flows fill one hour partition.
const T0: i64 = 1_699_999_200_000_000;
const MINUTE: i64 = 60_000_000;

/// `n` varied flows from 50 exporters over one hour, in ts order as the collector stamps them.
fn flows(n: usize) -> Vec<Flow> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n64 = i64::try_from(n).unwrap_or(i64::MAX).max(1);
    (0..n)
        .map(|i| {
            let r = next();
            let i = i64::try_from(i).unwrap_or(0);
            Flow {
                ts_micros: T0 + i * 60 * MINUTE / n64,
                exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (r % 50) as u8 + 1)),
                input_if: (r >> 8) as u32 % 48 + 1,
                output_if: (r >> 16) as u32 % 48 + 1,
                direction: (r >> 20) as u8 & 1,
                protocol: [6, 17, 1, 6, 6, 17][(r >> 24) as usize % 6],
                src_addr: IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)),
                dst_addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0xffff))),
                src_port: (r >> 40) as u16,
                dst_port: [443, 80, 53, 22, 8080][(r >> 56) as usize % 5],
                bytes: r >> 44,
                packets: (r >> 54) + 1,
                tcp_flags: (r >> 3) as u8,
                ..Flow::default()
            }
        })
        .collect()
}

fn exporters() -> Vec<IpAddr> {
    (1..=50)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
        .collect()
}

/// CPU seconds (user + system) used so far by the processes whose `comm` is `name`, or by
/// this process for `None` (Linux `/proc`; 0 elsewhere).
fn cpu_seconds(name: Option<&str>) -> f64 {
    fn stat_cpu(stat: &str) -> Option<(String, f64)> {
        let (head, rest) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (")?.1.to_owned();
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((comm, ticks / 100.0))
    }
    let Some(name) = name else {
        return std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| stat_cpu(&s))
            .map_or(0.0, |c| c.1);
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter_map(|s| stat_cpu(&s))
        .filter(|(comm, _)| comm == name)
        .map(|(_, cpu)| cpu)
        .sum()
}

/// Writes `data` in batches of `batch`; flows per second. Prints client and server CPU per flow.
fn ingest(store: &mut dyn Store, data: &[Flow], batch: usize) -> f64 {
    let (client0, server0) = (cpu_seconds(None), cpu_seconds(Some("postgres")));
    let ch0 = cpu_seconds(Some("clickhouse-serv"));
    let start = Instant::now();
    for chunk in data.chunks(batch) {
        store.write_flows(chunk).expect("write_flows");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = data.len() as f64;
    eprintln!(
        "    wall {:.2} us/flow, client CPU {:.2} us/flow, postgres processes CPU {:.2} us/flow, \
         clickhouse-server CPU {:.2} us/flow",
        secs * 1e6 / n,
        (cpu_seconds(None) - client0) * 1e6 / n,
        (cpu_seconds(Some("postgres")) - server0) * 1e6 / n,
        (cpu_seconds(Some("clickhouse-serv")) - ch0) * 1e6 / n
    );
    n / secs
}

/// A ClickHouse server: `NETFLOW_BENCH_CH`, or the tests' own (started if it is down).
fn clickhouse_url() -> (
    String,
    Option<netflow_store::test_support::clickhouse::ClickHouseServer>,
) {
    match std::env::var("NETFLOW_BENCH_CH") {
        Ok(url) => (url, None),
        Err(_) => {
            let s = netflow_store::test_support::clickhouse::ClickHouseServer::shared();
            (s.url(), Some(s))
        }
    }
}

/// Runs one statement on the ClickHouse server at `url`; the reply's text.
fn ch_query(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--data-binary", sql, url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Streams the flows of (after, upto] through `for_each_flow`; (flows, seconds).
fn stream(store: &mut dyn Store, after: i64, upto: i64) -> (u64, f64) {
    let (client0, server0) = (cpu_seconds(None), cpu_seconds(Some("postgres")));
    let start = Instant::now();
    let mut bytes = 0u64;
    let n = store
        .for_each_flow(&exporters(), after, upto, &mut |f| {
            bytes = bytes.wrapping_add(f.bytes);
            ControlFlow::Continue(())
        })
        .expect("for_each_flow");
    std::hint::black_box(bytes);
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "    read {n}: wall {:.2} us/flow, client CPU {:.2} us/flow, postgres processes CPU {:.2} us/flow",
        secs * 1e6 / n as f64,
        (cpu_seconds(None) - client0) * 1e6 / n as f64,
        (cpu_seconds(Some("postgres")) - server0) * 1e6 / n as f64
    );
    (n, secs)
}

/// After an ingest of `total` flows over the hour: (ms for the minute 30..31 window, flows/s
/// streaming the whole hour).
fn queries(store: &mut dyn Store, total: usize) -> (String, String) {
    // No explicit BRIN summarizing here: the write path does it by itself (about once a
    // minute), so this measures what a running writer leaves behind.
    let (n, secs) = stream(store, T0 + 30 * MINUTE, T0 + 31 * MINUTE);
    let expect = total as u64 / 60;
    assert!(
        n.abs_diff(expect) <= 1,
        "{n} flows in the window, expected {expect}"
    );
    let minute = format!("{:.1} ms", secs * 1e3);
    let (n, secs) = stream(store, T0 - 1, T0 + 60 * MINUTE);
    assert_eq!(n as usize, total);
    (minute, fmt_rate(n as f64 / secs))
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else {
        format!("{:.0}k", r / 1e3)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Index {
    None,
    Brin,
    Btree,
}

impl Index {
    fn label(self) -> &'static str {
        match self {
            Index::None => "partitioned, no index",
            Index::Brin => "partitioned + BRIN(ts) (the schema)",
            Index::Btree => "partitioned + btree(exporter, ts)",
        }
    }
}

struct Pg {
    admin: postgres::Config,
    db: String,
    seq: u32,
}

impl Pg {
    fn new() -> Pg {
        let url = std::env::var("NETFLOW_BENCH_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let admin: postgres::Config = url.parse().expect("NETFLOW_BENCH_PG");
        let db = format!("nfstore_bench_{}", std::process::id());
        let mut c = admin
            .connect(postgres::NoTls)
            .expect("PostgreSQL server unreachable");
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("create bench database");
        Pg { admin, db, seq: 0 }
    }

    fn config(&self, prefix: &str) -> StoreConfig {
        let mut pg = self.admin.clone();
        pg.dbname(&self.db);
        let mut c = StoreConfig::new(Backend::Postgres(Box::new(pg)));
        c.table_prefix = prefix.to_owned();
        c
    }

    fn client(&self) -> postgres::Client {
        let mut pg = self.admin.clone();
        pg.dbname(&self.db);
        pg.connect(postgres::NoTls).expect("connect")
    }

    /// A fresh store with its own tables and the given flow-table index.
    fn store(&mut self, index: Index) -> (PgStore, String) {
        self.seq += 1;
        let prefix = format!("b{}_", self.seq);
        let mut s = PgStore::open(&self.config(&prefix)).expect("open");
        s.ensure_partitions(T0).expect("partitions");
        let mut c = self.client();
        if index != Index::Brin {
            c.batch_execute(&format!("DROP INDEX {prefix}flows_ts_brin"))
                .expect("drop brin");
        }
        if index == Index::Btree {
            c.batch_execute(&format!("CREATE INDEX ON {prefix}flows (exporter, ts)"))
                .expect("btree");
        }
        (s, prefix)
    }

    fn drop_tables(&self, prefix: &str) {
        self.client()
            .batch_execute(&format!("DROP TABLE {prefix}flows"))
            .expect("drop");
    }

    fn settings(&self) -> Vec<(String, String)> {
        let mut c = self.client();
        [
            "server_version",
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "max_wal_size",
            "checkpoint_timeout",
            "work_mem",
            "maintenance_work_mem",
            "wal_buffers",
        ]
        .iter()
        .map(|s| {
            let v: String = c.query_one(&format!("SHOW {s}"), &[]).expect("SHOW").get(0);
            ((*s).to_owned(), v)
        })
        .collect()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        }
    }
}

fn main() {
    // `cargo test --benches` runs this binary with --bench absent: keep that instant
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run with `cargo bench -p netflow-benches --bench store`");
        return;
    }
    let total: usize = std::env::var("NETFLOW_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let data = flows(total);
    let batches = [1_000, 10_000, 100_000];
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();

    let mut pg = Pg::new();
    for index in [Index::Brin, Index::None, Index::Btree] {
        let mut cells = Vec::new();
        let mut query_cells = Vec::new();
        for &b in &batches {
            let (mut s, prefix) = pg.store(index);
            cells.push(fmt_rate(ingest(&mut s, &data, b)));
            eprintln!(
                "postgres {} batch {b}: {}",
                index.label(),
                cells.last().map_or("", String::as_str)
            );
            if b == 100_000 {
                let (minute, hour) = queries(&mut s, total);
                query_cells = vec![minute, hour];
            }
            pg.drop_tables(&prefix);
        }
        cells.extend(query_cells);
        rows.push((format!("PostgreSQL {}", index.label()), cells));
    }

    // two writers, each with its own connection, into the same partitioned table
    let mut cells = Vec::new();
    for &b in &batches {
        let (s, prefix) = pg.store(Index::Brin);
        drop(s);
        let config = pg.config(&prefix);
        let start = Instant::now();
        std::thread::scope(|scope| {
            for half in data.chunks(total.div_ceil(2)) {
                let config = config.clone();
                scope.spawn(move || {
                    let mut s = PgStore::open(&config).expect("open");
                    for chunk in half.chunks(b) {
                        s.write_flows(chunk).expect("write");
                    }
                });
            }
        });
        cells.push(fmt_rate(total as f64 / start.elapsed().as_secs_f64()));
        eprintln!(
            "postgres 2 writers batch {b}: {}",
            cells.last().map_or("", String::as_str)
        );
        pg.drop_tables(&prefix);
    }
    cells.extend(["(as above)".to_owned(), "(as above)".to_owned()]);
    rows.push(("PostgreSQL BRIN(ts), 2 writers".to_owned(), cells));
    // disk bytes per stored flow: the flows in 100k batches, after merges (ClickHouse:
    // OPTIMIZE FINAL) and VACUUM (PostgreSQL), table and indexes
    let mut disk = Vec::new();
    {
        let (mut s, prefix) = pg.store(Index::Brin);
        ingest(&mut s, &data, 100_000);
        let mut c = pg.client();
        c.batch_execute(&format!("VACUUM ANALYZE {prefix}flows"))
            .expect("vacuum");
        let bytes: i64 = c
            .query_one(
                &format!(
                    "SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits \
                     WHERE inhparent = '{prefix}flows'::regclass"
                ),
                &[],
            )
            .expect("size")
            .get(0);
        disk.push((
            "PostgreSQL partitioned + BRIN(ts)",
            bytes as f64 / total as f64,
        ));
        pg.drop_tables(&prefix);
    }
    let settings = pg.settings();
    drop(pg);

    let (ch_url, _ch_server) = clickhouse_url();
    let ch_db = format!("nfstore_bench_{}", std::process::id());
    let ch_config = |b: usize| {
        let c = netflow_store::ClickHouseConfig::new(&ch_url, &format!("{ch_db}_{b}"), None, None)
            .expect("ClickHouse config");
        StoreConfig::new(Backend::ClickHouse(c))
    };
    let mut cells = Vec::new();
    let mut query_cells = Vec::new();
    for &b in &batches {
        let mut s = netflow_store::open(&ch_config(b)).expect("open ClickHouse");
        cells.push(fmt_rate(ingest(&mut *s, &data, b)));
        eprintln!(
            "clickhouse batch {b}: {}",
            cells.last().map_or("", String::as_str)
        );
        if b == 100_000 {
            let (minute, hour) = queries(&mut *s, total);
            query_cells = vec![minute, hour];
            let db = format!("{ch_db}_{b}");
            ch_query(&ch_url, &format!("OPTIMIZE TABLE {db}.netflow_flows FINAL"));
            let bytes: f64 = ch_query(
                &ch_url,
                &format!(
                    "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND \
                     database = '{db}' AND table = 'netflow_flows'"
                ),
            )
            .parse()
            .unwrap_or(f64::NAN);
            disk.push((
                "ClickHouse MergeTree (exporter, ts), LZ4",
                bytes / total as f64,
            ));
        }
    }
    for &b in &batches {
        ch_query(&ch_url, &format!("DROP DATABASE IF EXISTS {ch_db}_{b}"));
    }
    let version = ch_query(&ch_url, "SELECT version()");
    cells.extend(query_cells);
    rows.push((
        format!("ClickHouse {version} (MergeTree, RowBinary over HTTP)"),
        cells,
    ));

    let dir = std::env::temp_dir().join(format!("nfstore-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cells = Vec::new();
    let mut query_cells = Vec::new();
    for &b in &batches {
        let path = dir.join(format!("b{b}.db"));
        let mut s =
            SqliteStore::open(&StoreConfig::new(Backend::Sqlite(path))).expect("open sqlite");
        cells.push(fmt_rate(ingest(&mut s, &data, b)));
        eprintln!(
            "sqlite batch {b}: {}",
            cells.last().map_or("", String::as_str)
        );
        if b == 100_000 {
            let (minute, hour) = queries(&mut s, total);
            query_cells = vec![minute, hour];
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    cells.extend(query_cells);
    rows.push((
        "SQLite (WAL, synchronous=NORMAL, index on ts)".to_owned(),
        cells,
    ));

    println!("\n{total} flows over one hour per measurement; ingest in flows/s\n");
    println!(
        "| backend / flow-table index | 1k batches | 10k batches | 100k batches | 1-minute window of the hour | stream the whole hour |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, cells) in rows {
        println!("| {label} | {} |", cells.join(" | "));
    }
    println!(
        "\n| store | disk bytes per flow ({total} flows in 100k batches, after merges / VACUUM) |"
    );
    println!("|---|---:|");
    for (label, b) in disk {
        println!("| {label} | {b:.1} |");
    }
    println!("\nPostgreSQL settings:\n");
    for (k, v) in settings {
        println!("* `{k}` = {v}");
    }
}
