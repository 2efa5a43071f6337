//! Batches on their way to the store, and the back-pressure while it is down.
//!
//! [`Delivery`] writes batches oldest first. While the store is unreachable they wait in memory
//! up to a bound of flows, then older ones go to the on-disk [`Spool`]; they are written,
//! spool first, when the store is back, with [`Backoff`] between attempts. A batch the store
//! refuses for good, or one that finds memory and spool full, is dropped and counted (in
//! total and per exporter). An idle delivery writes an empty batch now and then (a no-op on
//! PostgreSQL and SQLite; on ClickHouse the heartbeat that keeps an idle writer's shard from
//! holding back the readers of a Distributed table).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use netflow_store::{Exporter, Flow, Store};
use tracing::{debug, info, warn};

use crate::backoff::{self, Backoff};
use crate::spool::Spool;
use crate::stats::{self, Counters, RateLimit};

/// How often an idle delivery writes an empty batch (a heartbeat on ClickHouse).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);

/// What one write attempt did.
enum Write {
    Ok,
    Retry,
    Refused,
}

/// The store side of the writer: queue, memory bound, spool, retries.
#[derive(Debug)]
pub struct Delivery {
    store: Box<dyn Store>,
    pending: VecDeque<Vec<Flow>>,
    pending_flows: usize,
    max_buffered_flows: usize,
    spool: Option<Spool>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Last empty batch written while idle.
    heartbeat: Instant,
    counters: Arc<Counters>,
    warn_db: RateLimit,
    warn_drop: RateLimit,
}

impl Delivery {
    /// Delivery to `store`, holding at most `max_buffered_flows` in memory while it is down,
    /// then spooling to `spool_dir` up to `spool_max_bytes` (without a spool, the excess is
    /// dropped and counted).
    pub fn new(
        store: Box<dyn Store>,
        max_buffered_flows: usize,
        spool_dir: &Path,
        spool_max_bytes: u64,
        counters: Arc<Counters>,
    ) -> Delivery {
        let spool = match Spool::open(spool_dir, spool_max_bytes) {
            Ok(s) => {
                if !s.is_empty() {
                    info!(
                        batches = s.len(),
                        flows = s.flows(),
                        "spooled flows from an earlier run will be written"
                    );
                }
                Some(s)
            }
            Err(e) => {
                warn!(error = %e, dir = %spool_dir.display(), "spool unavailable: flows beyond the memory bound will be dropped while the database is down");
                None
            }
        };
        let period = Duration::from_secs(10);
        Delivery {
            store,
            pending: VecDeque::new(),
            pending_flows: 0,
            max_buffered_flows,
            spool,
            retry_at: None,
            backoff: backoff::store_backoff(),
            heartbeat: Instant::now(),
            counters,
            warn_db: RateLimit::new(period),
            warn_drop: RateLimit::new(period),
        }
    }

    /// Queues `batch` behind the others.
    pub fn push(&mut self, batch: Vec<Flow>) {
        if !batch.is_empty() {
            self.pending_flows += batch.len();
            self.pending.push_back(batch);
        }
    }

    /// Whether a retry after a store failure is due at `now`.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now >= t)
    }

    /// Writes what the store takes (unless a retry is not due yet), then keeps memory within
    /// its bound. True when everything queued was written.
    pub fn deliver(&mut self) -> bool {
        let caught_up = if self.retry_at.is_some_and(|t| Instant::now() < t) {
            false
        } else if self.drain() {
            self.retry_at = None;
            self.backoff.reset();
            true
        } else {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
            false
        };
        self.enforce_memory_bound();
        self.counters
            .flows_buffered
            .store(self.pending_flows as u64, Ordering::Relaxed);
        caught_up
    }

    /// When idle (nothing queued, no retry pending) for 20 s (`HEARTBEAT_INTERVAL`), writes an
    /// empty batch: the store's own upkeep of an idle writer.
    pub fn heartbeat(&mut self, now: Instant) {
        if now.duration_since(self.heartbeat) < HEARTBEAT_INTERVAL
            || self.retry_at.is_some()
            || !self.pending.is_empty()
        {
            return;
        }
        self.heartbeat = now;
        if let Err(e) = self.store.write_flows(&[]) {
            stats::add(&self.counters.db_errors, 1);
            debug!(error = %e, "store maintenance failed; next time");
        }
    }

    /// Adds exporter deltas to the store; false (counted, retried by the caller later) on
    /// error.
    pub fn upsert_exporters(&mut self, deltas: &[Exporter]) -> bool {
        match self.store.upsert_exporters(deltas) {
            Ok(()) => true,
            Err(e) => {
                stats::add(&self.counters.db_errors, 1);
                debug!(error = %e, "exporters not recorded yet");
                false
            }
        }
    }

    /// Final attempt: writes what the store takes now, spools the rest. Returns the flows
    /// that could be neither written nor spooled (counted as dropped).
    pub fn shutdown(&mut self) -> usize {
        self.retry_at = None;
        self.deliver();
        let mut lost = 0;
        while let Some(b) = self.pending.pop_front() {
            self.pending_flows -= b.len();
            match self.spool.as_mut().map(|s| s.push(&b)) {
                Some(Ok(true)) => stats::add(&self.counters.flows_spooled, b.len() as u64),
                _ => {
                    lost += b.len();
                    self.count_dropped(&b);
                }
            }
        }
        lost
    }

    /// Flows queued in memory.
    pub fn buffered(&self) -> usize {
        self.pending_flows
    }

    /// Writes spooled batches, then queued ones. `false` when the store failed.
    fn drain(&mut self) -> bool {
        if let Some(mut spool) = self.spool.take() {
            let ok = self.drain_spool(&mut spool);
            self.spool = Some(spool);
            if !ok {
                return false;
            }
        }
        while let Some(b) = self.pending.pop_front() {
            match self.write(&b) {
                Write::Ok | Write::Refused => self.pending_flows -= b.len(),
                Write::Retry => {
                    self.pending.push_front(b);
                    return false;
                }
            }
        }
        true
    }

    fn drain_spool(&mut self, spool: &mut Spool) -> bool {
        while let Some(batch) = spool.peek() {
            match batch {
                Err(e) => warn!(error = %e, "damaged spool file removed"),
                Ok(flows) => match self.write(&flows) {
                    Write::Ok | Write::Refused => {
                        if let Err(e) = spool.pop() {
                            warn!(error = %e, "cannot remove a spool file");
                            return false;
                        }
                    }
                    Write::Retry => return false,
                },
            }
        }
        true
    }

    fn write(&mut self, flows: &[Flow]) -> Write {
        match self.store.write_flows(flows) {
            Ok(written) => {
                stats::add(&self.counters.flows_stored, flows.len() as u64);
                stats::add(&self.counters.flows_late, written.late);
                for (a, n) in per_exporter(flows) {
                    self.counters.exporter(a, |s| s.stored += n);
                }
                debug!(flows = flows.len(), late = written.late, "batch stored");
                Write::Ok
            }
            Err(e) if e.is_retryable() => {
                stats::add(&self.counters.db_errors, 1);
                if let Some(suppressed) = self.warn_db.allow() {
                    warn!(error = %e, suppressed, buffered = self.pending_flows, "store unreachable; keeping flows and retrying");
                }
                Write::Retry
            }
            Err(e) => {
                stats::add(&self.counters.db_errors, 1);
                self.count_dropped(flows);
                warn!(error = %e, flows = flows.len(), "store refused a batch; dropped");
                Write::Refused
            }
        }
    }

    /// Counts `flows` as dropped, in total and per exporter.
    fn count_dropped(&self, flows: &[Flow]) {
        stats::add(&self.counters.flows_dropped, flows.len() as u64);
        for (a, n) in per_exporter(flows) {
            self.counters.exporter(a, |s| s.dropped += n);
        }
    }

    /// Moves the oldest queued batches to the spool (or drops them, counted) while memory
    /// holds more than its bound.
    fn enforce_memory_bound(&mut self) {
        while self.pending_flows > self.max_buffered_flows {
            let Some(b) = self.pending.pop_front() else {
                break;
            };
            self.pending_flows -= b.len();
            let spooled = match self.spool.as_mut().map(|s| s.push(&b)) {
                Some(Ok(true)) => true,
                Some(Err(e)) => {
                    warn!(error = %e, "cannot write to the spool");
                    false
                }
                _ => false,
            };
            if spooled {
                stats::add(&self.counters.flows_spooled, b.len() as u64);
            } else {
                self.count_dropped(&b);
                if let Some(suppressed) = self.warn_drop.allow() {
                    warn!(
                        flows = b.len(),
                        suppressed, "memory bound reached and spool full: flows dropped"
                    );
                }
            }
        }
    }
}

/// How many of `flows` each exporter sent.
fn per_exporter(flows: &[Flow]) -> HashMap<IpAddr, u64> {
    let mut per: HashMap<IpAddr, u64> = HashMap::new();
    for f in flows {
        *per.entry(f.exporter).or_default() += 1;
    }
    per
}
