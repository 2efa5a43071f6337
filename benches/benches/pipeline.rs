//! Pipeline benchmark: the real binaries, `netflow-generate` -> `netflow-collector` -> named
//! pipe -> `netflow-writer` -> PostgreSQL or ClickHouse, at rising rates, and the bot's time to
//! aggregate and send one 1-minute window for 10 entities (streamed from PostgreSQL, summed in
//! the server on ClickHouse). Prints the markdown tables of `benches/README.md` ("## Pipeline").
//!
//! ```text
//! cargo bench -p netflow-benches --bench pipeline
//! NETFLOW_BENCH_RATES=50000,100000,200000,300000,500000   flows/s, one run each
//! NETFLOW_BENCH_SECS=30                                    seconds of traffic per rate
//! NETFLOW_BENCH_STORES=postgres                            postgres, clickhouse or both (a,b)
//! NETFLOW_BENCH_BATCH_FLOWS=20000                          the writer's BATCH_FLOWS (its default)
//! NETFLOW_BENCH_PART=all                                   all | pipeline | bot | aggregate | window-read
//! NETFLOW_BENCH_READ_MINUTES=30                            window-read: minutes of one hour written
//! NETFLOW_BENCH_READ_FLOWS_PER_MINUTE=1000000              window-read: flows per minute
//! NETFLOW_BENCH_BOT_FLOWS=6000000                          flows in the bot's 1-minute window
//! NETFLOW_BENCH_BOT_INTERVALS=all                          bot: the jobs run (all, or 1min,15min,...)
//! NETFLOW_BENCH_BOT_READS=2                                bot: reads of the window alone (at most 3)
//! NETFLOW_BENCH_BIN_DIR=target/release                     where the apps binaries are
//! ```
//!
//! The goal's 3-minute hold: `NETFLOW_BENCH_RATES=500000 NETFLOW_BENCH_SECS=180 NETFLOW_BENCH_PART=pipeline`.
//!
//! The apps binaries are built first (`cargo build --release -p netflow-apps --bins`, same
//! target directory) unless `NETFLOW_BENCH_BIN_DIR` is set. PostgreSQL must run on
//! 127.0.0.1:5432 (user postgres, trust auth); ClickHouse is the benchmarks' own server
//! (netflow-store's test-support, started if it is down). Every run uses a scratch database,
//! dropped at the end. Traffic is loopback only. CPU seconds and peak RSS come from
//! `/proc/PID/stat` (utime + stime) and `/proc/PID/status` (`VmHWM`), read just before each
//! process exits; "PostgreSQL" is the writer's backend connection(s) only (not the
//! checkpointer or WAL writer), "ClickHouse" the whole server process during the run (its
//! background merges included).

#[path = "pipeline/bot.rs"]
mod bot;
#[path = "pipeline/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use target::{Kind, Target};

/// Exporters of the generated traffic (loopback addresses, one socket each).
const EXPORTERS: u8 = 10;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let part = std::env::var("NETFLOW_BENCH_PART").unwrap_or_else(|_| "all".into());
    let host = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average before the run {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        host.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stores =
        Kind::list(&std::env::var("NETFLOW_BENCH_STORES").unwrap_or_else(|_| "postgres".into()));
    if part == "all" || part == "pipeline" {
        let bins = binaries();
        let rates: Vec<u64> = std::env::var("NETFLOW_BENCH_RATES")
            .unwrap_or_else(|_| "50000,100000,200000,300000,500000".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        let secs: u64 = env_or("NETFLOW_BENCH_SECS", 30);
        pipeline(&bins, &stores, &rates, secs);
    }
    if part == "all" || part == "bot" {
        let intervals = std::env::var("NETFLOW_BENCH_BOT_INTERVALS").unwrap_or_default();
        for &kind in &stores {
            bot::bot_window(
                kind,
                env_or("NETFLOW_BENCH_BOT_FLOWS", 6_000_000),
                &intervals,
            );
        }
    }
    if part == "aggregate" {
        bot::aggregate_only(env_or("NETFLOW_BENCH_BOT_FLOWS", 6_000_000));
    }
    if part == "window-read" {
        bot::window_read(
            env_or("NETFLOW_BENCH_READ_MINUTES", 30),
            env_or("NETFLOW_BENCH_READ_FLOWS_PER_MINUTE", 1_000_000),
        );
    }
}

/// The directory holding release builds of the apps binaries (built now if needed).
fn binaries() -> PathBuf {
    if let Ok(d) = std::env::var("NETFLOW_BENCH_BIN_DIR") {
        return PathBuf::from(d);
    }
    // This binary is target/release/deps/pipeline-HASH: the apps land in target/release.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the apps binaries (release)...");
    let ok = Command::new(cargo)
        .args(["build", "--release", "-p", "netflow-apps", "--bins"])
        .status()
        .expect("run cargo")
        .success();
    assert!(ok, "cargo build --release -p netflow-apps failed");
    dir
}

/// CPU seconds (user + system) and peak RSS in MiB of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    cpu: f64,
    rss_mib: f64,
}

pub fn usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'; USER_HZ is 100.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Usage {
        cpu: ticks as f64 / 100.0,
        rss_mib: hwm_kib / 1024.0,
    }
}

/// A child process with its stderr lines collected.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn start(bin: &Path, dir: &Path, env: &[(&str, String)], args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for k in [
            "DB_HOST",
            "DB_DATABASE",
            "DB_USERNAME",
            "DB_PASSWORD",
            "CLICKHOUSE_URL",
            "CLICKHOUSE_DATABASE",
            "CLICKHOUSE_USER",
            "CLICKHOUSE_PASSWORD",
            "DEBUG",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lock").push(line);
            }
        });
        Proc { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.has(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} within {within:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Usage just before SIGTERM, then waits for the exit; returns the usage and the log.
    fn stop(mut self) -> (Usage, Vec<String>) {
        let u = usage(self.pid());
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().expect("lock").clone();
        (u, lines)
    }
}

/// The counters of the last stats line `who stats: a=1 b=2 ...` in a log.
fn last_stats(lines: &[String], who: &str) -> BTreeMap<String, u64> {
    let tag = format!("{who} stats: ");
    lines
        .iter()
        .rev()
        .find_map(|l| l.split_once(&tag).map(|(_, r)| r.to_owned()))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Row {
    store: Kind,
    rate: u64,
    secs: f64,
    sent: u64,
    send_errors: u64,
    socket_drops: u64,
    queue_drops: u64,
    decode_errors: u64,
    writer_dropped: u64,
    db_errors: u64,
    stored: i64,
    lag: f64,
    gen_use: Usage,
    coll: Usage,
    writer: Usage,
    server: Usage,
}

fn run_rate(bins: &Path, kind: Kind, rate: u64, secs: u64) -> Row {
    let db = Target::new(kind, "pipeline");
    let server0 = db.server_usage();
    let dir = std::env::temp_dir().join(format!("netflow-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pipe = dir.join("netflow.pipe").display().to_string();
    let port = free_udp_port();
    let writer = Proc::start(
        &bins.join("netflow-writer"),
        &dir,
        &[
            db.env(),
            vec![("NAMED_PIPE_FILENAME", pipe.clone())],
            std::env::var("NETFLOW_BENCH_BATCH_FLOWS")
                .map(|b| vec![("BATCH_FLOWS", b)])
                .unwrap_or_default(),
        ]
        .concat(),
        &["--state-dir", "."],
    );
    writer.wait_for("store open", Duration::from_secs(60));
    let collector = Proc::start(
        &bins.join("netflow-collector"),
        &dir,
        &[
            ("NAMED_PIPE_FILENAME", pipe),
            ("NETFLOW_PORT", port.to_string()),
            ("NETFLOW_LISTEN", "127.0.0.1".into()),
        ],
        &[],
    );
    collector.wait_for("named pipe connected", Duration::from_secs(30));
    let exporters: Vec<String> = (1..=EXPORTERS).map(|i| format!("127.0.0.{i}")).collect();
    let started = Instant::now();
    let mut generator = Proc::start(
        &bins.join("netflow-generate"),
        &dir,
        &[],
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--rate",
            &rate.to_string(),
            "--duration",
            &secs.to_string(),
            "--flows-per-packet",
            "30",
            "--exporters",
            &exporters.join(","),
            "--interfaces",
            "8",
            "--src-pool",
            "10.0.0.0/16,2001:db8::/112",
            "--dst-pool",
            "192.0.2.0/24,2001:db8:1::/120",
        ],
    );
    // Usage of the generator just before it exits: poll while it runs.
    let mut gen_use = Usage::default();
    while generator.child.try_wait().ok().flatten().is_none() {
        let u = usage(generator.pid());
        if u.cpu > 0.0 || u.rss_mib > 0.0 {
            gen_use = u;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let sending = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(200));
    let gen_log = generator.lines.lock().expect("lock").clone();
    let (sent, send_errors) = gen_log
        .iter()
        .find_map(|l| {
            // "netflow-generate: sent N flows (B bytes) in P datagrams, E send errors"
            let r = l.split_once(": sent ")?.1;
            let n: u64 = r.split_whitespace().next()?.parse().ok()?;
            let e: u64 = r
                .split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((n, e))
        })
        .unwrap_or((0, 0));
    // Wait until the store stops growing (the writer catching up).
    let mut last = -1;
    let mut stable_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(secs.max(30) * 4);
    loop {
        let n = db.stored();
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        if n as u64 >= sent || stable_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let lag = (started.elapsed().as_secs_f64() - sending).max(0.0);
    let s1 = db.server_usage();
    let server = Usage {
        cpu: s1.cpu - server0.cpu,
        rss_mib: s1.rss_mib,
    };
    let (coll, coll_log) = collector.stop();
    let (wu, writer_log) = writer.stop();
    let stored = db.stored();
    let c = last_stats(&coll_log, "collector");
    let w = last_stats(&writer_log, "writer");
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let decode_errors: u64 = w
        .iter()
        .filter(|(k, _)| k.starts_with("decode_error.") || *k == "sets_lost")
        .map(|(_, v)| *v)
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        store: kind,
        rate,
        secs: sending,
        sent,
        send_errors,
        socket_drops: get(&c, "socket_drops"),
        queue_drops: get(&c, "queue_drops"),
        decode_errors,
        writer_dropped: get(&w, "flows_dropped"),
        db_errors: get(&w, "db_errors"),
        stored,
        lag,
        gen_use,
        coll,
        writer: wu,
        server,
    }
}

fn pipeline(bins: &Path, stores: &[Kind], rates: &[u64], secs: u64) {
    println!();
    println!(
        "Flows sent in v9 datagrams of 30 flows from {EXPORTERS} exporters; drops in datagrams \
         (30 flows each) except where stated; CPU in seconds for the whole run of {secs} s; \
         peak RSS (VmHWM) in MiB; the load average (1 min) when each run started."
    );
    println!();
    println!(
        "| store | target flows/s | load | sent flows/s | sent | stored | lost | send errors | kernel socket drops | collector queue drops | writer decode errors | writer dropped flows | DB errors | catch-up s | CPU s gen / coll / writer / server | CPU us per flow writer / server / all | peak RSS MiB gen / coll / writer / server |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|");
    for &rate in rates {
        for &kind in stores {
            eprintln!(
                "pipeline into {} at {rate} flows/s for {secs} s...",
                kind.label()
            );
            let load = std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_owned();
            let r = run_rate(bins, kind, rate, secs);
            let lost = r.sent as i64 - r.stored;
            let per = |cpu: f64| cpu * 1e6 / r.stored.max(1) as f64;
            let all = r.gen_use.cpu + r.coll.cpu + r.writer.cpu + r.server.cpu;
            println!(
                "| {} | {} | {load} | {:.0} | {} | {} | {} ({:.2} %) | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} / {:.1} / {:.1} / {:.1} | {:.2} / {:.2} / {:.2} | {:.0} / {:.0} / {:.0} / {:.0} |",
                r.store.label(),
                r.rate,
                r.sent as f64 / r.secs.max(1e-9),
                r.sent,
                r.stored,
                lost,
                100.0 * lost as f64 / (r.sent.max(1)) as f64,
                r.send_errors,
                r.socket_drops,
                r.queue_drops,
                r.decode_errors,
                r.writer_dropped,
                r.db_errors,
                r.lag,
                r.gen_use.cpu,
                r.coll.cpu,
                r.writer.cpu,
                r.server.cpu,
                per(r.writer.cpu),
                per(r.server.cpu),
                per(all),
                r.gen_use.rss_mib,
                r.coll.rss_mib,
                r.writer.rss_mib,
                r.server.rss_mib,
            );
        }
    }
}
