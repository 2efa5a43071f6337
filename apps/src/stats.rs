//! Counters of every stage, the periodic stats line, per-exporter stats, rate-limited warnings
//! and the optional Prometheus text endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        /// Process-wide counters, shared by every thread (relaxed atomics).
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $help] pub $name: AtomicU64,)*
            /// Decode failures by reason.
            pub decode_errors: Mutex<BTreeMap<&'static str, u64>>,
            /// Per exporter.
            pub exporters: Mutex<BTreeMap<IpAddr, ExporterStats>>,
        }

        impl Counters {
            /// Every plain counter with its name and help text.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    packets_received: "UDP datagrams received",
    bytes_received: "UDP payload bytes received",
    socket_drops: "datagrams the kernel dropped because the socket receive buffer was full",
    queue_drops: "datagrams dropped because the bounded queue was full (consumer absent or slow)",
    pipe_frames: "frames written to the named pipe",
    pipe_reconnects: "times the named pipe was (re)opened",
    frames_read: "frames read from the named pipe",
    frames_skipped_bytes: "bytes skipped in the pipe stream (cut or damaged frames)",
    packets_decoded: "datagrams decoded",
    flows_decoded: "normalized flows decoded",
    template_misses: "data sets that arrived before their template (kept pending)",
    sets_lost: "data sets lost (template never came or pending buffer full)",
    exporters_evicted: "exporters whose templates were evicted from the full template cache (least recently seen first) to admit a new exporter",
    sequence_lost: "units (v5 flows, v9 packets, IPFIX records) missing in exporters' sequence numbers, as they read now (a late packet lowers it)",
    flows_stored: "flows written to the store",
    flows_late: "flows stored out of order (ts at or before the newest stored ts): the bot folds those its jobs already missed into their next windows",
    flows_buffered: "flows waiting in memory for the store",
    flows_spooled: "flows written to the on-disk spool",
    flows_dropped: "flows dropped by the writer (spool full or store refused them)",
    db_errors: "failed store operations",
    values_sent: "values posted to Grafolean",
    post_errors: "failed values POSTs (after retries)",
    jobs_run: "aggregation jobs run",
    late_flows_aggregated: "late flows folded into a job's next window (once per job)",
    posts_outcome_unknown: "values POSTs that timed out or lost the connection after sending: maybe stored, not sent again",
    values_outcome_unknown: "values in those POSTs",
}

/// Per exporter counters (the writer's view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExporterStats {
    /// Datagrams decoded.
    pub packets: u64,
    /// Flows decoded.
    pub flows: u64,
    /// Flows written to the store.
    pub stored: u64,
    /// Flows the writer dropped (store refused them, or memory bound and spool full).
    pub dropped: u64,
    /// Sequence-number units received (v5 flows, v9 packets).
    pub seq_received: u64,
    /// Sequence-number units lost.
    pub seq_lost: u64,
}

impl ExporterStats {
    /// Flows decoded and neither stored nor dropped yet: waiting in the current batch, in
    /// memory while the store is down, or in the spool. Not a loss.
    pub fn in_flight(&self) -> u64 {
        self.flows
            .saturating_sub(self.stored.saturating_add(self.dropped))
    }

    /// Share of the flows the exporter sent that are stored or on their way to the store (in
    /// flight), estimated from sequence numbers: units lost are converted to flows at the
    /// observed flows per unit, and the writer's drops count as lost. 100 % when nothing is
    /// lost, however many flows are still in flight. `None` before data.
    pub fn stored_share(&self) -> Option<f64> {
        if self.flows == 0 || self.seq_received == 0 {
            return None;
        }
        let flows_per_unit = self.flows as f64 / self.seq_received as f64;
        let sent = self.flows as f64 + self.seq_lost as f64 * flows_per_unit;
        let kept = self.flows.saturating_sub(self.dropped) as f64;
        Some((kept / sent).min(1.0))
    }
}

impl Counters {
    /// Adds one to a decode-error reason.
    pub fn decode_error(&self, reason: &'static str) {
        if let Ok(mut m) = self.decode_errors.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Updates one exporter's stats.
    pub fn exporter(&self, addr: IpAddr, f: impl FnOnce(&mut ExporterStats)) {
        if let Ok(mut m) = self.exporters.lock() {
            // Bounded: the decoder's exporter limit applies upstream; cap here too.
            if m.len() < 100_000 || m.contains_key(&addr) {
                f(m.entry(addr).or_default());
            }
        }
    }

    /// The stats line: every non-zero counter (`name=value`), then decode errors.
    pub fn line(&self) -> String {
        let mut s = String::new();
        for (name, _, v) in self.snapshot() {
            if v != 0 {
                let _ = write!(s, "{name}={v} ");
            }
        }
        if let Ok(m) = self.decode_errors.lock() {
            for (k, v) in m.iter() {
                let _ = write!(s, "decode_error.{k}={v} ");
            }
        }
        if s.is_empty() {
            s.push_str("idle");
        }
        s.trim_end().to_owned()
    }

    /// Prometheus text exposition of every counter.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        for (name, help, v) in self.snapshot() {
            let kind = if matches!(name, "flows_buffered" | "sequence_lost") {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(
                s,
                "# HELP netflow_{name} {help}\n# TYPE netflow_{name} {kind}\nnetflow_{name} {v}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP netflow_decode_errors decode failures by reason\n# TYPE netflow_decode_errors counter"
        );
        if let Ok(m) = self.decode_errors.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(s, "netflow_decode_errors{{reason=\"{k}\"}} {v}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP netflow_exporter_flows flows decoded per exporter\n# TYPE netflow_exporter_flows counter"
        );
        if let Ok(m) = self.exporters.lock() {
            for (a, e) in m.iter() {
                let _ = writeln!(s, "netflow_exporter_flows{{exporter=\"{a}\"}} {}", e.flows);
                let _ = writeln!(
                    s,
                    "netflow_exporter_flows_stored{{exporter=\"{a}\"}} {}",
                    e.stored
                );
                let _ = writeln!(
                    s,
                    "netflow_exporter_flows_in_flight{{exporter=\"{a}\"}} {}",
                    e.in_flight()
                );
                let _ = writeln!(
                    s,
                    "netflow_exporter_flows_dropped{{exporter=\"{a}\"}} {}",
                    e.dropped
                );
                let _ = writeln!(
                    s,
                    "netflow_exporter_sequence_lost{{exporter=\"{a}\"}} {}",
                    e.seq_lost
                );
            }
        }
        s
    }

    /// Logs the stats line and one line per exporter.
    pub fn log(&self, who: &str) {
        tracing::info!(target: "netflow::stats", "{who} stats: {}", self.line());
        if let Ok(m) = self.exporters.lock() {
            for (a, e) in m.iter() {
                let share = e
                    .stored_share()
                    .map_or_else(|| "n/a".to_owned(), |s| format!("{:.2}%", s * 100.0));
                tracing::info!(
                    target: "netflow::stats",
                    "{who} exporter {a}: packets={} flows={} stored={} in_flight={} dropped={} sequence_lost={} stored_share={share}",
                    e.packets, e.flows, e.stored, e.in_flight(), e.dropped, e.seq_lost
                );
            }
        }
    }
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Takes `n` from a gauge, stopping at 0.
pub fn sub(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Lets a warning through at most once per period, counting the suppressed ones.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one message per `period`.
    pub fn new(period: Duration) -> RateLimit {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last one)` when a message may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Starts the stats thread: logs the stats line every `interval` until `stop`.
pub fn spawn_logger(
    who: &'static str,
    counters: Arc<Counters>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name("stats".into()).spawn(move || {
        let mut next = Instant::now() + interval;
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(100));
            if Instant::now() >= next {
                counters.log(who);
                next += interval;
            }
        }
    })
}

/// Serves `GET /metrics` (any path, in fact) as Prometheus text on `addr`. Returns the bound
/// address (useful with port 0).
pub fn spawn_metrics(addr: SocketAddr, counters: Arc<Counters>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let body = counters.prometheus();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    tracing::info!(%local, "Prometheus metrics endpoint listening");
    Ok(local)
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stored_share() {
        let e = ExporterStats {
            packets: 10,
            flows: 300,
            stored: 300,
            seq_received: 10,
            seq_lost: 10,
            dropped: 0,
        };
        assert_eq!(e.stored_share(), Some(0.5));
        assert_eq!(ExporterStats::default().stored_share(), None);
        // issue 12: flows waiting in the current batch are not lost
        let waiting = ExporterStats {
            stored: 8424,
            flows: 8568,
            seq_received: 8568,
            ..ExporterStats::default()
        };
        assert_eq!(waiting.in_flight(), 144);
        assert_eq!(waiting.stored_share(), Some(1.0));
        let dropped = ExporterStats {
            dropped: 4284,
            ..waiting
        };
        assert_eq!(dropped.stored_share(), Some(0.5));
    }

    #[test]
    fn test_line_and_prometheus() {
        let c = Counters::default();
        assert_eq!(c.line(), "idle");
        add(&c.flows_stored, 5);
        c.decode_error("version");
        assert_eq!(c.line(), "flows_stored=5 decode_error.version=1");
        assert!(c.prometheus().contains("netflow_flows_stored 5\n"));
        assert!(
            c.prometheus()
                .contains("netflow_decode_errors{reason=\"version\"} 1")
        );
    }

    #[test]
    fn test_rate_limit() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
    }
}
