//! The tests' own ClickHouse servers: started from `clickhouse-server` (Debian's package, or any
//! release on `PATH`) with the configuration in `netflow-store/tests/clickhouse/`, on loopback
//! ports of their own, data under the temp dir.
//!
//! * [`ClickHouseServer::shared`]: the server every ClickHouse test uses (HTTP port
//!   [`SHARED.http`](SHARED)); started if it is down, left running for the next test binary.
//!   Tests create and drop databases of their own in it ([`TestDatabase`]).
//! * [`ClickHouseServer::private`]: a server a test may stop and start (the fault tests), held
//!   under an exclusive file lock like the PostgreSQL [`super::PrivateServer`].
//! * [`ClickHouseServer::second_shard`]: the second shard of the two-shard test cluster
//!   [`CLUSTER`] (the shared server is the first).
//! * [`ClickHouseServer::bench`]: the benchmarks' server, apart from the tests'.
//!
//! When the server cannot start, these panic with one line saying why: a test that needs
//! ClickHouse fails, it does not skip.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The configuration template (placeholders `@DATA@`, `@HTTP_PORT@`, ...).
const SERVER_XML: &str = include_str!("../../tests/clickhouse/server.xml");
/// The users file (user `default`, no password, loopback only).
const USERS_XML: &str = include_str!("../../tests/clickhouse/users.xml");

/// Name of the two-shard cluster every test server knows (`remote_servers`).
pub const CLUSTER: &str = "netflow_test_2shards";

/// One server's ports and name.
#[derive(Debug, Clone, Copy)]
pub struct Instance {
    /// Directory name under the temp dir.
    pub name: &'static str,
    /// HTTP interface.
    pub http: u16,
    /// Native protocol (used by `Distributed` between the servers).
    pub tcp: u16,
    /// Interserver HTTP (replication; unused, but every server needs a port of its own).
    pub interserver: u16,
}

/// The shared test server (shard 1 of [`CLUSTER`]).
pub const SHARED: Instance = Instance {
    name: "shared",
    http: 18123,
    tcp: 19000,
    interserver: 19009,
};
/// The server the fault tests stop and start.
pub const PRIVATE: Instance = Instance {
    name: "private",
    http: 18124,
    tcp: 19001,
    interserver: 19010,
};
/// Shard 2 of [`CLUSTER`].
pub const SHARD2: Instance = Instance {
    name: "shard2",
    http: 18125,
    tcp: 19002,
    interserver: 19011,
};

/// The benchmarks' server (`benches/`): apart from the tests', so that its CPU is the bench's.
pub const BENCH: Instance = Instance {
    name: "bench",
    http: 18126,
    tcp: 19003,
    interserver: 19012,
};

/// A running test server; for [`ClickHouseServer::private`] also the exclusive right to stop it.
#[derive(Debug)]
pub struct ClickHouseServer {
    instance: Instance,
    _lock: Option<File>,
}

impl ClickHouseServer {
    /// The shared server, started if it is down.
    ///
    /// # Panics
    ///
    /// With one line saying why the server cannot start.
    #[track_caller]
    pub fn shared() -> ClickHouseServer {
        ClickHouseServer::running(SHARED, false)
    }

    /// Shard 2 of [`CLUSTER`], started if it is down.
    ///
    /// # Panics
    ///
    /// As [`ClickHouseServer::shared`].
    #[track_caller]
    pub fn second_shard() -> ClickHouseServer {
        ClickHouseServer::running(SHARD2, false)
    }

    /// The benchmarks' server ([`BENCH`]), started if it is down.
    ///
    /// # Panics
    ///
    /// As [`ClickHouseServer::shared`].
    #[track_caller]
    pub fn bench() -> ClickHouseServer {
        ClickHouseServer::running(BENCH, false)
    }

    /// The private server, started if it is down, held exclusively until dropped (then started
    /// again if the holder left it stopped).
    ///
    /// # Panics
    ///
    /// As [`ClickHouseServer::shared`].
    #[track_caller]
    pub fn private() -> ClickHouseServer {
        ClickHouseServer::running(PRIVATE, true)
    }

    #[track_caller]
    fn running(instance: Instance, exclusive: bool) -> ClickHouseServer {
        let lock = |suffix: &str| -> Result<File, String> {
            let path = std::env::temp_dir().join(format!(
                "netflow-test-clickhouse-{}{suffix}.lock",
                instance.name
            ));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
            f.lock()
                .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            Ok(f)
        };
        let result = (|| {
            let held = if exclusive { Some(lock("-use")?) } else { None };
            // starting is serialized between processes; the start lock is released at once
            let start = lock("-start")?;
            let server = ClickHouseServer {
                instance,
                _lock: held,
            };
            server.ensure_running()?;
            drop(start);
            Ok::<_, String>(server)
        })();
        match result {
            Ok(s) => s,
            Err(e) => panic!(
                "ClickHouse test server {} (127.0.0.1:{}): {e}",
                instance.name, instance.http
            ),
        }
    }

    /// `http://127.0.0.1:<port>`, for `CLICKHOUSE_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.instance.http)
    }

    /// The server's ports.
    pub fn instance(&self) -> Instance {
        self.instance
    }

    fn dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("netflow-test-clickhouse-{}", self.instance.name))
    }

    /// The server's process id, when this test-support started it (from its pid file).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir().join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the server answers `/ping`.
    pub fn is_up(&self) -> bool {
        ping(self.instance.http)
    }

    fn ensure_running(&self) -> Result<(), String> {
        if self.is_up() {
            return Ok(());
        }
        self.start_server()
    }

    /// Starts the server (private server only makes sense) and waits until it answers.
    ///
    /// # Panics
    ///
    /// When it does not answer within 60 s.
    #[track_caller]
    pub fn start(&self) {
        if let Err(e) = self.ensure_running() {
            panic!("{e}");
        }
    }

    /// Stops the server (SIGKILL: an abrupt end, as a crash or power loss) and waits until its
    /// port is closed.
    ///
    /// # Panics
    ///
    /// When the server still answers 30 s later.
    #[track_caller]
    pub fn stop(&self) {
        let pid = std::fs::read_to_string(self.dir().join("pid")).unwrap_or_default();
        let pid = pid.trim();
        if !pid.is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.is_up() || listening(self.instance.http) {
            if Instant::now() > deadline {
                panic!(
                    "ClickHouse test server {} still up 30 s after kill",
                    self.instance.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_server(&self) -> Result<(), String> {
        let exe = ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| {
                std::env::var_os("PATH").and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("clickhouse-server"))
                        .find(|p| p.is_file())
                })
            })
            .ok_or("clickhouse-server not found (apt-get install clickhouse-server)")?;
        let dir = self.dir();
        let conf = dir.join("conf");
        for sub in ["conf", "log", "data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let data = dir.to_string_lossy();
        let xml = SERVER_XML
            .replace("@DATA@", &data)
            .replace("@HTTP_PORT@", &self.instance.http.to_string())
            .replace("@TCP_PORT@", &self.instance.tcp.to_string())
            .replace("@INTERSERVER_PORT@", &self.instance.interserver.to_string())
            .replace("@REMOTE_SERVERS@", &remote_servers());
        let write = |name: &str, text: &str| {
            std::fs::write(conf.join(name), text)
                .map_err(|e| format!("cannot write {}: {e}", conf.join(name).display()))
        };
        write("config.xml", &xml)?;
        // the benchmarks' server gets ClickHouse's own per-query memory limit (10 GB), not the
        // tests' 2 GB: the bot's pushdown over a 30M-flow window needs more than 2 GB
        let users = if self.instance.name == BENCH.name {
            USERS_XML.replace(
                "<max_memory_usage>2000000000</max_memory_usage>",
                "<max_memory_usage>10000000000</max_memory_usage>",
            )
        } else {
            USERS_XML.to_owned()
        };
        write("users.xml", &users)?;
        let log = File::create(dir.join("log/stdout.log"))
            .map_err(|e| format!("cannot create the server's stdout log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot create the server's stdout log: {e}"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg(format!(
            "--config-file={}",
            conf.join("config.xml").display()
        ))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        // its own process group: a test's ^C does not take the shared server down with it
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        write("../pid", &child.id().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.is_up() {
                // the child is left running (reaped by init when the test process exits)
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) at start: {}",
                    exe.display(),
                    self.log_tail()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "not answering 60 s after start: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's error log and stdout, on one line.
    fn log_tail(&self) -> String {
        let mut out = Vec::new();
        for name in ["log/server.err.log", "log/stdout.log"] {
            let path = self.dir().join(name);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push(format!(
                "{}: {}",
                path.display(),
                lines[lines.len().saturating_sub(3)..].join(" | ")
            ));
        }
        out.join("; ")
    }

    /// Runs one statement over HTTP; the body on success, the server's message on failure.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        http_query(self.instance.http, sql)
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        // the next holder of the private server expects it running
        if self._lock.is_some() && !self.is_up() {
            let _ = self.start_server();
        }
    }
}

/// A database of its own on a test server, dropped when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database name.
    pub name: String,
    http: u16,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    /// A fresh, not yet created, database name on `server` (the store creates it).
    pub fn new(server: &ClickHouseServer, kind: &str) -> TestDatabase {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        TestDatabase {
            name: format!(
                "nftest_{kind}_{}_{}_{nanos}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ),
            http: server.instance.http,
        }
    }
}

impl TestDatabase {
    /// The database `name` on `server` (the same name as one on another shard), dropped with
    /// this.
    pub fn on_server(server: &ClickHouseServer, name: &str) -> TestDatabase {
        TestDatabase {
            name: name.to_owned(),
            http: server.instance.http,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = http_query(self.http, &format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

fn remote_servers() -> String {
    let replica = |i: Instance| {
        format!(
            "<shard><replica><host>127.0.0.1</host><port>{}</port></replica></shard>",
            i.tcp
        )
    };
    format!(
        "<{CLUSTER}>{}{}</{CLUSTER}>",
        replica(SHARED),
        replica(SHARD2)
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn http_query(port: u16, sql: &str) -> Result<String, String> {
    let mut resp = agent()
        .post(&format!("http://127.0.0.1:{port}/"))
        .send(sql.as_bytes())
        .map_err(|e| e.to_string())?;
    let ok = resp.status().is_success();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(text)
    } else {
        Err(text.trim().to_owned())
    }
}

fn ping(port: u16) -> bool {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent()
        .get(&format!("http://127.0.0.1:{port}/ping"))
        .call()
        .is_ok_and(|r| r.status().is_success())
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
