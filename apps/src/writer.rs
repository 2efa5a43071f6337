//! The writer: datagrams in, normalized flows out to the store, in batches.
//!
//! One [`Decoder`] (one template cache for every exporter), a [`SequenceTracker`] per exporter
//! and source id, batches flushed by size or after at most [`WriterConfig::flush_interval`],
//! exporters recorded in the store. Where batches go is [`Delivery`]'s: while the store is
//! unreachable they wait in memory up to [`WriterConfig::max_buffered_flows`], then in the
//! on-disk spool; they are written, oldest first, when it is back. Templates are saved to [`WriterConfig::templates_file`] and loaded at
//! start, so that data arriving before the exporters' next template refresh is still decoded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netflow_store::{Exporter, Store};

use netflow_wire::{DecodeError, Decoder, ExporterKey, Flow, Limits, sequence::SequenceAdvance};
use tracing::{debug, info, warn};

use crate::collector::QueueRx;
use crate::delivery::Delivery;
use crate::frame::Datagram;
use crate::sequence_loss::SequenceLoss;
use crate::stats::{self, Counters, RateLimit};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Flows per store batch.
    pub batch_flows: usize,
    /// Longest time a flow waits before its batch is written.
    pub flush_interval: Duration,
    /// Flows held in memory while the store is down; older batches then go to the spool.
    pub max_buffered_flows: usize,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool size limit in bytes.
    pub spool_max_bytes: u64,
    /// Template cache snapshot file (`None`: not persisted).
    pub templates_file: Option<PathBuf>,
    /// Sampling rates imposed on exporters that do not announce theirs.
    pub sampling_overrides: Vec<(std::net::IpAddr, u32)>,
}

impl WriterConfig {
    /// Defaults with the state (templates, spool) in `state_dir`.
    pub fn new(state_dir: &std::path::Path) -> WriterConfig {
        WriterConfig {
            batch_flows: 20_000,
            flush_interval: Duration::from_secs(1),
            max_buffered_flows: 500_000,
            spool_dir: state_dir.join("netflow-spool"),
            spool_max_bytes: 1 << 30,
            templates_file: Some(state_dir.join("netflow-templates.bin")),
            sampling_overrides: Vec::new(),
        }
    }
}

/// What the store's exporters table has not been told yet about one exporter.
#[derive(Debug, Default, Clone, Copy)]
struct ExporterDelta {
    first: i64,
    last: i64,
    packets: u64,
    flows: u64,
    /// Signed: a late packet, or the tracker settling on how the exporter counts, takes back
    /// units reported missing before.
    lost_packets: i64,
    lost_flows: i64,
}

impl ExporterDelta {
    /// One datagram received at `ts` with `flows` of its own, and the change `lost` it made to
    /// the sequence units missing (flows for v5, packets otherwise).
    fn datagram(&mut self, ts: i64, flows: u64, lost: i64, v5: bool) {
        if self.first == 0 || ts < self.first {
            self.first = ts;
        }
        self.last = self.last.max(ts);
        self.packets += 1;
        self.flows += flows;
        if v5 {
            self.lost_flows += lost;
        } else {
            self.lost_packets += lost;
        }
    }

    fn exporter(&self, addr: IpAddr) -> Exporter {
        Exporter {
            addr,
            first_seen_micros: if self.first == 0 {
                self.last
            } else {
                self.first
            },
            last_seen_micros: self.last.max(self.first),
            packets: self.packets,
            flows: self.flows,
            lost_packets: self.lost_packets.max(0).unsigned_abs(),
            lost_flows: self.lost_flows.max(0).unsigned_abs(),
        }
    }
}

/// The writer's state. Feed it with [`Writer::handle`], call [`Writer::tick`] often (it
/// flushes when due) and [`Writer::shutdown`] at the end.
///
/// It decodes and batches; where the batches go, and what happens while the store is down,
/// is [`Delivery`]'s.
#[derive(Debug)]
pub struct Writer {
    cfg: WriterConfig,
    decoder: Decoder,
    seq: SequenceLoss,
    batch: Vec<Flow>,
    batch_started: Option<Instant>,
    delivery: Delivery,
    exporters: HashMap<IpAddr, ExporterDelta>,
    counters: Arc<Counters>,
    saved_templates: Vec<u8>,
    templates_checked: Instant,
    warn_decode: RateLimit,
    warn_seq: RateLimit,
    warn_evict: RateLimit,
    /// The decoder's eviction count already added to the counters.
    evicted_seen: u64,
}

fn reason(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::Version(_) => "unsupported_version",
        DecodeError::BadLength { .. } => "bad_length",
        DecodeError::TooManyRecords(_) => "too_many_records",
        DecodeError::BadSetLength { .. } => "bad_set_length",
        DecodeError::ReservedSetId { .. } => "reserved_set_id",
        DecodeError::BadTemplate { .. } => "bad_template",
        DecodeError::LimitExceeded { .. } => "limit_exceeded",
        DecodeError::PendingDropped { .. } => "pending_dropped",
        DecodeError::RecordOverrun { .. } => "record_overrun",
        DecodeError::TrailingBytes { .. } => "trailing_bytes",
        _ => "other",
    }
}

/// A decoder with the configured sampling overrides and the saved templates (returned as the
/// snapshot they were loaded from).
fn decoder(cfg: &WriterConfig) -> (Decoder, Vec<u8>) {
    let mut decoder = Decoder::new(Limits::default());
    for &(addr, rate) in &cfg.sampling_overrides {
        decoder.set_sampling_override(addr, Some(rate));
        info!(exporter = %addr, rate, "sampling rate set by configuration");
    }
    let Some(path) = &cfg.templates_file else {
        return (decoder, Vec::new());
    };
    match std::fs::read(path) {
        Ok(bytes) => match decoder.cache_mut().import(&bytes) {
            Ok(n) => {
                info!(templates = n, file = %path.display(), "templates loaded");
                return (decoder, bytes);
            }
            Err(e) => {
                warn!(error = %e, file = %path.display(), "template snapshot unreadable, ignored")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(error = %e, file = %path.display(), "cannot read template snapshot"),
    }
    (decoder, Vec::new())
}

impl Writer {
    /// A writer over `store`, loading the saved templates and opening the spool.
    pub fn new(store: Box<dyn Store>, cfg: WriterConfig, counters: Arc<Counters>) -> Writer {
        let (decoder, saved) = decoder(&cfg);
        let delivery = Delivery::new(
            store,
            cfg.max_buffered_flows,
            &cfg.spool_dir,
            cfg.spool_max_bytes,
            Arc::clone(&counters),
        );
        let period = Duration::from_secs(10);
        Writer {
            batch: Vec::with_capacity(cfg.batch_flows),
            cfg,
            decoder,
            seq: SequenceLoss::default(),
            batch_started: None,
            delivery,
            exporters: HashMap::new(),
            counters,
            saved_templates: saved,
            templates_checked: Instant::now(),
            warn_decode: RateLimit::new(period),
            warn_seq: RateLimit::new(period),
            warn_evict: RateLimit::new(period),
            evicted_seen: 0,
        }
    }

    /// Decodes one datagram, adds its flows to the batch and accounts for it (decode issues,
    /// sequence numbers, the exporter's counters).
    pub fn handle(&mut self, d: &Datagram) {
        let exporter = d.exporter.ip();
        let c = Arc::clone(&self.counters);
        let decoded = match self
            .decoder
            // `decode`, not `decode_bytes`: a payload from the collector is a slice of a
            // 1 MiB receive block, which a pending set would keep alive whole.
            .decode(ExporterKey::from(exporter), d.ts_micros, &d.payload)
        {
            Ok(x) => x,
            Err(e) => {
                c.decode_error(reason(&e));
                if let Some(suppressed) = self.warn_decode.allow() {
                    warn!(%exporter, error = %e, suppressed, "datagram not decodable");
                }
                return;
            }
        };
        stats::add(&c.packets_decoded, 1);
        let header = decoded.header();
        let mut own_flows: u64 = 0;
        let mut n_flows: u64 = 0;
        // `for_each` (internal iteration) picks the record reader once per set.
        decoded.flows().for_each(|f| {
            n_flows += 1;
            let f = f.renormalized();
            if f.exporter == exporter {
                own_flows += 1;
            } else {
                // Released pending set of another exporter.
                c.exporter(f.exporter, |s| s.flows += 1);
                self.exporters.entry(f.exporter).or_default().flows += 1;
            }
            self.batch.push(f);
        });
        stats::add(&c.flows_decoded, n_flows);
        stats::add(&c.template_misses, decoded.waiting_count() as u64);
        for e in decoded.issues() {
            if let DecodeError::PendingDropped { .. } = e {
                stats::add(&c.sets_lost, 1);
            }
            c.decode_error(reason(e));
        }
        // A datagram lists its first 64 problems; the rest are counted only.
        for _ in decoded.issues().len()..decoded.issue_count() {
            c.decode_error("unlisted");
        }
        let expired = decoded.expired_count() as u64;
        if expired > 0 {
            stats::add(&c.sets_lost, expired);
            if let Some(suppressed) = self.warn_decode.allow() {
                warn!(
                    expired,
                    suppressed, "data sets given up: their template never arrived"
                );
            }
        }
        // What the exporter's sequence number counts for this datagram (IPFIX: its own data
        // records, options included; released pending sets belong to earlier datagrams).
        let units = SequenceAdvance::of(&header, decoded.data_records(), decoded.options_records());
        let key = ExporterKey::from(exporter);
        let lost = self.seq.observe(key, &header, units);
        if lost > 0 {
            stats::add(&c.sequence_lost, lost.unsigned_abs());
            if let Some(suppressed) = self.warn_seq.allow() {
                warn!(%exporter, version = header.version, source_id = header.source_id, missing = lost, suppressed, "sequence gap: exporter data lost before it reached us");
            }
        } else if lost < 0 {
            stats::sub(&c.sequence_lost, lost.unsigned_abs());
        }
        c.exporter(exporter, |s| {
            s.packets += 1;
            s.flows += own_flows;
            s.seq_received += u64::from(units.all);
            s.seq_lost = s.seq_lost.saturating_add_signed(lost);
        });
        self.exporters.entry(exporter).or_default().datagram(
            d.ts_micros,
            own_flows,
            lost,
            header.version == 5,
        );
        self.count_evictions(exporter);
        if self.batch_started.is_none() && !self.batch.is_empty() {
            self.batch_started = Some(Instant::now());
        }
        if self.batch.len() >= self.cfg.batch_flows {
            self.flush();
        }
    }

    /// Counts and logs (rate-limited) exporters the decoder evicted from its full cache.
    fn count_evictions(&mut self, exporter: IpAddr) {
        let evicted = self.decoder.exporters_evicted() - self.evicted_seen;
        if evicted > 0 {
            self.evicted_seen += evicted;
            stats::add(&self.counters.exporters_evicted, evicted);
            if let Some(suppressed) = self.warn_evict.allow() {
                warn!(%exporter, evicted, suppressed, "template cache full: the exporter seen least recently was evicted (its data waits for its next template refresh)");
            }
        }
    }

    /// Flushes when the batch is old enough, retries the store when due, saves templates.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if self
            .batch_started
            .is_some_and(|t| now.duration_since(t) >= self.cfg.flush_interval)
            || self.delivery.retry_due(now)
        {
            self.flush();
        }
        if now.duration_since(self.templates_checked) >= Duration::from_secs(2) {
            self.templates_checked = now;
            self.save_templates();
            self.decoder.expire(stats::now_micros());
            let expired = self.decoder.expired_count() as u64;
            stats::add(&self.counters.sets_lost, expired);
        }
        if self.batch.is_empty() {
            self.delivery.heartbeat(now);
        }
    }

    /// Hands the batch to the delivery, which writes what the store takes; records the
    /// exporters once the store is caught up.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            let b = std::mem::replace(&mut self.batch, Vec::with_capacity(self.cfg.batch_flows));
            self.delivery.push(b);
            self.batch_started = None;
        }
        if self.delivery.deliver() {
            self.write_exporters();
        }
    }

    fn write_exporters(&mut self) {
        if self.exporters.is_empty() {
            return;
        }
        let deltas: Vec<Exporter> = self.exporters.iter().map(|(a, d)| d.exporter(*a)).collect();
        if self.delivery.upsert_exporters(&deltas) {
            self.exporters.clear();
        }
    }

    /// Writes the template snapshot if it changed (atomically: temporary file and rename).
    pub fn save_templates(&mut self) {
        let Some(path) = self.cfg.templates_file.clone() else {
            return;
        };
        let snap = self.decoder.cache().export();
        if snap == self.saved_templates {
            return;
        }
        let tmp = path.with_extension("tmp");
        match std::fs::write(&tmp, &snap).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => {
                debug!(templates = self.decoder.cache().len(), "templates saved");
                self.saved_templates = snap;
            }
            Err(e) => warn!(error = %e, file = %path.display(), "cannot save templates"),
        }
    }

    /// Final flush: writes what the store takes, spools the rest, saves templates. Returns
    /// the flows that could not be written nor spooled (counted as dropped).
    pub fn shutdown(&mut self) -> usize {
        if !self.batch.is_empty() {
            self.delivery.push(std::mem::take(&mut self.batch));
        }
        let lost = self.delivery.shutdown();
        self.save_templates();
        lost
    }

    /// Flows in the batch and waiting for the store.
    pub fn buffered(&self) -> usize {
        self.batch.len() + self.delivery.buffered()
    }
}

/// Runs the writer on datagrams from `rx` until `stop` (or every sender is gone), then
/// shuts it down.
pub fn run(writer: &mut Writer, rx: &QueueRx, stop: &AtomicBool) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(d) => {
                writer.handle(&d);
                // Take what is queued without waiting.
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Some(d) => writer.handle(&d),
                        None => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        writer.tick();
        if stop.load(Ordering::Relaxed) {
            // Drain what the queue still holds, then stop.
            while let Some(d) = rx.try_recv() {
                writer.handle(&d);
            }
            break;
        }
    }
    let lost = writer.shutdown();
    if lost > 0 {
        warn!(
            lost,
            "flows lost at shutdown (store down and spool unavailable)"
        );
    }
}

/// Longest time the pipe reader keeps draining the named pipe after SIGTERM/SIGINT (when the
/// collector writes as fast as it is read, the pipe never runs empty).
pub const PIPE_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Kernel buffer asked for the named pipe (Linux allows up to `/proc/sys/fs/pipe-max-size`,
/// 1 MiB by default): fewer wake-ups at high rates, more room while the writer restarts.
pub const PIPE_SIZE: usize = 1 << 20;

/// Reads frames from the named pipe at `path` (created if missing) into `queue` until `stop`,
/// then drains it: reads on, without blocking, until the pipe is empty (or for at most
/// [`PIPE_DRAIN_LIMIT`]), so that frames sitting in the kernel's pipe buffer are not lost
/// when the writer restarts. The thread then ends and drops `queue`, which tells the writer
/// loop ([`run`]) that nothing more will come.
///
/// The pipe is opened read-write, so the reader never sees end-of-file when a collector exits
/// and simply waits for the next one; a frame cut by a killed collector is skipped by the
/// checksum ([`crate::frame`]). When `queue` is full it waits (back-pressure reaches the
/// collector's bounded queue, which counts its drops).
pub fn spawn_pipe_reader(
    path: PathBuf,
    queue: crate::collector::Queue,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::collector::ensure_fifo(&path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&path)?;
    match rustix::pipe::fcntl_setpipe_size(&file, PIPE_SIZE) {
        Ok(n) => debug!(bytes = n, "named pipe buffer size"),
        Err(e) => debug!(error = %e, "named pipe buffer size unchanged"),
    }
    info!(path = %path.display(), "reading frames from the named pipe");
    std::thread::Builder::new()
        .name("pipe-read".into())
        .spawn(move || {
            let mut r = crate::frame::FrameReader::new(file);
            let mut skipped = 0;
            let mut drain: Option<(Instant, u64)> = None;
            let mut last_data = Instant::now();
            loop {
                if drain.is_none() && stop.load(Ordering::Relaxed) {
                    drain = Some((Instant::now() + PIPE_DRAIN_LIMIT, r.stats().frames));
                }
                if let Some((deadline, _)) = drain
                    && Instant::now() >= deadline
                {
                    warn!(
                        limit = ?PIPE_DRAIN_LIMIT,
                        "named pipe still not empty; the rest waits there for the next writer"
                    );
                    break;
                }
                match r.next_frame() {
                    Ok(Some(d)) => {
                        last_data = Instant::now();
                        stats::add(&counters.frames_read, 1);
                        let s = r.stats().skipped_bytes;
                        if s != skipped {
                            stats::add(&counters.frames_skipped_bytes, s - skipped);
                            warn!(
                                bytes = s - skipped,
                                "damaged or cut frames skipped in the named pipe"
                            );
                            skipped = s;
                        }
                        if !queue.push_wait(d) {
                            return;
                        }
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Empty. When draining, done, unless a frame is half read: the
                        // collector is writing it, wait a little for the rest.
                        if drain.is_some()
                            && (r.buffered() == 0
                                || last_data.elapsed() > Duration::from_millis(500))
                        {
                            break;
                        }
                        wait_readable(r.get_ref(), Duration::from_millis(100));
                    }
                    Err(e) => {
                        warn!(error = %e, "reading the named pipe failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            let drained = drain.map_or(0, |(_, at)| r.stats().frames - at);
            info!(
                frames = drained,
                unread_bytes = r.buffered(),
                "named pipe drained"
            );
        })
}

/// Waits until `f` is readable or `timeout` passed.
fn wait_readable(f: &std::fs::File, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let t = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(f, PollFlags::IN)];
    if rustix::event::poll(&mut fds, Some(&t)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// SIGTERM with frames still in the kernel's pipe buffer: the reader reads them all, then
    /// ends, closing the queue so that the writer loop ends once it has handled them.
    #[test]
    fn test_pipe_reader_drains_the_pipe_before_ending() {
        let dir = std::env::temp_dir().join(format!("netflow-drain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("pipe");
        crate::collector::ensure_fifo(&path).expect("fifo");
        // The collector's end (read-write, so that opening does not wait for a reader).
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut buf = Vec::new();
        for i in 0..200u8 {
            let d = Datagram {
                exporter: "192.0.2.1:2055".parse().expect("addr"),
                ts_micros: i64::from(i),
                payload: vec![i; 100].into(),
            };
            crate::frame::encode(&mut buf, &d).expect("encode");
        }
        w.write_all(&buf).expect("write");
        let stop = Arc::new(AtomicBool::new(true)); // the signal came before the reader ran
        let (q, rx) = crate::collector::queue(1000, 1 << 20);
        let counters = Arc::new(Counters::default());
        let h = spawn_pipe_reader(path, q, Arc::clone(&counters), stop).expect("spawn");
        h.join().expect("join");
        let mut got = Vec::new();
        while let Some(d) = rx.try_recv() {
            got.push(d.ts_micros);
        }
        assert_eq!(got, (0..200).collect::<Vec<i64>>());
        assert_eq!(counters.frames_read.load(Ordering::Relaxed), 200);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
