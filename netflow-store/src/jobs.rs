//! The bot's job ledger and the window rule, written once above the backends.
//!
//! A job's window is `after < ts <= upto`: `upto` is the store's max ts, `after` the end of
//! the window the job sent last (`upto` minus the period for a new job). A flow written late
//! (its `ts` at or before the max ts already stored) may fall in a window a job has sent
//! already; the store also logs it under a batch number ([`crate::FlowWrite::write_flows`]),
//! and [`read_window`] hands each job the late flows it has not folded in yet, once, with its
//! next window, from one [`Snapshot`]. A backend provides the snapshot and the ledger's
//! storage; it never applies these rules itself.

use std::net::IpAddr;
use std::ops::ControlFlow;

use crate::window_sums::WindowSums;
use crate::{Fields, Flow, FlowRange, FlowRead, Snapshot, StoreError};

/// A bot job's bookkeeping: the end of the last window it sent and the last late-flow batch it
/// folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMark {
    /// The end (inclusive) of the last window sent, microseconds since the Unix epoch.
    pub window_end: i64,
    /// The last late-flow batch number folded in.
    pub late_seq: i64,
}

/// Where a store keeps its bot jobs' marks.
pub trait JobLedger {
    /// Records a bot job's mark (replacing the previous one). Read it back through
    /// [`Snapshot::job_mark`].
    fn set_job_mark(&mut self, job_id: &str, mark: JobMark) -> Result<(), StoreError>;

    /// Forgets the late flows every recorded job has folded in (batches numbered at or
    /// below the smallest recorded [`JobMark::late_seq`]); returns how many. Without any
    /// recorded job nothing is forgotten. (Retention forgets the rest with the flows of their
    /// hour, e.g. those of a job no longer run.)
    fn forget_consumed_late(&mut self) -> Result<u64, StoreError>;
}

/// What [`read_window`] streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobWindow {
    /// The window is `after < ts <= upto`: the previous window end (or `upto` minus the
    /// period for a new job) ...
    pub after: i64,
    /// ... to the max ts.
    pub upto: i64,
    /// What to record with [`JobLedger::set_job_mark`] once the values are sent.
    pub mark: JobMark,
    /// Flows of the window passed to the callback.
    pub flows: u64,
    /// Late flows passed to the callback: written after the job's previous run, with `ts` at
    /// or before its previous window end.
    pub late_flows: u64,
}

/// Streams, from one consistent snapshot, what a bot job's next run must aggregate, and
/// returns the window and the [`JobMark`] to record once its values are sent (`None` before
/// the first flow):
///
/// * the flows of `exporters` with `after < ts <= upto`, where `upto` is the max ts and
///   `after` the job's recorded window end (`upto - period_micros` for a new job);
/// * the late flows of `exporters` it has not folded in yet: written in a batch numbered after
///   the job's recorded [`JobMark::late_seq`], with `ts <= after` (so outside this and every
///   future window, and missing from the windows already sent).
///
/// Each flow is passed once per job over all its runs, provided every run's mark is recorded,
/// with the `fields` asked for. `f` may stop the stream early with [`ControlFlow::Break`].
pub fn read_window(
    store: &mut dyn FlowRead,
    job_id: &str,
    exporters: &[IpAddr],
    period_micros: i64,
    fields: Fields,
    f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
) -> Result<Option<JobWindow>, StoreError> {
    let mut window = None;
    store.read(&mut |s: &mut dyn Snapshot| {
        let Some(plan) = Plan::of(s, job_id, period_micros)? else {
            return Ok(());
        };
        let read = s.flows(exporters, plan.window(), fields, f)?;
        let mut late_flows = 0;
        if let Some(late) = plan.late()
            && !read.stopped
        {
            late_flows = s.flows(exporters, late, fields, f)?.flows;
        }
        window = Some(plan.job_window(read.flows, late_flows));
        Ok(())
    })?;
    Ok(window)
}

/// [`read_window`]'s aggregation pushed down to the server: the same window and late flows
/// (the same [`JobWindow`] and mark), summed by the server ([`Snapshot::sums`]) with top lists
/// of `top_n`; only the sums travel. `Ok(None)` when the store holds no flow yet or does not
/// aggregate in the server (PostgreSQL, SQLite): then [`read_window`].
pub fn read_window_sums(
    store: &mut dyn FlowRead,
    job_id: &str,
    exporters: &[IpAddr],
    period_micros: i64,
    top_n: usize,
) -> Result<Option<(JobWindow, WindowSums)>, StoreError> {
    let mut out = None;
    store.read(&mut |s: &mut dyn Snapshot| {
        let Some(plan) = Plan::of(s, job_id, period_micros)? else {
            return Ok(());
        };
        let mut ranges = vec![plan.window()];
        ranges.extend(plan.late());
        if let Some((sums, counts)) = s.sums(exporters, &ranges, top_n)? {
            let n = |i: usize| counts.get(i).copied().unwrap_or(0);
            out = Some((plan.job_window(n(0), n(1)), sums));
        }
        Ok(())
    })?;
    Ok(out)
}

/// A job's next run in one snapshot: the window `after < ts <= upto` and the late batches
/// after `prev_seq` up to the head's.
struct Plan {
    after: i64,
    upto: i64,
    prev_seq: i64,
    head_seq: i64,
}

impl Plan {
    /// `None` before the first flow.
    fn of(s: &mut dyn Snapshot, job_id: &str, period: i64) -> Result<Option<Plan>, StoreError> {
        let head = s.head()?;
        let Some(upto) = head.max_ts else {
            return Ok(None);
        };
        let (after, prev_seq) = match s.job_mark(job_id)? {
            Some(m) => (m.window_end, m.late_seq),
            None => (upto.saturating_sub(period), head.late_seq),
        };
        Ok(Some(Plan {
            after,
            upto,
            prev_seq,
            head_seq: head.late_seq,
        }))
    }

    fn window(&self) -> FlowRange {
        FlowRange::Time {
            after: self.after,
            upto: self.upto,
        }
    }

    fn late(&self) -> Option<FlowRange> {
        (self.head_seq > self.prev_seq).then_some(FlowRange::Late {
            after_seq: self.prev_seq,
            upto_seq: self.head_seq,
            ts_upto: self.after,
        })
    }

    fn job_window(&self, flows: u64, late_flows: u64) -> JobWindow {
        let upto = self.upto.max(self.after);
        JobWindow {
            after: self.after,
            upto,
            mark: JobMark {
                window_end: upto,
                late_seq: self.head_seq.max(self.prev_seq),
            },
            flows,
            late_flows,
        }
    }
}

/// The window end last recorded for a bot job, `None` for a new job.
pub fn window_end(store: &mut dyn FlowRead, job_id: &str) -> Result<Option<i64>, StoreError> {
    let mut end = None;
    store.read(&mut |s| {
        end = s.job_mark(job_id)?.map(|m| m.window_end);
        Ok(())
    })?;
    Ok(end)
}

/// Records a bot job's window end, keeping its late-flow batch number; a new job starts with
/// the store's current one (so it never folds in late flows of windows it did not send).
pub fn set_window_end<S>(store: &mut S, job_id: &str, end_micros: i64) -> Result<(), StoreError>
where
    S: FlowRead + JobLedger + ?Sized,
{
    let mut late_seq = 0;
    store.read(&mut |s| {
        late_seq = match s.job_mark(job_id)? {
            Some(m) => m.late_seq,
            None => s.head()?.late_seq,
        };
        Ok(())
    })?;
    store.set_job_mark(
        job_id,
        JobMark {
            window_end: end_micros,
            late_seq,
        },
    )
}
