//! The bot's side of the pipeline bench: one 1-minute window of generated flows written to a
//! store, then read and aggregated (`bot::aggregate_window`: streamed from PostgreSQL, summed
//! in the server on ClickHouse) and sent by the real `Bot::run_job` to the stand-in Grafolean;
//! the aggregation alone from memory; and the window read after an hour written in the
//! writer's batches (PostgreSQL).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{Client, Token};
use netflow_apps::bot::{self, Bot, BotConfig, Interval};
use netflow_apps::stats::Counters;
use netflow_store::{Flow, StoreConfig};

use super::target::{Db, Kind, Target};
use super::usage;

/// `n` flows from 10 exporters spread over one minute ending at `end`.
pub fn window_flows(n: usize, end: i64, chunk: std::ops::Range<usize>) -> Vec<Flow> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ chunk.start as u64;
    let n64 = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    chunk
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x;
            let i = i64::try_from(i).unwrap_or(0);
            let skew = |m: u64, s: u32| {
                let v = (r >> s) % m;
                v * v / m
            };
            Flow {
                ts_micros: end - 60_000_000 + 1 + i * 60_000_000 / n64,
                exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (r % 10) as u8 + 1)),
                input_if: (r >> 8) as u32 % 8 + 1,
                output_if: (r >> 12) as u32 % 8 + 1,
                direction: u8::from((r >> 16) % 10 < 3),
                protocol: [6, 6, 6, 17, 17, 1, 58, 47][(r >> 20) as usize % 8],
                src_addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | skew(65_536, 24) as u32)),
                dst_addr: IpAddr::V4(Ipv4Addr::from(0xc633_6400 | skew(256, 40) as u32)),
                src_port: (r >> 32) as u16,
                dst_port: [443, 80, 53, 22, 8080, 123, 25, 3389][skew(8, 48) as usize],
                bytes: (r >> 50) + 40,
                packets: (r >> 60) + 1,
                tcp_flags: (r >> 3) as u8,
                ..Flow::default()
            }
        })
        .collect()
}

/// The bot's aggregation alone (no database, one thread): the window's flows from memory into
/// a `Window`, then its values for 10 entities; best of 3.
pub fn aggregate_only(n: usize) {
    let end: i64 = 1_700_000_000_000_000;
    let flows = window_flows(n, end, 0..n);
    let entities: Vec<(i64, IpAddr)> = (1..=10u8)
        .map(|i| (i64::from(i), IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))))
        .collect();
    println!("| flows | Window::add s | values s | values |");
    println!("|---:|---:|---:|---:|");
    for _ in 0..3 {
        let t = Instant::now();
        let mut w = bot::Window::new();
        for f in &flows {
            w.add(f);
        }
        let added = t.elapsed();
        let t = Instant::now();
        let values = w.values("1min", &entities).expect("values").len();
        println!(
            "| {n} | {:.2} | {:.3} | {values} |",
            added.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
}

/// `n` flows in one minute for 10 entities in a fresh store of `kind`: the window read and
/// aggregated twice under job ids of its own, then the real jobs of `intervals` (`all`, or a
/// comma-separated list of labels), each from no previous window end, so each covers the same
/// flows.
pub fn bot_window(kind: Kind, n: usize, intervals: &str) {
    let db = Target::new(kind, "bot");
    let cfg = db.config();
    let mut store = netflow_store::open(&cfg).expect("store");
    let end: i64 = 1_700_000_000_000_000;
    let t = Instant::now();
    let step = 100_000;
    for s in (0..n).step_by(step) {
        let flows = window_flows(n, end, s..(s + step).min(n));
        store.write_flows(&flows).expect("write flows");
    }
    let ingest = t.elapsed();
    db.settle();

    let server = TestServer::start().expect("stand-in Grafolean");
    let account = server.add_account("bench");
    let (_b, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    let mut exporters = Vec::new();
    for i in 1..=10u8 {
        let ip = format!("192.0.2.{i}");
        server.add_netflow_entity(account, &format!("r{i}"), &ip, cred, sensor, None);
        exporters.push(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)));
    }
    let client = Client::new(&server.url(), Token::new(&token).expect("token")).expect("client");
    let jobs = client.job_config().expect("jobs");
    let acc = jobs.accounts.first().expect("account").clone();

    // Reading and aggregating alone (a job id of its own, so the real job still starts fresh).
    // CPU seconds of this process and of the database's server side, so that a reading can be
    // judged apart from what else the shared machine runs.
    let cpu = || (usage(std::process::id()).cpu, db.server_usage().cpu);
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned()
    };
    let mut reads = Vec::new();
    let mut flows = 0;
    let n_reads: usize = super::env_or("NETFLOW_BENCH_BOT_READS", 2);
    for job in ["bench-read", "bench-read-2", "bench-read-3"]
        .into_iter()
        .take(n_reads)
    {
        let l = load();
        let (c0, p0) = cpu();
        let t = Instant::now();
        let (w, _) = bot::aggregate_window(store.as_mut(), job, Interval::M1, &exporters)
            .expect("aggregate")
            .expect("data");
        flows = w.flows();
        drop(w);
        let wall = t.elapsed();
        let (c1, p1) = cpu();
        reads.push((l, wall, c1 - c0, p1 - p0));
    }

    // On ClickHouse also the rows streamed to the bot (no pushdown), for comparison.
    let mut streamed = None;
    if kind == Kind::ClickHouse {
        let l = load();
        let (c0, p0) = cpu();
        let t = Instant::now();
        let w = bot::aggregate_flows(|f| {
            let r = netflow_store::jobs::read_window(
                store.as_mut(),
                "bench-stream",
                &exporters,
                60_000_000,
                netflow_store::Fields::Aggregation,
                f,
            )?;
            Ok::<_, netflow_store::StoreError>(r.map_or(0, |r| r.flows))
        })
        .expect("stream");
        let n = w.flows();
        drop(w);
        let wall = t.elapsed();
        let (c1, p1) = cpu();
        streamed = Some((l, n, wall, c1 - c0, p1 - p0));
    }

    let store2 = netflow_store::open(&cfg).expect("store");
    let mut bot = Bot::new(
        client,
        store2,
        BotConfig::default(),
        Arc::new(Counters::default()),
    );
    let how = match kind {
        Kind::Postgres => "streamed to the bot",
        Kind::ClickHouse => "summed in the server (pushdown)",
    };
    println!();
    println!(
        "Bot: one window of {n} flows (10 entities, 8 interfaces each) in {} (written in {:.1} s, {:.0} flows/s), {how}; stand-in Grafolean on loopback.",
        kind.label(),
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64()
    );
    println!();
    println!(
        "| store | job | load | flows in window | values sent | read + aggregate s | job total s (aggregate, values, POST, window end) | CPU s bot / server |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for (l, wall, own, srv) in reads {
        println!(
            "| {} | read + aggregate only | {l} | {flows} | | {:.2} | | {own:.2} / {srv:.2} |",
            kind.label(),
            wall.as_secs_f64()
        );
    }
    if let Some((l, n, wall, own, srv)) = streamed {
        println!(
            "| {} | read + aggregate, rows streamed to the bot | {l} | {n} | | {:.2} | | {own:.2} / {srv:.2} |",
            kind.label(),
            wall.as_secs_f64()
        );
    }
    for i in Interval::ALL {
        let chosen = intervals.is_empty()
            || intervals == "all"
            || intervals.split(',').any(|l| l.trim() == i.label());
        if !chosen {
            continue;
        }
        let l = load();
        let (c0, p0) = cpu();
        let t = Instant::now();
        let out = bot.run_job(&acc, i).expect("job");
        let total = t.elapsed();
        let (c1, p1) = cpu();
        let (f, v) = match out {
            bot::JobOutcome::Sent { flows, values, .. } => (flows, values),
            _ => (0, 0),
        };
        println!(
            "| {} | {} | {l} | {f} | {v} | | {:.2} | {:.2} / {:.2} |",
            kind.label(),
            i.label(),
            total.as_secs_f64(),
            c1 - c0,
            p1 - p0
        );
    }
}

/// The bot's 1-minute window read as a running writer leaves the table: `minutes` minutes of
/// one hour written in time order through the store's write path, in the writer's batches of
/// 20,000 (`BATCH_FLOWS`), with `per_minute` flows a minute; then `ANALYZE` (what autovacuum
/// does soon after) but no `VACUUM` (the product does not run one, and it would summarize the
/// BRIN index on the side); then the last minute's window read and aggregated three times.
/// Before issue 13 nothing in the write path summarized BRIN ranges, so the read scanned the
/// whole unsummarized hour.
pub fn window_read(minutes: i64, per_minute: usize) {
    let db = Db::new("wread");
    let cfg = StoreConfig::postgres("127.0.0.1", &db.name, "postgres", None).expect("config");
    let mut store = netflow_store::open(&cfg).expect("store");
    let hour: i64 = 1_699_999_200_000_000; // 2023-11-14 22:00 UTC
    let t = Instant::now();
    for m in 0..minutes.clamp(1, 59) {
        let end = hour + (m + 1) * 60_000_000;
        for s in (0..per_minute).step_by(20_000) {
            let flows = window_flows(per_minute, end, s..(s + 20_000).min(per_minute));
            store.write_flows(&flows).expect("write flows");
        }
    }
    let ingest = t.elapsed();
    let _ = db.client().batch_execute("ANALYZE netflow_flows");
    let exporters: Vec<IpAddr> = (1..=10u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
        .collect();
    let cpu = || {
        let own = usage(std::process::id()).cpu;
        let pg: f64 = db.backends().into_iter().map(|p| usage(p).cpu).sum();
        (own, pg)
    };
    println!();
    println!(
        "Window read: {minutes} minutes x {per_minute} flows written in {:.1} s; the last minute read and aggregated:",
        ingest.as_secs_f64()
    );
    println!();
    println!("| read | flows | wall s | CPU s bot / PG |");
    println!("|---|---:|---:|---|");
    for run in 1..=3 {
        let (c0, p0) = cpu();
        let t = Instant::now();
        let (w, _) = bot::aggregate_window(
            store.as_mut(),
            &format!("read-{run}"),
            Interval::M1,
            &exporters,
        )
        .expect("aggregate")
        .expect("data");
        let flows = w.flows();
        drop(w);
        let wall = t.elapsed().as_secs_f64();
        let (c1, p1) = cpu();
        println!(
            "| {run} | {flows} | {wall:.2} | {:.2} / {:.2} |",
            c1 - c0,
            p1 - p0
        );
    }
}
