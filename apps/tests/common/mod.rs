//! Helpers of the end-to-end tests: child processes with captured logs, a scratch PostgreSQL
//! database, free ports, and the expected values computed independently from the generator's
//! JSON lines.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "netflow-apps-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch database on the local PostgreSQL server, dropped at the end.
pub struct PgDb {
    pub name: String,
    /// The server's port: 5432, or a `netflow_store::test_support::PrivateServer`'s.
    pub port: u16,
}

impl PgDb {
    pub fn new(tag: &str) -> PgDb {
        PgDb::on_port(tag, 5432)
    }

    /// On the server at 127.0.0.1:`port` (user postgres, trust auth).
    pub fn on_port(tag: &str, port: u16) -> PgDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "netflow_apps_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = PgDb { name, port };
        let mut c = db.connect("postgres").unwrap_or_else(|e| {
            panic!("PostgreSQL must run on 127.0.0.1:{port} (user postgres, trust auth): {e}")
        });
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name))
            .expect("drop database");
        c.batch_execute(&format!("CREATE DATABASE {}", db.name))
            .expect("create database");
        db
    }

    fn connect(&self, dbname: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={dbname}",
                self.port
            ),
            postgres::NoTls,
        )
    }

    pub fn client(&self) -> postgres::Client {
        self.connect(&self.name)
            .expect("connect to the test database")
    }

    /// Rows in the flows table (0 before the writer created it).
    pub fn count_flows(&self) -> i64 {
        let mut c = self.client();
        c.query_one("SELECT count(*) FROM netflow_flows", &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DB_HOST", format!("127.0.0.1:{}", self.port)),
            ("DB_DATABASE", self.name.clone()),
            ("DB_USERNAME", "postgres".to_owned()),
        ]
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.connect("postgres") {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A child process whose stderr lines are collected; killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

pub fn bin(name: &str) -> PathBuf {
    match name {
        "netflow" => PathBuf::from(env!("CARGO_BIN_EXE_netflow")),
        "netflow-collector" => PathBuf::from(env!("CARGO_BIN_EXE_netflow-collector")),
        "netflow-writer" => PathBuf::from(env!("CARGO_BIN_EXE_netflow-writer")),
        "netflow-bot" => PathBuf::from(env!("CARGO_BIN_EXE_netflow-bot")),
        "netflow-generate" => PathBuf::from(env!("CARGO_BIN_EXE_netflow-generate")),
        "netflow-query" => PathBuf::from(env!("CARGO_BIN_EXE_netflow-query")),
        other => panic!("unknown binary {other}"),
    }
}

fn collect(
    r: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    echo: Option<String>,
) {
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = &echo {
                eprintln!("[{n}] {line}");
            }
            into.lock().expect("lock").push(line);
        }
    });
}

impl Proc {
    pub fn start(name: &str, dir: &Path, env: &[(&str, String)], args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.current_dir(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in [
            "BACKEND_URL",
            "BOT_TOKEN",
            "BOT_TOKEN_FROM_FILE",
            "DB_HOST",
            "DB_DATABASE",
            "DB_USERNAME",
            "DB_PASSWORD",
            "CLICKHOUSE_URL",
            "CLICKHOUSE_DATABASE",
            "CLICKHOUSE_USER",
            "CLICKHOUSE_PASSWORD",
            "JOBS_REFRESH_INTERVAL",
            "NETFLOW_PORT",
            "NAMED_PIPE_FILENAME",
            "DEBUG",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        collect(
            child.stderr.take().expect("stderr"),
            Arc::clone(&lines),
            Some(name.to_owned()),
        );
        collect(
            child.stdout.take().expect("stdout"),
            Arc::clone(&stdout),
            None,
        );
        Proc {
            name: name.to_owned(),
            child,
            lines,
            stdout,
        }
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .lines
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no log line with {needle:?} within {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// A counter's value in the last stats line logged (0 when absent: lines show non-zero
    /// counters only).
    pub fn last_stat(&self, name: &str) -> u64 {
        let lines = self.lines.lock().expect("lock");
        let Some(line) = lines.iter().rev().find(|l| l.contains(" stats: ")) else {
            return 0;
        };
        let prefix = format!("{name}=");
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().expect("counter value"))
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                thread::sleep(Duration::from_millis(100)); // let the log threads finish
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after SIGTERM",
                self.name
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self, within: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                thread::sleep(Duration::from_millis(200));
                let out = self.stdout.lock().expect("lock").clone();
                return (s, out);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` until it returns true.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// One flow as the generator printed it.
#[derive(Debug, Clone)]
pub struct JFlow {
    pub exporter: IpAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
    pub bytes: u64,
    pub input_if: u32,
    pub output_if: u32,
    pub direction: u8,
}

pub fn parse_flows(lines: &[String]) -> Vec<JFlow> {
    lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let s = |k: &str| {
                v[k].as_str()
                    .expect("string")
                    .parse::<IpAddr>()
                    .expect("ip")
            };
            let n = |k: &str| v[k].as_u64().expect("number");
            JFlow {
                exporter: s("exporter"),
                src: s("src_addr"),
                dst: s("dst_addr"),
                dst_port: n("dst_port") as u16,
                protocol: n("protocol") as u8,
                bytes: n("bytes"),
                input_if: n("input_if") as u32,
                output_if: n("output_if") as u32,
                direction: n("direction") as u8,
            }
        })
        .collect()
}

fn enc(s: &str) -> String {
    s.replace('.', "%2e").replace(':', "%3a")
}

fn proto(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => format!("proto{n}"),
    }
}

/// Top 10 by value descending, key ascending; the key's path text.
fn top<K: Ord + Clone>(m: &BTreeMap<K, u64>, name: impl Fn(&K) -> String) -> Vec<(String, u64)> {
    let mut v: Vec<(K, u64)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(10).map(|(k, b)| (name(&k), b)).collect()
}

/// The values the bot must send for `label`, computed the slow and obvious way.
pub fn expected(flows: &[JFlow], label: &str, entities: &[(i64, IpAddr)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (di, d) in ["ingress", "egress"].iter().enumerate() {
        let base = format!("netflow.{label}.{d}");
        let mine = |a: IpAddr| {
            flows
                .iter()
                .filter(move |f| f.exporter == a && usize::from(f.direction == 1) == di)
        };
        let mut distinct: Vec<IpAddr> = entities.iter().map(|e| e.1).collect();
        distinct.sort();
        distinct.dedup();
        let total: u64 = distinct
            .iter()
            .flat_map(|a| mine(*a))
            .map(|f| f.bytes)
            .sum();
        out.insert(base.clone(), total as f64);
        for (eid, a) in entities {
            let e = format!("{base}.entity.{eid}");
            out.insert(e.clone(), mine(*a).map(|f| f.bytes).sum::<u64>() as f64);
            let key_ip = |f: &JFlow| if di == 0 { f.src } else { f.dst };
            let key_if = |f: &JFlow| if di == 0 { f.input_if } else { f.output_if };
            let mut ifs: BTreeMap<u32, Vec<&JFlow>> = BTreeMap::new();
            for f in mine(*a) {
                ifs.entry(key_if(f)).or_default().push(f);
            }
            for (i, fs) in &ifs {
                out.insert(
                    format!("{e}.if.{i}"),
                    fs.iter().map(|f| f.bytes).sum::<u64>() as f64,
                );
                let mut ips = BTreeMap::new();
                let mut ps = BTreeMap::new();
                for f in fs {
                    *ips.entry(key_ip(f)).or_insert(0) += f.bytes;
                    *ps.entry(f.protocol).or_insert(0) += f.bytes;
                }
                for (k, v) in top(&ips, |ip| enc(&ip.to_string())) {
                    out.insert(format!("{e}.if.{i}.topip.{k}"), v as f64);
                }
                for (k, v) in top(&ps, |p| proto(*p)) {
                    out.insert(format!("{e}.if.{i}.topprotocol.{k}"), v as f64);
                }
            }
            let mut ips = BTreeMap::new();
            let mut ps = BTreeMap::new();
            let mut cs = BTreeMap::new();
            let mut ports = BTreeMap::new();
            for f in mine(*a) {
                *ips.entry(key_ip(f)).or_insert(0) += f.bytes;
                *ps.entry(f.protocol).or_insert(0) += f.bytes;
                *cs.entry((f.src, f.dst)).or_insert(0) += f.bytes;
                *ports.entry(f.dst_port).or_insert(0) += f.bytes;
            }
            for (k, v) in top(&ips, |ip| enc(&ip.to_string())) {
                out.insert(format!("{e}.topip.{k}"), v as f64);
            }
            for (k, v) in top(&ps, |p| proto(*p)) {
                out.insert(format!("{e}.topprotocol.{k}"), v as f64);
            }
            for (k, v) in top(&cs, |(s, d)| {
                format!("{}.{}", enc(&s.to_string()), enc(&d.to_string()))
            }) {
                out.insert(format!("{e}.topconn.{k}"), v as f64);
            }
            for (k, v) in top(&ports, |p| p.to_string()) {
                out.insert(format!("{e}.topdstports.{k}"), v as f64);
            }
        }
    }
    out
}

/// Values the stand-in server received under `netflow.{label}.`, as a map (last value wins).
pub fn received(
    server: &grafolean_client::test_server::TestServer,
    label: &str,
) -> BTreeMap<String, f64> {
    let prefix = format!("netflow.{label}.");
    server
        .values()
        .into_iter()
        .filter(|v| v.path.starts_with(&prefix))
        .map(|v| (v.path, v.value))
        .collect()
}

/// Sums per path over every POST (windows are disjoint, so sums of totals are exact).
pub fn received_sums(server: &grafolean_client::test_server::TestServer, path: &str) -> f64 {
    server
        .values()
        .iter()
        .filter(|v| v.path == path)
        .map(|v| v.value)
        .sum()
}

pub fn hash_env(pairs: &[(&'static str, String)]) -> HashMap<&'static str, String> {
    pairs.iter().cloned().collect()
}

/// `shared/captures` beside the repository (override with `NETFLOW_CAPTURES`). Missing
/// captures fail the test: they are part of what CI checks.
pub fn captures() -> PathBuf {
    if let Some(d) = std::env::var_os("NETFLOW_CAPTURES") {
        return d.into();
    }
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    assert!(
        d.is_dir(),
        "captures not found at {} (set NETFLOW_CAPTURES)",
        d.display()
    );
    d
}

/// Starts `netflow-writer` (on `db`) and `netflow-collector` (on `port`) joined by a named pipe in
/// `dir`, with a stats line every second; returns them with the writer's environment once the
/// collector is listening and the pipe is connected.
pub fn start_split(
    dir: &TempDir,
    db: &PgDb,
    port: u16,
) -> (Proc, Proc, Vec<(&'static str, String)>) {
    start_split_with(dir, db, port, &[])
}

/// [`start_split`] with more environment for the writer.
pub fn start_split_with(
    dir: &TempDir,
    db: &PgDb,
    port: u16,
    writer_env: &[(&'static str, String)],
) -> (Proc, Proc, Vec<(&'static str, String)>) {
    let pipe = dir.path().join("netflow.pipe").display().to_string();
    let mut env = db.env();
    env.extend_from_slice(writer_env);
    env.push(("NAMED_PIPE_FILENAME", pipe.clone()));
    env.push(("STATS_INTERVAL", "1".to_owned()));
    let writer = Proc::start("netflow-writer", dir.path(), &env, &["--state-dir", "."]);
    writer.wait_for("store open", Duration::from_secs(60));
    let collector = Proc::start(
        "netflow-collector",
        dir.path(),
        &[
            ("NAMED_PIPE_FILENAME", pipe),
            ("NETFLOW_PORT", port.to_string()),
            ("STATS_INTERVAL", "1".to_owned()),
        ],
        &[],
    );
    collector.wait_for("listening for NetFlow", Duration::from_secs(30));
    collector.wait_for("named pipe connected", Duration::from_secs(30));
    (writer, collector, env)
}
