//! The long-running binaries: their command lines and `run` functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;
use grafolean_client::Client;
use netflow_store::Store;
use tracing::{error, info, warn};

use crate::Error;
use crate::bot::{Bot, BotConfig};
use crate::collector;
use crate::config::{
    BackendArgs, CollectorArgs, LogArgs, PipeArgs, StatsArgs, StoreArgs, WriterArgs,
};
use crate::stats::{self, Counters};
use crate::writer::{self, Writer, WriterConfig};

/// `netflow-collector`: receives NetFlow over UDP and forwards each datagram, stamped with the
/// exporter's address and the receive time, as a frame on the named pipe to `netflow-writer`.
/// Run it outside Docker's network (Docker hides the UDP source address from containers).
#[derive(Parser, Debug)]
#[command(name = "netflow-collector", version)]
pub struct CollectorCli {
    #[command(flatten)]
    pub collector: CollectorArgs,
    #[command(flatten)]
    pub pipe: PipeArgs,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `netflow-writer`: reads frames from the named pipe, decodes NetFlow v5/v9/IPFIX and writes
/// the flows to PostgreSQL (DB_HOST...) or the embedded SQLite store.
#[derive(Parser, Debug)]
#[command(name = "netflow-writer", version)]
pub struct WriterCli {
    #[command(flatten)]
    pub pipe: PipeArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub writer: WriterArgs,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// `netflow-bot`: reads its jobs from Grafolean, aggregates the stored flows per interval
/// (1min, 15min, 1h, 4h, 24h) and sends the values; applies retention and suggests new exporters.
#[derive(Parser, Debug)]
#[command(name = "netflow-bot", version)]
pub struct BotCli {
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Run every aggregation job once (windows as usual), then exit.
    #[arg(long)]
    pub once: bool,
}

/// `netflow`: collector, writer and bot in one process. Without BACKEND_URL it prints each
/// window's aggregates as a table on stdout; without DB_HOST it stores in SQLite (DB_FILE).
#[derive(Parser, Debug)]
#[command(name = "netflow", version)]
pub struct AllInOneCli {
    #[command(flatten)]
    pub collector: CollectorArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub writer: WriterArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Seconds between the tables printed when BACKEND_URL is unset.
    #[arg(long, env = "TABLE_INTERVAL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub table_interval: u64,
    /// Also run a built-in generator sending demo flows (v9, 200 flows/s) to the collector.
    #[arg(long)]
    pub demo: bool,
}

/// A flag set by SIGINT or SIGTERM.
pub fn stop_flag() -> Result<Arc<AtomicBool>, Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(Error::io("signal handler"))?;
    }
    Ok(stop)
}

fn start_stats(
    who: &'static str,
    args: &StatsArgs,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Result<Option<JoinHandle<()>>, Error> {
    if let Some(addr) = args.metrics_listen {
        stats::spawn_metrics(addr, Arc::clone(counters))
            .map_err(Error::io(format!("METRICS_LISTEN {addr}")))?;
    }
    match args.interval() {
        Some(i) => Ok(Some(
            stats::spawn_logger(who, Arc::clone(counters), i, Arc::clone(stop))
                .map_err(Error::io("stats thread"))?,
        )),
        None => Ok(None),
    }
}

fn join_until(h: JoinHandle<()>, deadline: Instant) {
    while !h.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if h.is_finished() {
        let _ = h.join();
    }
}

fn start_receiver(
    args: &CollectorArgs,
    queue: collector::Queue,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Result<(JoinHandle<()>, SocketAddr), Error> {
    let addr = args.addr();
    let (sock, granted) = collector::bind(addr, args.receive_buffer).map_err(Error::io(
        format!("cannot listen on UDP {addr} (NETFLOW_PORT)"),
    ))?;
    let local = sock.local_addr().map_err(Error::io("local address"))?;
    info!(%local, requested = args.receive_buffer, granted, "listening for NetFlow (UDP); receive buffer granted by the kernel");
    if granted < args.receive_buffer {
        warn!(
            granted,
            requested = args.receive_buffer,
            "the kernel granted a smaller receive buffer; raise net.core.rmem_max to avoid losses at high rates"
        );
    }
    let h = collector::spawn_receiver(sock, queue, Arc::clone(counters), Arc::clone(stop))
        .map_err(Error::io("receiver thread"))?;
    Ok((h, local))
}

/// Runs the collector until SIGINT/SIGTERM.
pub fn run_collector(cli: &CollectorCli) -> Result<(), Error> {
    let path = cli.pipe.path()?.to_path_buf();
    collector::ensure_fifo(&path)
        .map_err(Error::io(format!("NAMED_PIPE_FILENAME {}", path.display())))?;
    let stop = stop_flag()?;
    let counters = Arc::new(Counters::default());
    let (q, rx) = collector::queue_of_bytes(cli.collector.queue_bytes);
    let (recv, _) = start_receiver(&cli.collector, q, &counters, &stop)?;
    let sender = collector::spawn_pipe_sender(path, rx, Arc::clone(&counters), Arc::clone(&stop))
        .map_err(Error::io("pipe thread"))?;
    let stats_thread = start_stats("collector", &cli.stats, &counters, &stop)?;
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
    }
    info!("stopping: forwarding what is queued");
    let _ = recv.join();
    join_until(sender, Instant::now() + Duration::from_secs(5));
    if let Some(h) = stats_thread {
        let _ = h.join();
    }
    counters.log("collector");
    Ok(())
}

/// Opens the store for `role` (who uses this connection: "writer", "bot", "query"...),
/// retrying (with a log line) while it is unreachable, until `stop`. One "store open" line per
/// store opened, naming its role.
pub fn open_store(
    args: &StoreArgs,
    role: &'static str,
    stop: &AtomicBool,
) -> Result<Box<dyn Store>, Error> {
    let cfg = args.store_config()?;
    let mut backoff = crate::backoff::store_backoff();
    loop {
        match netflow_store::open(&cfg) {
            Ok(s) => {
                info!(store = %args.describe(), role, "store open");
                return Ok(s);
            }
            Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                warn!(store = %args.describe(), role, error = %e, "store unreachable; retrying");
                thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn writer_config(args: &WriterArgs) -> WriterConfig {
    let mut cfg = WriterConfig::new(&args.state_dir);
    cfg.batch_flows = args.batch_flows.max(1);
    cfg.max_buffered_flows = args.max_buffered_flows;
    cfg.spool_max_bytes = args.spool_max_bytes;
    cfg.sampling_overrides = args.sampling_overrides.0.clone();
    cfg
}

/// Runs the writer until SIGINT/SIGTERM.
pub fn run_writer(cli: &WriterCli) -> Result<(), Error> {
    let path = cli.pipe.path()?.to_path_buf();
    std::fs::create_dir_all(&cli.writer.state_dir).map_err(Error::io(format!(
        "STATE_DIR {}",
        cli.writer.state_dir.display()
    )))?;
    let stop = stop_flag()?;
    let counters = Arc::new(Counters::default());
    let (q, rx) = collector::queue(1 << 16, 64 << 20);
    let reader =
        writer::spawn_pipe_reader(path.clone(), q, Arc::clone(&counters), Arc::clone(&stop))
            .map_err(Error::io(format!("NAMED_PIPE_FILENAME {}", path.display())))?;
    let store = open_store(&cli.store, "writer", &stop)?;
    let stats_thread = start_stats("writer", &cli.stats, &counters, &stop)?;
    let mut w = Writer::new(store, writer_config(&cli.writer), Arc::clone(&counters));
    // On SIGTERM/SIGINT the reader drains the pipe and ends; the writer loop ends when the
    // queue it filled is empty (`Disconnected`), so every drained frame is written.
    let never = AtomicBool::new(false);
    writer::run(&mut w, &rx, &never);
    let _ = reader.join();
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = stats_thread {
        let _ = h.join();
    }
    counters.log("writer");
    Ok(())
}

fn client(args: &BackendArgs, url: &str) -> Result<Client, Error> {
    args.client(url)
}

fn bot_config(args: &BackendArgs, once: bool) -> BotConfig {
    BotConfig {
        jobs_refresh: Duration::from_secs(args.jobs_refresh_interval),
        once,
        ..BotConfig::default()
    }
}

/// Runs the bot until SIGINT/SIGTERM (or, with `--once`, after one run of every job).
pub fn run_bot(cli: &BotCli) -> Result<(), Error> {
    let url = cli
        .backend
        .url()
        .ok_or(Error::Setting(
            "BACKEND_URL",
            "not set (the Grafolean API URL, e.g. https://grafolean.example.com/api)".into(),
        ))?
        .to_owned();
    let client = client(&cli.backend, &url)?;
    let stop = stop_flag()?;
    let counters = Arc::new(Counters::default());
    let store = open_store(&cli.store, "bot", &stop)?;
    let stats_thread = start_stats("bot", &cli.stats, &counters, &stop)?;
    let mut bot = Bot::new(
        client,
        store,
        bot_config(&cli.backend, cli.once),
        Arc::clone(&counters),
    );
    let r = bot.run(&stop);
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = stats_thread {
        let _ = h.join();
    }
    counters.log("bot");
    r
}

/// Runs collector, writer and bot (or the table printer) as threads until SIGINT/SIGTERM.
pub fn run_all_in_one(cli: &AllInOneCli) -> Result<(), Error> {
    let backend = match cli.backend.url() {
        Some(url) => Some(client(&cli.backend, url)?),
        None => None,
    };
    std::fs::create_dir_all(&cli.writer.state_dir).map_err(Error::io(format!(
        "STATE_DIR {}",
        cli.writer.state_dir.display()
    )))?;
    let stop = stop_flag()?;
    let counters = Arc::new(Counters::default());
    let (q, rx) = collector::queue_of_bytes(cli.collector.queue_bytes);
    let store = open_store(&cli.store, "writer", &stop)?;
    let (recv, local) = start_receiver(&cli.collector, q, &counters, &stop)?;
    let wstop = Arc::new(AtomicBool::new(false));
    let mut w = Writer::new(store, writer_config(&cli.writer), Arc::clone(&counters));
    let wstop2 = Arc::clone(&wstop);
    let writer_thread = thread::Builder::new()
        .name("writer".into())
        .spawn(move || writer::run(&mut w, &rx, &wstop2))
        .map_err(Error::io("writer thread"))?;
    let mut report_store = open_store(&cli.store, "report", &stop)?;
    let report_stop = Arc::clone(&stop);
    let report = match backend {
        Some(c) => {
            info!("sending aggregates to Grafolean");
            let mut bot = Bot::new(
                c,
                report_store,
                bot_config(&cli.backend, false),
                Arc::clone(&counters),
            );
            thread::Builder::new().name("bot".into()).spawn(move || {
                if let Err(e) = bot.run(&report_stop) {
                    error!(error = %e, "bot stopped");
                }
            })
        }
        None => {
            info!(
                every = cli.table_interval,
                "BACKEND_URL not set: printing each window's aggregates on stdout"
            );
            let every = Duration::from_secs(cli.table_interval);
            thread::Builder::new().name("table".into()).spawn(move || {
                let mut out = std::io::stdout();
                if let Err(e) =
                    crate::bot::table::run(report_store.as_mut(), every, &mut out, &report_stop)
                {
                    error!(error = %e, "table printer stopped");
                }
            })
        }
    }
    .map_err(Error::io("bot thread"))?;
    if cli.demo {
        let target = SocketAddr::new(
            if local.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                local.ip()
            },
            local.port(),
        );
        let demo_stop = Arc::clone(&stop);
        let opts = crate::generator::Options::demo(target);
        thread::Builder::new()
            .name("demo".into())
            .spawn(move || {
                if let Err(e) = crate::generator::run(&opts, None, &demo_stop) {
                    warn!(error = %e, "demo generator stopped");
                }
            })
            .map_err(Error::io("demo thread"))?;
        info!(%target, "demo generator sending flows");
    }
    let stats_thread = start_stats("netflow", &cli.stats, &counters, &stop)?;
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
    }
    info!("stopping: flushing buffered flows");
    let _ = recv.join();
    wstop.store(true, Ordering::Relaxed);
    let _ = writer_thread.join();
    join_until(report, Instant::now() + Duration::from_secs(5));
    if let Some(h) = stats_thread {
        let _ = h.join();
    }
    counters.log("netflow");
    Ok(())
}

/// Maps a run result to the exit code, printing the error chain once.
pub fn exit_code(name: &str, r: Result<(), Error>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(": ");
                    msg.push_str(&t);
                }
                src = s.source();
            }
            eprintln!("{name}: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn test_command_lines_are_consistent() {
        CollectorCli::command().debug_assert();
        WriterCli::command().debug_assert();
        BotCli::command().debug_assert();
        AllInOneCli::command().debug_assert();
    }
}
