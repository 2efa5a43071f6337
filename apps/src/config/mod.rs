//! Settings shared by the binaries: the original bot's environment variables, a `.env` file in
//! the working directory, and a command-line flag for each.
//!
//! Precedence, highest first: the flag, the process environment, `.env`, the built-in default.
//! Every variable the original read (`BACKEND_URL`, `BOT_TOKEN`, `BOT_TOKEN_FROM_FILE`,
//! `DB_HOST`, `DB_DATABASE`, `DB_USERNAME`, `DB_PASSWORD`, `JOBS_REFRESH_INTERVAL`,
//! `NETFLOW_PORT`, `NAMED_PIPE_FILENAME`, `DEBUG`) keeps its name and meaning.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args};
use grafolean_client::{Client, ClientConfig, Token};

use crate::Error;

mod store;
pub use store::StoreArgs;

/// Parses `.env` text: `KEY=VALUE` lines, `#` comments, optional `export `, values optionally
/// in single or double quotes. Malformed lines are ignored (the original's python-dotenv did
/// the same).
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            // An unquoted value ends at a ` #` comment.
            v.split(" #").next().unwrap_or(v).trim_end()
        };
        vars.insert(k.to_owned(), v.to_owned());
    }
    vars
}

/// Parses the command line of `T`, taking defaults from `.env` in the working directory for
/// every argument with an environment variable that the process environment lacks. Exits with
/// clap's message (and status 2) on a malformed flag or value, as clap does.
pub fn parse_args<T: clap::Parser>() -> T {
    let dotenv = std::fs::read_to_string(".env")
        .map(|t| parse_dotenv(&t))
        .unwrap_or_default();
    parse_args_from(std::env::args_os(), &dotenv).unwrap_or_else(|e| e.exit())
}

/// [`parse_args`] with explicit arguments and `.env` contents (for tests).
pub fn parse_args_from<T: clap::Parser, I, S>(
    args: I,
    dotenv: &HashMap<String, String>,
) -> Result<T, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = T::command();
    let ids: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            Some((a.get_id().to_string(), env))
        })
        .collect();
    for (id, env) in ids {
        if std::env::var_os(&env).is_some() {
            continue;
        }
        if let Some(v) = dotenv.get(&env) {
            let v = v.clone();
            cmd = cmd.mut_arg(id, move |a| a.default_value(v));
        }
    }
    let mut matches: ArgMatches = cmd.try_get_matches_from(args)?;
    T::from_arg_matches_mut(&mut matches)
}

/// `1`, `true`, `yes`, `on` (any case) are true; `0`, `false`, `no`, `off` and empty are false.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "y" => Ok(true),
        "" | "0" | "false" | "no" | "off" | "n" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// Logging.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Log at debug level (the original's DEBUG). RUST_LOG, when set, overrides both.
    #[arg(long, env = "DEBUG", value_parser = parse_bool, default_value = "false",
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub debug: bool,
}

impl LogArgs {
    /// Installs the `tracing` subscriber (stderr, `info` or with DEBUG `debug`).
    pub fn init(&self) {
        let default = if self.debug {
            "debug,ureq=info,rustls=info"
        } else {
            "info"
        };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
}

/// Statistics: the periodic log line and the optional Prometheus endpoint.
#[derive(Args, Debug, Clone)]
pub struct StatsArgs {
    /// Seconds between statistics lines in the log (0 turns them off).
    #[arg(long, env = "STATS_INTERVAL", default_value_t = 60)]
    pub stats_interval: u64,
    /// Serve the counters as Prometheus text on this address, e.g. 127.0.0.1:9108 (off when unset).
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl StatsArgs {
    /// The stats interval, `None` when off.
    pub fn interval(&self) -> Option<Duration> {
        (self.stats_interval > 0).then(|| Duration::from_secs(self.stats_interval))
    }
}

/// UDP reception.
#[derive(Args, Debug, Clone)]
pub struct CollectorArgs {
    /// UDP port the exporters send NetFlow to.
    #[arg(long, env = "NETFLOW_PORT", default_value_t = 2055)]
    pub netflow_port: u16,
    /// Address to listen on; the default `::` takes IPv6 and IPv4 (dual stack).
    #[arg(long, env = "NETFLOW_LISTEN", default_value_t = IpAddr::V6(Ipv6Addr::UNSPECIFIED))]
    pub listen: IpAddr,
    /// Socket receive buffer to ask for, in bytes (the kernel may grant less; see net.core.rmem_max).
    #[arg(long, env = "RECEIVE_BUFFER", default_value_t = 32 << 20)]
    pub receive_buffer: usize,
    /// Bytes of datagrams held while the consumer is absent or slow; beyond that they are dropped and counted.
    #[arg(long, env = "QUEUE_BYTES", default_value_t = 64 << 20)]
    pub queue_bytes: usize,
}

impl CollectorArgs {
    /// The socket address to bind.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen, self.netflow_port)
    }
}

/// The named pipe between collector and writer.
#[derive(Args, Debug, Clone)]
pub struct PipeArgs {
    /// Path of the named pipe (FIFO) between collector and writer; created if missing.
    #[arg(long, env = "NAMED_PIPE_FILENAME")]
    pub named_pipe_filename: Option<PathBuf>,
}

impl PipeArgs {
    /// The pipe path, or the one-line error naming the setting.
    pub fn path(&self) -> Result<&Path, Error> {
        self.named_pipe_filename
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(Error::Setting(
                "NAMED_PIPE_FILENAME",
                "not set (the FIFO shared by collector and writer, e.g. /tmp/netflow.pipe)".into(),
            ))
    }
}

/// Writer tuning.
#[derive(Args, Debug, Clone)]
pub struct WriterArgs {
    /// Directory for the template cache and the spool used while the database is down.
    #[arg(long, env = "STATE_DIR", default_value = ".")]
    pub state_dir: PathBuf,
    /// Flows per database batch (a batch is also written after at most one second).
    #[arg(long, env = "BATCH_FLOWS", default_value_t = 20_000)]
    pub batch_flows: usize,
    /// Flows kept in memory while the database is unreachable; older batches go to the spool.
    #[arg(long, env = "MAX_BUFFERED_FLOWS", default_value_t = 500_000)]
    pub max_buffered_flows: usize,
    /// Bytes the on-disk spool may use; beyond that flows are dropped (and counted).
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Sampling rates for exporters that sample without announcing it, as ADDR=N pairs
    /// separated by commas (e.g. 10.0.0.1=100,2001:db8::1=512). They win over what an exporter
    /// announces; bytes and packets are multiplied by N before they are stored.
    #[arg(long, env = "SAMPLING_OVERRIDES", value_parser = parse_sampling_overrides, default_value = "")]
    pub sampling_overrides: SamplingOverrides,
}

/// Per-exporter sampling rates from `SAMPLING_OVERRIDES`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplingOverrides(pub Vec<(IpAddr, u32)>);

/// Parses `ADDR=N[,ADDR=N...]`; N is 1 to 2^32-1.
pub fn parse_sampling_overrides(s: &str) -> Result<SamplingOverrides, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (addr, rate) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not ADDR=N"))?;
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let rate: u32 = rate
            .trim()
            .parse()
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| format!("`{rate}` is not a sampling rate (1 in N, N >= 1)"))?;
        out.push((addr, rate));
    }
    Ok(SamplingOverrides(out))
}

/// Grafolean connection and job refresh.
#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Grafolean backend URL including /api, e.g. https://grafolean.example.com/api.
    #[arg(long, env = "BACKEND_URL")]
    pub backend_url: Option<String>,
    /// The bot's token (a UUID from Grafolean's bot settings).
    #[arg(long, env = "BOT_TOKEN", hide_env_values = true)]
    pub bot_token: Option<String>,
    /// File holding the bot's token (used when BOT_TOKEN is unset).
    #[arg(long, env = "BOT_TOKEN_FROM_FILE")]
    pub bot_token_from_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for an https:// BACKEND_URL in addition to the
    /// bundled roots, e.g. the private CA of a self-hosted Grafolean.
    #[arg(long, env = "BACKEND_CA_FILE")]
    pub backend_ca_file: Option<PathBuf>,
    /// Seconds between re-reads of the jobs (accounts, entities, sensors) from Grafolean.
    #[arg(long, env = "JOBS_REFRESH_INTERVAL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs_refresh_interval: u64,
}

impl BackendArgs {
    /// The backend URL if set and non-empty.
    pub fn url(&self) -> Option<&str> {
        self.backend_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// The client's settings: defaults, plus `BACKEND_CA_FILE` when set.
    pub fn client_config(&self) -> ClientConfig {
        let config = ClientConfig::default();
        match &self.backend_ca_file {
            Some(p) => config.with_ca_file(p),
            None => config,
        }
    }

    /// A Grafolean client for `url` with the token and [`client_config`](Self::client_config).
    /// The error names the setting to fix: `BOT_TOKEN`, `BOT_TOKEN_FROM_FILE`,
    /// `BACKEND_CA_FILE` (missing, unreadable or not PEM) or `BACKEND_URL`.
    pub fn client(&self, url: &str) -> Result<Client, Error> {
        let token = self.token()?;
        Client::with_config(url, token, self.client_config()).map_err(|e| match e {
            grafolean_client::Error::CaFile { .. } => {
                Error::Setting("BACKEND_CA_FILE", e.to_string())
            }
            e => Error::Setting("BACKEND_URL", e.to_string()),
        })
    }

    /// The token from `BOT_TOKEN` or `BOT_TOKEN_FROM_FILE`.
    pub fn token(&self) -> Result<Token, Error> {
        if let Some(t) = self.bot_token.as_deref().filter(|t| !t.trim().is_empty()) {
            return Token::new(t).map_err(|e| Error::Setting("BOT_TOKEN", e.to_string()));
        }
        match self
            .bot_token_from_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            Some(p) => Token::from_file(p)
                .map_err(|e| Error::Setting("BOT_TOKEN_FROM_FILE", e.to_string())),
            None => Err(Error::Setting(
                "BOT_TOKEN",
                "not set (nor BOT_TOKEN_FROM_FILE): the bot token from Grafolean".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sampling_overrides_parse_or_name_the_bad_item() {
        use super::{SamplingOverrides, parse_sampling_overrides};
        assert_eq!(
            parse_sampling_overrides(""),
            Ok(SamplingOverrides::default())
        );
        let p = parse_sampling_overrides("10.0.0.1=100, 2001:db8::1=512").unwrap();
        assert_eq!(
            p.0,
            vec![
                ("10.0.0.1".parse().unwrap(), 100),
                ("2001:db8::1".parse().unwrap(), 512)
            ]
        );
        assert!(
            parse_sampling_overrides("10.0.0.1")
                .unwrap_err()
                .contains("10.0.0.1")
        );
        assert!(
            parse_sampling_overrides("router=5")
                .unwrap_err()
                .contains("router")
        );
        assert!(
            parse_sampling_overrides("10.0.0.1=0")
                .unwrap_err()
                .contains("`0`")
        );
    }

    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        c: CollectorArgs,
        #[command(flatten)]
        p: PipeArgs,
        #[command(flatten)]
        l: LogArgs,
    }

    #[test]
    fn test_dotenv_parsing() {
        let v = parse_dotenv(
            "# c\nA=1\nexport B = \"two words\"\nC='x#y'\nD=v # comment\nbad line\n=x\nE=\n",
        );
        assert_eq!(v.get("A").map(String::as_str), Some("1"));
        assert_eq!(v.get("B").map(String::as_str), Some("two words"));
        assert_eq!(v.get("C").map(String::as_str), Some("x#y"));
        assert_eq!(v.get("D").map(String::as_str), Some("v"));
        assert_eq!(v.get("E").map(String::as_str), Some(""));
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn test_dotenv_gives_defaults_flags_win() {
        // Names no test process sets.
        let mut env = HashMap::new();
        env.insert("NETFLOW_PORT".to_owned(), "9995".to_owned());
        env.insert("NAMED_PIPE_FILENAME".to_owned(), "/tmp/p".to_owned());
        env.insert("DEBUG".to_owned(), "yes".to_owned());
        if std::env::var_os("NETFLOW_PORT").is_none() {
            let t: T = parse_args_from(["x"], &env).expect("parse");
            assert_eq!(t.c.netflow_port, 9995);
            assert!(t.l.debug);
            let t: T = parse_args_from(["x", "--netflow-port", "1"], &env).expect("parse");
            assert_eq!(t.c.netflow_port, 1);
        }
        let e = parse_args_from::<T, _, _>(["x", "--netflow-port", "99999"], &HashMap::new());
        assert!(e.is_err());
    }

    #[test]
    fn test_missing_pipe_names_setting() {
        let p = PipeArgs {
            named_pipe_filename: None,
        };
        let e = p.path().expect_err("missing");
        assert!(e.to_string().contains("NAMED_PIPE_FILENAME"), "{e}");
    }

    #[derive(Parser, Debug)]
    struct B {
        #[command(flatten)]
        b: BackendArgs,
    }

    #[test]
    fn test_backend_ca_file_from_flag_and_dotenv_is_in_help() {
        let help = <B as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(help.contains("--backend-ca-file"), "{help}");
        assert!(help.contains("BACKEND_CA_FILE"), "{help}");
        let t: B = parse_args_from(["x", "--backend-ca-file", "/etc/ca.pem"], &HashMap::new())
            .expect("parse");
        assert_eq!(
            t.b.backend_ca_file.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        assert_eq!(
            t.b.client_config().ca_file.as_deref(),
            Some(Path::new("/etc/ca.pem"))
        );
        let t: B = parse_args_from(["x"], &HashMap::new()).expect("parse");
        if std::env::var_os("BACKEND_CA_FILE").is_none() {
            assert_eq!(t.b.client_config().ca_file, None);
        }
        if std::env::var_os("BACKEND_CA_FILE").is_none() {
            let mut env = HashMap::new();
            env.insert(
                "BACKEND_CA_FILE".to_owned(),
                "/srv/grafolean-ca.pem".to_owned(),
            );
            let t: B = parse_args_from(["x"], &env).expect("parse");
            assert_eq!(
                t.b.client_config().ca_file.as_deref(),
                Some(Path::new("/srv/grafolean-ca.pem"))
            );
            // Empty is refused by clap, as for BOT_TOKEN_FROM_FILE.
            env.insert("BACKEND_CA_FILE".to_owned(), String::new());
            assert!(parse_args_from::<B, _, _>(["x"], &env).is_err());
        }
    }

    #[test]
    fn test_bad_backend_ca_file_names_the_setting_and_the_file() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("netflow-no-such-ca-{}.pem", std::process::id()));
        let not_pem = dir.join(format!("netflow-not-pem-ca-{}.pem", std::process::id()));
        std::fs::write(&not_pem, "not a certificate\n").expect("write");
        for path in [&missing, &not_pem] {
            let args = BackendArgs {
                backend_url: None,
                bot_token: Some("2950cb50-8be5-4079-881e-312732065f11".to_owned()),
                bot_token_from_file: None,
                backend_ca_file: Some(path.clone()),
                jobs_refresh_interval: 60,
            };
            let e = args
                .client("https://127.0.0.1:1/api")
                .expect_err("bad CA file");
            assert!(matches!(e, Error::Setting("BACKEND_CA_FILE", _)), "{e:?}");
            let shown = e.to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
            assert!(!shown.contains("2950cb50"), "{shown}");
        }
        let _ = std::fs::remove_file(&not_pem);
    }

    #[test]
    fn test_parse_bool() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").is_err());
    }
}

#[cfg(test)]
mod clickhouse_settings {
    use clap::Parser;

    use super::StoreArgs;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        s: StoreArgs,
    }

    fn store(args: &[&str]) -> Result<netflow_store::StoreConfig, crate::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .s
            .store_config()
    }

    #[test]
    fn clickhouse_url_selects_clickhouse_and_excludes_db_host() {
        let c = store(&[
            "--clickhouse-url",
            "http://ch:8123",
            "--clickhouse-password",
            "pw",
        ])
        .unwrap();
        let netflow_store::Backend::ClickHouse(ch) = c.backend else {
            panic!("not ClickHouse")
        };
        assert_eq!(
            (ch.url.as_str(), ch.database.as_str()),
            ("http://ch:8123", "netflow")
        );
        let both = store(&["--clickhouse-url", "http://ch:8123", "--db-host", "pg"]).unwrap_err();
        assert_eq!(
            both.to_string(),
            "setting CLICKHOUSE_URL: set together with DB_HOST: choose one store (unset one of them)"
        );
        let bad = store(&["--clickhouse-url", "ch:8123"])
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("setting CLICKHOUSE_URL: "), "{bad}");
        let bad = store(&[
            "--clickhouse-url",
            "http://ch",
            "--clickhouse-database",
            "a-b",
        ]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .starts_with("setting CLICKHOUSE_DATABASE: ")
        );
        assert_eq!(ch.aggregation, netflow_store::Aggregation::Server);
        let c = store(&[
            "--clickhouse-url",
            "http://ch",
            "--clickhouse-aggregation",
            "bot",
        ]);
        let netflow_store::Backend::ClickHouse(ch) = c.unwrap().backend else {
            panic!("not ClickHouse")
        };
        assert_eq!(ch.aggregation, netflow_store::Aggregation::Bot);
        let bad = store(&[
            "--clickhouse-url",
            "http://ch",
            "--clickhouse-aggregation",
            "rows",
        ]);
        assert_eq!(
            bad.unwrap_err().to_string(),
            "setting CLICKHOUSE_AGGREGATION: expected server or bot"
        );
    }
}
