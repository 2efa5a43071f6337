//! The bot: jobs from Grafolean, windows from the store, values to Grafolean; maintenance.
//!
//! * One aggregation job per account and [`Interval`], staggered so that they do not all fire
//!   together. A job's window is (previous window end, current max ts]; the end is persisted
//!   per job in the store, so restarts neither lose nor double-count. A job without a previous
//!   end takes the last period before the max ts. The window end advances only after the
//!   values were accepted, or their outcome is unknown. The client alone retries (it knows
//!   whether a request may have reached the backend: it retries 5xx answers and connections
//!   never made); a POST that timed out or lost its connection after sending may be stored,
//!   so it is never sent again (Grafolean would stamp a second data point): it is counted as
//!   `posts_outcome_unknown` / `values_outcome_unknown` and logged. A POST that certainly did
//!   not land is kept for the next run, which covers the missed time too.
//! * A window's values go out in requests of at most the client's `max_values_per_request`.
//!   The backend stores each accepted request (stamped with its own clock), so when one fails
//!   for good, the accepted ones are not sent again: the job keeps the rest of that window's
//!   values and its end, and its next run sends only those, then advances the window end, and
//!   the run after that covers the flows since.
//! * Late flows: a flow written after a job already sent the window its `ts` falls in (a
//!   pending data set released by a late template, up to 10 minutes later; a writer draining
//!   its spool after an outage; a second writer; an exporter's clock) is folded into that
//!   job's next window, once (see [`netflow_store::jobs::read_window`]). Grafolean stamps each value
//!   with its arrival time and takes no timestamp, so a second POST for an old window would be
//!   a second point, not a correction: the late bytes are counted in the next point of every
//!   interval instead, and the totals over time stay exact. They are counted in the stats
//!   (writer: `flows_late`; bot: `late_flows_aggregated`) and logged per window. The work is
//!   bounded: a run reads only the late batches written since its previous run (an index
//!   range), each late flow once per job, and the log is forgotten once every job has read
//!   it (retention forgets the rest with their hour).
//! * Jobs run one after the other on one thread, so a job that overruns is never started twice
//!   at once; an overdue job runs once and is rescheduled from now.
//! * Maintenance: retention every hour; every 2 minutes, exporters seen in the store that an
//!   account has no device entity for are suggested to it (once per account and address).

pub mod aggregate;
pub mod sums;
pub mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use grafolean_client::{AccountId, AccountJobs, Client, NewEntity, ValueBatch};
use netflow_store::{Fields, Flow, JobMark, JobWindow, Store, StoreError};
use tracing::{debug, info, warn};

pub use aggregate::{Interval, Window};

use crate::Error;
use crate::stats::{self, Counters};

/// Bot settings.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// Re-read the jobs this often.
    pub jobs_refresh: Duration,
    /// Run every aggregation job once, then return (no maintenance, no schedule).
    pub once: bool,
    /// How often to suggest new exporters.
    pub suggest_every: Duration,
    /// How often to apply retention.
    pub retention_every: Duration,
}

impl Default for BotConfig {
    fn default() -> BotConfig {
        BotConfig {
            jobs_refresh: Duration::from_secs(60),
            once: false,
            suggest_every: Duration::from_secs(120),
            retention_every: Duration::from_secs(3600),
        }
    }
}

/// The stable id under which a job's window end is stored.
pub fn job_id(account: AccountId, interval: Interval) -> String {
    format!("grafolean/{}/{}", account.0, interval.label())
}

/// Delay of a job's first run after start: spread over the first minute (1min jobs within
/// 15 s), different per account and interval, so that jobs do not fire together.
pub fn stagger(account: AccountId, interval: Interval) -> Duration {
    let a = account.0.unsigned_abs();
    let idx = Interval::ALL
        .iter()
        .position(|i| *i == interval)
        .unwrap_or(0) as u64;
    let secs = match interval {
        Interval::M1 => a % 15,
        _ => (15 + idx * 9 + a % 7) % 60,
    };
    Duration::from_secs(secs)
}

/// The outcome of one aggregation job run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The store holds no flows yet: nothing sent, nothing recorded.
    NoData,
    /// Values sent and the window end recorded.
    Sent {
        /// Flows in the window.
        flows: u64,
        /// Late flows folded in: written after the previous run into windows already sent.
        late_flows: u64,
        /// Values posted.
        values: usize,
    },
}

/// Aggregates the next window of one job, with the late flows it missed, and returns it with
/// what [`netflow_store::jobs::read_window`] read (the mark to record once it is sent), without sending.
pub fn aggregate_window(
    store: &mut dyn Store,
    job: &str,
    interval: Interval,
    exporters: &[IpAddr],
) -> Result<Option<(Window, JobWindow)>, StoreError> {
    let period = i64::try_from(interval.secs()).unwrap_or(60) * 1_000_000;
    // ClickHouse sums in the server; the other backends stream the flows to us
    if let Some((read, sums)) =
        netflow_store::jobs::read_window_sums(store, job, exporters, period, aggregate::TOP_N)?
    {
        return Ok(Some((Window::from_sums(&sums), read)));
    }
    let mut read = None;
    let w = aggregate_flows(|f| {
        read = netflow_store::jobs::read_window(
            store,
            job,
            exporters,
            period,
            Fields::Aggregation,
            f,
        )?;
        Ok::<_, StoreError>(read.map_or(0, |r| r.flows + r.late_flows))
    })?;
    Ok(read.map(|r| (w, r)))
}

/// Flows handed from the reading thread to the aggregating one at a time.
const CHUNK_FLOWS: usize = 4096;

/// Runs `read` (which streams flows to its callback) on this thread and folds the flows into a
/// [`Window`] on a second one, so that decoding the store's rows and aggregating them overlap.
/// Chunks of `CHUNK_FLOWS` (4,096) flows go through a channel of 4 and come back empty for reuse, so
/// memory stays at a few chunks whatever the window.
pub fn aggregate_flows<E>(
    read: impl FnOnce(&mut dyn FnMut(&Flow) -> ControlFlow<()>) -> Result<u64, E>,
) -> Result<Window, E> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Vec<Flow>>(4);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<Flow>>();
    std::thread::scope(|scope| {
        let aggregator = std::thread::Builder::new()
            .name("bot-aggregate".into())
            .spawn_scoped(scope, move || {
                let mut w = Window::new();
                for mut chunk in full_rx {
                    for f in &chunk {
                        w.add(f);
                    }
                    chunk.clear();
                    // the reader may be gone already; then the chunk is just dropped
                    let _ = empty_tx.send(chunk);
                }
                w
            });
        let aggregator = match aggregator {
            Ok(a) => a,
            // no second thread to be had: aggregate on this one
            Err(_) => {
                let mut w = Window::new();
                return read(&mut |f: &Flow| {
                    w.add(f);
                    ControlFlow::Continue(())
                })
                .map(|_| w);
            }
        };
        let mut chunk: Vec<Flow> = Vec::with_capacity(CHUNK_FLOWS);
        let mut lost_aggregator = false;
        let r = read(&mut |f: &Flow| {
            chunk.push(*f);
            if chunk.len() == CHUNK_FLOWS {
                let next = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK_FLOWS));
                if full_tx.send(std::mem::replace(&mut chunk, next)).is_err() {
                    lost_aggregator = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if !chunk.is_empty() {
            let _ = full_tx.send(chunk);
        }
        drop(full_tx);
        let w = match aggregator.join() {
            Ok(w) => w,
            // a panic in Window::add is a bug: surface it where it happened
            Err(p) => std::panic::resume_unwind(p),
        };
        debug_assert!(!lost_aggregator);
        r.map(|_| w)
    })
}

/// What is left to send of a window whose values POST failed part way.
#[derive(Debug)]
struct Unsent {
    /// The window's end and late-flow mark, recorded once everything is sent.
    mark: JobMark,
    /// Flows in the window.
    flows: u64,
    /// Late flows folded in.
    late_flows: u64,
    /// Requests not yet accepted, in order.
    requests: VecDeque<ValueBatch>,
}

/// Splits `batch` into requests of at most `n` values.
fn split_batch(batch: &ValueBatch, n: usize) -> VecDeque<ValueBatch> {
    let n = n.max(1);
    let mut out = VecDeque::new();
    let mut cur = ValueBatch::new();
    for (p, v) in batch.iter() {
        if cur.len() == n {
            out.push_back(std::mem::take(&mut cur));
        }
        cur.insert(p.clone(), v);
    }
    if !cur.is_empty() {
        out.push_back(cur);
    }
    out
}

/// The bot.
#[derive(Debug)]
pub struct Bot {
    client: Client,
    store: Box<dyn Store>,
    cfg: BotConfig,
    counters: Arc<Counters>,
    accounts: Vec<AccountJobs>,
    next_run: BTreeMap<(AccountId, Interval), Instant>,
    suggested: HashSet<(AccountId, IpAddr)>,
    forbidden: HashSet<AccountId>,
    unsent: HashMap<String, Unsent>,
    /// For the "outcome unknown" warning.
    unknown_limit: stats::RateLimit,
}

impl Bot {
    /// A bot sending through `client` and reading `store`.
    pub fn new(
        client: Client,
        store: Box<dyn Store>,
        cfg: BotConfig,
        counters: Arc<Counters>,
    ) -> Bot {
        Bot {
            client,
            store,
            cfg,
            counters,
            accounts: Vec::new(),
            next_run: BTreeMap::new(),
            suggested: HashSet::new(),
            forbidden: HashSet::new(),
            unsent: HashMap::new(),
            unknown_limit: stats::RateLimit::new(Duration::from_secs(60)),
        }
    }

    /// Re-reads the job configuration; keeps the previous one on error.
    pub fn refresh_jobs(&mut self) -> Result<(), Error> {
        let cfg = self.client.job_config()?;
        for (account, e) in &cfg.unavailable {
            warn!(account = %account.id, error = %e, "account skipped: cannot read its entities");
        }
        let now = Instant::now();
        let mut keys = BTreeSet::new();
        for a in &cfg.accounts {
            for i in Interval::ALL {
                keys.insert((a.account.id, i));
                self.next_run
                    .entry((a.account.id, i))
                    .or_insert_with(|| now + stagger(a.account.id, i));
            }
        }
        self.next_run.retain(|k, _| keys.contains(k));
        let entities: usize = cfg.accounts.iter().map(|a| a.entities.len()).sum();
        debug!(accounts = cfg.accounts.len(), entities, "jobs refreshed");
        self.accounts = cfg.accounts;
        Ok(())
    }

    /// Runs one job now: aggregate, post (with retries), record the window end.
    pub fn run_job(
        &mut self,
        account: &AccountJobs,
        interval: Interval,
    ) -> Result<JobOutcome, Error> {
        let id = job_id(account.account.id, interval);
        let entities: Vec<(i64, IpAddr)> = account
            .entities
            .iter()
            .map(|e| (e.entity_id.0, e.exporter))
            .collect();
        let exporters: Vec<IpAddr> = entities
            .iter()
            .map(|e| e.1)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let started = Instant::now();
        let mut unsent = match self.unsent.remove(&id) {
            Some(u) => {
                info!(job = %id, requests = u.requests.len(), "sending the rest of a window whose POST failed part way");
                u
            }
            None => {
                let Some((window, read)) =
                    aggregate_window(self.store.as_mut(), &id, interval, &exporters)?
                else {
                    return Ok(JobOutcome::NoData);
                };
                let batch = window
                    .values(interval.label(), &entities)
                    .map_err(|e| Error::Setting("value path", e.to_string()))?;
                debug!(job = %id, aggregated = ?started.elapsed(), "window aggregated");
                if read.late_flows > 0 {
                    info!(job = %id, late_flows = read.late_flows, "late flows (written after their window was sent) folded into this window");
                }
                Unsent {
                    mark: read.mark,
                    flows: read.flows,
                    late_flows: read.late_flows,
                    requests: split_batch(&batch, self.client.config().max_values_per_request),
                }
            }
        };
        let mut values = 0;
        while let Some(request) = unsent.requests.front() {
            // The client alone decides what is retried (it knows whether a request may have
            // reached the backend); the bot only keeps for its next run what certainly did not
            // land, and never sends again what may have.
            match self.client.post_values(account.account.id, request) {
                Ok(r) => {
                    stats::add(&self.counters.values_sent, r.values as u64);
                    values += r.values;
                    unsent.requests.pop_front();
                }
                Err(e) if e.may_have_landed() => {
                    stats::add(&self.counters.posts_outcome_unknown, 1);
                    stats::add(&self.counters.values_outcome_unknown, request.len() as u64);
                    if let Some(suppressed) = self.unknown_limit.allow() {
                        warn!(job = %id, values = request.len(), error = %e, suppressed, "values POST outcome unknown (the backend may have stored them): not sent again, so no value is counted twice");
                    }
                    unsent.requests.pop_front();
                }
                Err(e) => {
                    stats::add(&self.counters.post_errors, 1);
                    // The accepted requests are stored: keep only the rest for the next run.
                    self.unsent.insert(id, unsent);
                    return Err(e.into());
                }
            }
        }
        if let Err(e) = self.store.set_job_mark(&id, unsent.mark) {
            // Everything was sent: the next run only records the end.
            self.unsent.insert(id, unsent);
            return Err(e.into());
        }
        stats::add(&self.counters.jobs_run, 1);
        stats::add(&self.counters.late_flows_aggregated, unsent.late_flows);
        info!(job = %id, flows = unsent.flows, late_flows = unsent.late_flows, values, total = ?started.elapsed(), "window sent");
        match self.store.forget_consumed_late() {
            Ok(0) => {}
            Ok(n) => debug!(rows = n, "late flows every job has folded in forgotten"),
            Err(e) => warn!(error = %e, "cannot forget consumed late flows; retention will"),
        }
        Ok(JobOutcome::Sent {
            flows: unsent.flows,
            late_flows: unsent.late_flows,
            values,
        })
    }

    /// Runs every job of every account once (the `--once` mode and tests).
    pub fn run_all_once(&mut self) -> Result<(), Error> {
        let accounts = self.accounts.clone();
        let mut first_err = None;
        for a in &accounts {
            for i in Interval::ALL {
                if let Err(e) = self.run_job(a, i) {
                    warn!(account = %a.account.id, interval = i.label(), error = %e, "job failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Suggests exporters the store knows to every account lacking a device entity for them.
    pub fn suggest_exporters(&mut self) -> Result<usize, Error> {
        let known: Vec<IpAddr> = self
            .store
            .exporters()?
            .into_iter()
            .map(|e| e.addr)
            .collect();
        let mut n = 0;
        for a in &self.accounts {
            let id = a.account.id;
            if self.forbidden.contains(&id) {
                continue;
            }
            for addr in &known {
                if a.device_addresses.contains(addr) || self.suggested.contains(&(id, *addr)) {
                    continue;
                }
                match self
                    .client
                    .suggest_entity(id, &NewEntity::netflow_exporter(*addr))
                {
                    Ok(eid) => {
                        info!(account = %id, %addr, entity = %eid, "new exporter suggested as an entity");
                        self.suggested.insert((id, *addr));
                        n += 1;
                    }
                    Err(grafolean_client::Error::Forbidden { .. }) => {
                        warn!(account = %id, "this bot may not create entities (an account bot): exporter suggestions off for this account");
                        self.forbidden.insert(id);
                        break;
                    }
                    Err(e) => {
                        warn!(account = %id, %addr, error = %e, "cannot suggest an exporter");
                        break;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Waits for the backend, then runs jobs and maintenance until `stop`.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        if self.client.wait_until_ready_or_stop(None, stop)?.is_none() {
            info!("stopped while waiting for the Grafolean backend");
            return Ok(());
        }
        let profile = self.client.profile()?;
        info!(bot = %profile.user_id, "connected to Grafolean");
        self.refresh_jobs()?;
        if self.cfg.once {
            return self.run_all_once();
        }
        let mut next_refresh = Instant::now() + self.cfg.jobs_refresh;
        let mut next_suggest = Instant::now() + Duration::from_secs(5);
        let mut next_retention = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_refresh {
                if let Err(e) = self.refresh_jobs() {
                    warn!(error = %e, "cannot refresh jobs; keeping the previous ones");
                }
                next_refresh = now + self.cfg.jobs_refresh;
            }
            let due: Vec<(AccountId, Interval)> = self
                .next_run
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| *k)
                .collect();
            for (aid, interval) in due {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Some(account) = self.accounts.iter().find(|a| a.account.id == aid).cloned()
                else {
                    continue;
                };
                let period = Duration::from_secs(interval.secs());
                let retry = match self.run_job(&account, interval) {
                    Ok(JobOutcome::NoData) => Some(Duration::from_secs(5)),
                    Ok(JobOutcome::Sent { .. }) => None,
                    Err(e) => {
                        warn!(account = %aid, interval = interval.label(), error = %e, "job failed; the next run covers its window");
                        None
                    }
                };
                if let Some(t) = self.next_run.get_mut(&(aid, interval)) {
                    // From the planned time, or from now when overdue: never twice at once.
                    let planned = *t + period;
                    *t = match retry {
                        Some(r) => Instant::now() + r.min(period),
                        None if planned > Instant::now() => planned,
                        None => Instant::now() + period,
                    };
                }
            }
            if Instant::now() >= next_suggest {
                if let Err(e) = self.suggest_exporters() {
                    warn!(error = %e, "exporter suggestion failed");
                }
                next_suggest = Instant::now() + self.cfg.suggest_every;
            }
            if Instant::now() >= next_retention {
                match self.store.expire(stats::now_micros()) {
                    Ok(x) => debug!(?x, "retention applied"),
                    Err(e) => warn!(error = %e, "retention failed"),
                }
                next_retention = Instant::now() + self.cfg.retention_every;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flows over 3 exporters, IPv4 and IPv6, both directions, some with 0 bytes.
    fn flows(n: u32) -> Vec<Flow> {
        (0..n)
            .map(|i| {
                let k = i.wrapping_mul(2_654_435_761);
                let v6 = k % 5 == 0;
                let addr = |x: u32| -> IpAddr {
                    if v6 {
                        IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, (x % 300) as u16])
                    } else {
                        IpAddr::from((0x0a00_0000 | (x % 300)).to_be_bytes())
                    }
                };
                Flow {
                    exporter: IpAddr::from([192, 0, 2, (k % 3) as u8 + 1]),
                    src_addr: addr(k >> 3),
                    dst_addr: addr(k >> 11),
                    input_if: k % 4,
                    output_if: k % 5,
                    direction: u8::from(k % 7 == 0),
                    protocol: [6, 17, 1, 58][(k % 4) as usize],
                    dst_port: (k % 50) as u16,
                    bytes: u64::from(k % 1500) * u64::from(k % 11 != 0),
                    ..Flow::default()
                }
            })
            .collect()
    }

    #[test]
    fn test_threaded_aggregation_equals_one_pass() {
        let entities: Vec<(i64, IpAddr)> = (1..=3u8)
            .map(|i| (i64::from(i), IpAddr::from([192, 0, 2, i])))
            .collect();
        // chunk boundaries: less than one chunk, exactly some, and a partial last one
        for n in [0, 17, CHUNK_FLOWS as u32 * 3, CHUNK_FLOWS as u32 * 5 + 123] {
            let fs = flows(n);
            let mut one = Window::new();
            fs.iter().for_each(|f| one.add(f));
            let threaded = aggregate_flows(|cb| {
                for f in &fs {
                    if cb(f).is_break() {
                        break;
                    }
                }
                Ok::<_, ()>(fs.len() as u64)
            })
            .expect("aggregate");
            assert_eq!(threaded.flows(), u64::from(n));
            let a = one.values("1min", &entities).expect("values");
            let b = threaded.values("1min", &entities).expect("values");
            let list = |x: &ValueBatch| -> Vec<(String, f64)> {
                x.iter()
                    .map(|(p, v)| (p.as_str().to_owned(), v.as_f64()))
                    .collect()
            };
            assert_eq!(list(&a), list(&b), "{n} flows");
        }
    }

    #[test]
    fn test_read_error_is_returned_after_the_aggregator_stops() {
        let fs = flows(CHUNK_FLOWS as u32 * 2);
        let r = aggregate_flows(|cb| {
            for f in &fs {
                let _ = cb(f);
            }
            Err::<u64, &str>("connection lost")
        });
        assert_eq!(r.err(), Some("connection lost"));
    }
}
