//! Test support (feature `test-support`): a PostgreSQL server that a test may stop and restart,
//! because it is the test's own and not the shared one other tests use.
//!
//! [`PrivateServer::acquire`] makes sure the Debian cluster [`CLUSTER`] (PostgreSQL's
//! `pg_createcluster`, port [`PORT`], trust authentication on local TCP, not started at boot)
//! exists and runs, creating it on first use and reusing it afterwards, and holds an exclusive
//! lock on it until dropped: tests in one binary (run in parallel) and test binaries run one
//! after the other, or by two people at once, take turns. Tests still create and drop a
//! database of their own in it. It needs root (or the `postgres` user) and `postgresql-common`;
//! when either is missing, `acquire` panics with one line saying what is missing: a test that
//! needs a restartable server fails, it does not skip.
//!
//! ```no_run
//! use netflow_store::test_support::PrivateServer;
//!
//! let server = PrivateServer::acquire();
//! let mut admin = server.admin_config().connect(postgres::NoTls).unwrap();
//! admin.batch_execute("CREATE DATABASE my_test").unwrap();
//! server.stop(); // connections are cut, new ones refused
//! server.start(); // back, accepting connections
//! server.restart(); // both at once
//! ```

pub mod clickhouse;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Name of the private cluster (`pg_lsclusters` lists it).
pub const CLUSTER: &str = "nf_restart";
/// Port the private cluster is created with.
pub const PORT: u16 = 5499;

/// Exclusive use of the private PostgreSQL cluster; the lock is released when this is dropped
/// (the server is started again first if the holder left it stopped).
#[derive(Debug)]
pub struct PrivateServer {
    version: String,
    port: u16,
    _lock: File,
}

impl PrivateServer {
    /// Ensures the private cluster exists and runs, then waits for the exclusive lock on it.
    ///
    /// # Panics
    ///
    /// With one line naming what is missing or what failed (see [`PrivateServer::try_acquire`]).
    #[track_caller]
    pub fn acquire() -> PrivateServer {
        match PrivateServer::try_acquire() {
            Ok(s) => s,
            Err(e) => panic!("private PostgreSQL cluster {CLUSTER} for tests: {e}"),
        }
    }

    /// [`PrivateServer::acquire`], with the reason as an error instead of a panic.
    pub fn try_acquire() -> Result<PrivateServer, String> {
        let euid = effective_uid()?;
        if euid != 0 {
            return Err(format!(
                "needs root to run pg_createcluster/pg_ctlcluster (running as uid {euid})"
            ));
        }
        for tool in ["pg_createcluster", "pg_ctlcluster", "pg_dropcluster"] {
            if !on_path(tool) {
                return Err(format!(
                    "{tool} not found (apt-get install postgresql-common postgresql-15)"
                ));
            }
        }
        let version = server_version()?;
        let lock_path = std::env::temp_dir().join(format!("netflow-test-pg-{CLUSTER}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open lock file {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        let mut server = PrivateServer {
            version,
            port: PORT,
            _lock: lock,
        };
        if let Err(first) = server.ensure_running() {
            // A cluster left half-made or broken by an earlier run: it is ours, make it anew.
            server.remove();
            server
                .ensure_running()
                .map_err(|e| format!("{first}; after recreating it: {e}"))?;
        }
        Ok(server)
    }

    /// Creates the cluster if it does not exist, starts it if it is down, reads its port and
    /// waits until it accepts connections.
    fn ensure_running(&mut self) -> Result<(), String> {
        let conf = self.conf_dir().join("postgresql.conf");
        if !conf.exists() {
            let port = PORT.to_string();
            run(Command::new("pg_createcluster").args([
                self.version.as_str(),
                CLUSTER,
                "--port",
                &port,
                "--start-conf",
                "manual",
                "--",
                "--auth=trust",
            ]))?;
        }
        self.port = configured_port(&conf)?;
        if !self.is_running() {
            self.ctl("start")?;
        }
        self.wait_ready(Duration::from_secs(60))
    }

    /// `/etc/postgresql/<version>/<cluster>`.
    fn conf_dir(&self) -> PathBuf {
        Path::new("/etc/postgresql")
            .join(&self.version)
            .join(CLUSTER)
    }

    /// The server's port (for `DB_HOST`, `127.0.0.1:<port>`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An administrator connection (user `postgres`, database `postgres`, over TCP).
    pub fn admin_config(&self) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// Whether the postmaster runs (`pg_ctlcluster status`).
    pub fn is_running(&self) -> bool {
        Command::new("pg_ctlcluster")
            .args([self.version.as_str(), CLUSTER, "status"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Stops the server (fast mode: open connections are cut, transactions rolled back).
    ///
    /// # Panics
    ///
    /// When `pg_ctlcluster stop` fails.
    #[track_caller]
    pub fn stop(&self) {
        if let Err(e) = self.ctl("stop") {
            panic!("{e}");
        }
    }

    /// Starts the server and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When `pg_ctlcluster start` fails or the server does not accept connections in 60 s.
    #[track_caller]
    pub fn start(&self) {
        if let Err(e) = self
            .ctl("start")
            .and_then(|()| self.wait_ready(Duration::from_secs(60)))
        {
            panic!("{e}");
        }
    }

    /// Restarts the server (fast stop, start) and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// As [`PrivateServer::start`].
    #[track_caller]
    pub fn restart(&self) {
        if let Err(e) = self
            .ctl("restart")
            .and_then(|()| self.wait_ready(Duration::from_secs(60)))
        {
            panic!("{e}");
        }
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            self.version.as_str(),
            CLUSTER,
            action,
        ]))
        .map_err(|e| format!("{e}; log: {}", self.log_tail()))
    }

    /// Removes the cluster, also when it is too broken for `pg_dropcluster` (which then leaves
    /// the data directory behind, and `pg_createcluster` refuses to reuse it).
    fn remove(&self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", self.version.as_str(), CLUSTER])
            .output();
        let data = Path::new("/var/lib/postgresql")
            .join(&self.version)
            .join(CLUSTER);
        if data.join("postmaster.pid").exists() {
            let pg_ctl = Path::new("/usr/lib/postgresql")
                .join(&self.version)
                .join("bin/pg_ctl");
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_ctl)
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&data)
                .output();
        }
        let _ = std::fs::remove_dir_all(self.conf_dir());
        let _ = std::fs::remove_dir_all(data);
    }

    fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let err = match self.admin_config().connect(postgres::NoTls) {
                Ok(mut c) => match c.simple_query("SELECT 1") {
                    Ok(_) => return Ok(()),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting connections on 127.0.0.1:{} after {within:?}: {err}; log: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the server log, on one line.
    fn log_tail(&self) -> String {
        let path = format!(
            "/var/log/postgresql/postgresql-{}-{CLUSTER}.log",
            self.version
        );
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        format!("{path}: {tail}")
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // The next holder expects a running server (a test may have panicked while it was down).
        if !self.is_running() {
            let _ = self.ctl("start");
        }
    }
}

/// Runs `cmd`; its output becomes the error on failure.
fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

fn effective_uid() -> Result<u32, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status to check for root: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "no effective uid in /proc/self/status".to_owned())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The newest installed server version (`/usr/lib/postgresql/<version>/bin/initdb`).
fn server_version() -> Result<String, String> {
    let dir = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, String)> = std::fs::read_dir(dir)
        .map_err(|e| format!("no PostgreSQL server installed ({}: {e})", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().join("bin/initdb").is_file())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name.parse().ok()?, name))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, v)| v).ok_or_else(|| {
        format!(
            "no PostgreSQL server installed ({}/<version>/bin/initdb missing; apt-get install postgresql-15)",
            dir.display()
        )
    })
}

/// `port = N` in the cluster's `postgresql.conf` (pg_createcluster may have picked another
/// port if the default was taken by another cluster).
fn configured_port(conf: &Path) -> Result<u16, String> {
    let text = std::fs::read_to_string(conf)
        .map_err(|e| format!("cannot read {}: {e}", conf.display()))?;
    text.lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == "port")
        .filter_map(|(_, v)| v.trim().parse().ok())
        .next_back()
        .ok_or_else(|| format!("no port in {}", conf.display()))
}
