//! Pipeline benchmark: the real binaries, `netflow-generate` -> `netflow-collector` -> named
//! pipe -> `netflow-writer` -> PostgreSQL, at rising rates, and the bot's time to aggregate and
//! send one 1-minute window of 6 million flows for 10 entities. Prints the markdown tables of
//! `benches/README.md` ("## Pipeline").
//!
//! ```text
//! cargo bench -p netflow-benches --bench pipeline
//! NETFLOW_BENCH_RATES=50000,100000,200000,300000,500000   flows/s, one run each
//! NETFLOW_BENCH_SECS=30                                    seconds of traffic per rate
//! NETFLOW_BENCH_PART=all                                   all | pipeline | bot | aggregate | window-read
//! NETFLOW_BENCH_READ_MINUTES=30                            window-read: minutes of one hour written
//! NETFLOW_BENCH_READ_FLOWS_PER_MINUTE=1000000              window-read: flows per minute
//! NETFLOW_BENCH_BOT_FLOWS=6000000                          flows in the bot's 1-minute window
//! NETFLOW_BENCH_BIN_DIR=target/release                     where the apps binaries are
//! ```
//!
//! The goal's 3-minute hold: `NETFLOW_BENCH_RATES=500000 NETFLOW_BENCH_SECS=180 NETFLOW_BENCH_PART=pipeline`.
//!
//! The apps binaries are built first (`cargo build --release -p netflow-apps --bins`, same
//! target directory) unless `NETFLOW_BENCH_BIN_DIR` is set. PostgreSQL must run on
//! 127.0.0.1:5432 (user postgres, trust auth); every run uses a scratch database, dropped at
//! the end. Traffic is loopback only. CPU seconds and peak RSS come from `/proc/PID/stat`
//! (utime + stime) and `/proc/PID/status` (`VmHWM`), read just before each process exits;
//! "PostgreSQL" is the writer's backend connection(s) only (not the checkpointer or WAL writer).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{Client, Token};
use netflow_apps::bot::{self, Bot, BotConfig, Interval};
use netflow_apps::stats::Counters;
use netflow_store::{Flow, StoreConfig};

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
/// Exporters of the generated traffic (loopback addresses, one socket each).
const EXPORTERS: u8 = 10;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
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
    if part == "all" || part == "pipeline" {
        let bins = binaries();
        let rates: Vec<u64> = std::env::var("NETFLOW_BENCH_RATES")
            .unwrap_or_else(|_| "50000,100000,200000,300000,500000".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        let secs: u64 = env_or("NETFLOW_BENCH_SECS", 30);
        pipeline(&bins, &rates, secs);
    }
    if part == "all" || part == "bot" {
        bot_window(env_or("NETFLOW_BENCH_BOT_FLOWS", 6_000_000));
    }
    if part == "aggregate" {
        aggregate_only(env_or("NETFLOW_BENCH_BOT_FLOWS", 6_000_000));
    }
    if part == "window-read" {
        window_read(
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

/// A scratch database, dropped on drop.
struct Db {
    name: String,
}

impl Db {
    fn new(tag: &str) -> Db {
        let name = format!("netflow_bench_{tag}_{}", std::process::id());
        let mut c = postgres::Client::connect(ADMIN, postgres::NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        Db { name }
    }

    fn client(&self) -> postgres::Client {
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

    /// Server processes serving this database (the writer's connections).
    fn backends(&self) -> Vec<u32> {
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

/// CPU seconds (user + system) and peak RSS in MiB of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    cpu: f64,
    rss_mib: f64,
}

fn usage(pid: u32) -> Usage {
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
    pg: Usage,
}

fn run_rate(bins: &Path, rate: u64, secs: u64) -> Row {
    let db = Db::new("pipeline");
    let dir = std::env::temp_dir().join(format!("netflow-bench-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pipe = dir.join("netflow.pipe").display().to_string();
    let port = free_udp_port();
    let writer = Proc::start(
        &bins.join("netflow-writer"),
        &dir,
        &[
            ("DB_HOST", "127.0.0.1".into()),
            ("DB_DATABASE", db.name.clone()),
            ("DB_USERNAME", "postgres".into()),
            ("NAMED_PIPE_FILENAME", pipe.clone()),
        ],
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
        let n = db.count();
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
    let pg: Usage = db
        .backends()
        .iter()
        .map(|&p| usage(p))
        .fold(Usage::default(), |a, u| Usage {
            cpu: a.cpu + u.cpu,
            rss_mib: a.rss_mib.max(u.rss_mib),
        });
    let (coll, coll_log) = collector.stop();
    let (wu, writer_log) = writer.stop();
    let stored = db.count();
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
        pg,
    }
}

fn pipeline(bins: &Path, rates: &[u64], secs: u64) {
    println!();
    println!(
        "Flows sent in v9 datagrams of 30 flows from {EXPORTERS} exporters; drops in datagrams \
         (30 flows each) except where stated; CPU in seconds for the whole run of {secs} s; \
         peak RSS (VmHWM) in MiB."
    );
    println!();
    println!(
        "| target flows/s | sent flows/s | sent | stored | lost | send errors | kernel socket drops | collector queue drops | writer decode errors | writer dropped flows | DB errors | catch-up s | CPU s gen / coll / writer / PG | peak RSS MiB gen / coll / writer / PG |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for &rate in rates {
        eprintln!("pipeline at {rate} flows/s for {secs} s...");
        let r = run_rate(bins, rate, secs);
        let lost = r.sent as i64 - r.stored;
        println!(
            "| {} | {:.0} | {} | {} | {} ({:.2} %) | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} / {:.1} / {:.1} / {:.1} | {:.0} / {:.0} / {:.0} / {:.0} |",
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
            r.pg.cpu,
            r.gen_use.rss_mib,
            r.coll.rss_mib,
            r.writer.rss_mib,
            r.pg.rss_mib,
        );
    }
}

/// `n` flows from 10 exporters spread over one minute ending at `end`.
fn window_flows(n: usize, end: i64, chunk: std::ops::Range<usize>) -> Vec<Flow> {
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
fn aggregate_only(n: usize) {
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

fn bot_window(n: usize) {
    let db = Db::new("bot");
    let cfg = StoreConfig::postgres("127.0.0.1", &db.name, "postgres", None).expect("config");
    let mut store = netflow_store::open(&cfg).expect("store");
    let end: i64 = 1_700_000_000_000_000;
    let t = Instant::now();
    let step = 100_000;
    for s in (0..n).step_by(step) {
        let flows = window_flows(n, end, s..(s + step).min(n));
        store.write_flows(&flows).expect("write flows");
    }
    let ingest = t.elapsed();
    let mut c = db.client();
    let _ = c.batch_execute("VACUUM ANALYZE netflow_flows");

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
    // CPU seconds of this process and of the database's server processes, so that a reading
    // can be judged apart from what else the shared machine runs.
    let cpu = || {
        let own = usage(std::process::id()).cpu;
        let pg: f64 = db.backends().into_iter().map(|p| usage(p).cpu).sum();
        (own, pg)
    };
    let mut reads = Vec::new();
    let mut flows = 0;
    for job in ["bench-read", "bench-read-2"] {
        let (c0, p0) = cpu();
        let t = Instant::now();
        let (w, _) = bot::aggregate_window(store.as_mut(), job, Interval::M1, &exporters)
            .expect("aggregate")
            .expect("data");
        flows = w.flows();
        drop(w);
        let wall = t.elapsed();
        let (c1, p1) = cpu();
        reads.push((wall, c1 - c0, p1 - p0));
    }

    let store2 = netflow_store::open(&cfg).expect("store");
    let mut bot = Bot::new(
        client,
        store2,
        BotConfig::default(),
        Arc::new(Counters::default()),
    );
    println!();
    println!(
        "Bot: one window of {n} flows (10 entities, 8 interfaces each) in PostgreSQL (written in {:.1} s, {:.0} flows/s); stand-in Grafolean on loopback.",
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64()
    );
    println!();
    println!(
        "| job | flows in window | values sent | read + aggregate s | job total s (aggregate, values, POST, window end) | CPU s bot / PG |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for (wall, own, pg) in reads {
        println!(
            "| read + aggregate only | {flows} | | {:.2} | | {own:.2} / {pg:.2} |",
            wall.as_secs_f64()
        );
    }
    for i in Interval::ALL {
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
            "| {} | {f} | {v} | | {:.2} | {:.2} / {:.2} |",
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
fn window_read(minutes: i64, per_minute: usize) {
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
