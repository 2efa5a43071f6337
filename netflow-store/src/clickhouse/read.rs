//! The read side: which batches a reader may see (the snapshot), the bounds of a job's next
//! window, and streaming flow rows.
//!
//! # The snapshot
//!
//! A batch is visible once its commit record is in `<prefix>batches`. A job run reads the
//! batches numbered up to S, and next time the late ones after S, so S must be a number below
//! which no batch can still commit. Each store (one writer, one database) numbers its batches
//! upwards from the clock in microseconds and commits them in order, so a store's next commit
//! is always above its last. Over several stores (the shards of a `Distributed` table) S is
//! the smallest of their last numbers, counting only stores that committed in the last
//! [`ACTIVE_MICROS`]. A writer with nothing to write commits an empty record (a heartbeat)
//! from [`crate::Store::ensure_partitions`] when idle for [`IDLE_HEARTBEAT_MICROS`] (the
//! collector's writer calls it every 20 s), so an idle shard holds the others back by that
//! much at most; a store idle for more than [`HEARTBEAT_MICROS`] (its writer stopped) first
//! writes a heartbeat before its next batch, so it rejoins with a number above any S read
//! meanwhile. With one store S is simply its last number.

use std::net::IpAddr;
use std::ops::ControlFlow;

use super::rowbinary::{FLOW_ROW_LEN, Reader, addr16};
use super::{ClickHouseStore, addr_literal, now_micros, quote};
use crate::{Fields, Flow, JobMark, JobWindow, StoreError, from_db};

/// A store whose last commit is older than this is left out of the snapshot (90 s).
pub(super) const ACTIVE_MICROS: u64 = 90_000_000;
/// A store writes a heartbeat before a batch when its last commit is older than this (60 s),
/// and renumbers a retried batch that old.
pub(super) const HEARTBEAT_MICROS: u64 = 60_000_000;
/// `ensure_partitions` writes a heartbeat when the last commit is older than this (10 s).
pub(super) const IDLE_HEARTBEAT_MICROS: u64 = 10_000_000;

/// What a reader may see: batches up to `seq`, whose flows reach up to `upto`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    pub(super) seq: u64,
    pub(super) upto: i64,
}

/// What a job's next run reads: `after < ts <= upto` from batches up to `seq`, and the late
/// flows (`ts <= after`) of batches numbered after `from` (the job's mark, or the forgotten
/// ones), which begin at `late_from`.
#[derive(Debug, Clone)]
pub(super) struct JobBounds {
    after: i64,
    upto: i64,
    prev_seq: u64,
    from: u64,
    seq: u64,
    late_from: Option<i64>,
    /// `database.prefix` of the tables.
    t: String,
}

impl JobBounds {
    /// The flows-table condition of the window, `None` when it is empty.
    pub(super) fn window_cond(&self) -> Option<String> {
        let (after, upto, seq, t) = (self.after, self.upto, self.seq, &self.t);
        (upto > after).then(|| {
            format!(
                "ts > {after} AND ts <= {upto} AND seq GLOBAL IN (SELECT seq FROM {t}batches \
                 WHERE seq <= {seq} AND max_ts > {after} AND min_ts <= {upto})"
            )
        })
    }

    /// The flows-table condition of the late flows, `None` when no batch holds any.
    pub(super) fn late_cond(&self) -> Option<String> {
        let (after, from, seq, t) = (self.after, self.from, self.seq, &self.t);
        self.late_from.map(|lo| {
            format!(
                "ts >= {lo} AND ts <= {after} AND seq GLOBAL IN (SELECT seq FROM {t}batches \
                 WHERE seq > {from} AND seq <= {seq} AND flows > 0 AND min_ts <= {after})"
            )
        })
    }

    pub(super) fn job_window(&self, flows: u64, late: u64) -> JobWindow {
        JobWindow::read(
            self.after,
            self.upto,
            (self.prev_seq as i64, self.seq as i64),
            flows,
            late,
        )
    }
}

impl ClickHouseStore {
    /// The snapshot (see the module docs), `None` before the first flow.
    pub(super) fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let t = &self.t;
        let active = now_micros().saturating_sub(ACTIVE_MICROS);
        let reply = self.http.query(&format!(
            "SELECT max(m), minIf(m, m >= {active}), countIf(m >= {active}) FROM \
             (SELECT store_id, max(seq) AS m FROM {t}batches GROUP BY store_id) FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        let (max, min_active, n_active) = (r.u64()?, r.u64()?, r.u64()?);
        let seq = if n_active > 0 { min_active } else { max };
        let reply = self.http.query(&format!(
            "SELECT max(max_ts), countIf(flows > 0) FROM {t}batches WHERE seq <= {seq} \
             FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        let (upto, n) = (r.i64()?, r.u64()?);
        Ok((n > 0).then_some(Snapshot { seq, upto }))
    }

    /// A job's next window, `None` before the first flow.
    pub(super) fn job_bounds(
        &mut self,
        job_id: &str,
        period: i64,
    ) -> Result<Option<JobBounds>, StoreError> {
        let Some(Snapshot { seq, upto }) = self.snapshot()? else {
            return Ok(None);
        };
        let (after, prev_seq) = match self.job_mark(job_id)? {
            Some(m) => (m.window_end, from_db::<u64>("late_seq", m.late_seq)?),
            None => (upto.saturating_sub(period), seq),
        };
        let mut from = prev_seq;
        let mut late_from = None;
        if seq > prev_seq {
            from = prev_seq.max(self.forgotten()?);
            let reply = self.http.query(&format!(
                "SELECT min(min_ts), count() FROM {}batches WHERE seq > {from} AND \
                 seq <= {seq} AND flows > 0 AND min_ts <= {after} FORMAT RowBinary",
                self.t
            ))?;
            let mut r = Reader::new(&reply);
            let (lo, n) = (r.i64()?, r.u64()?);
            late_from = (n > 0).then_some(lo);
        }
        Ok(Some(JobBounds {
            after,
            upto,
            prev_seq,
            from,
            seq,
            late_from,
            t: self.t.clone(),
        }))
    }

    /// The flows of `exporters` with `after < ts <= upto` from every visible batch.
    pub(super) fn read_range(
        &self,
        exporters: &[IpAddr],
        after: i64,
        upto: i64,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        if exporters.is_empty() || upto <= after {
            return Ok(0);
        }
        let (cond, check) = Self::exporter_filter(exporters);
        let t = &self.t;
        let sql = format!(
            "SELECT {} FROM {t}flows WHERE {cond} AND ts > {after} AND ts <= {upto} \
             AND seq GLOBAL IN (SELECT seq FROM {t}batches WHERE max_ts > {after} AND \
             min_ts <= {upto}) FORMAT RowBinary",
            select_list(Fields::All)
        );
        Ok(self.stream(&sql, check, Fields::All, f)?.0)
    }

    /// [`crate::Store::read_job_window`].
    pub(super) fn read_job(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period: i64,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Option<JobWindow>, StoreError> {
        let Some(b) = self.job_bounds(job_id, period)? else {
            return Ok(None);
        };
        let (mut flows, mut late) = (0, 0);
        if !exporters.is_empty() {
            let (cond, check) = Self::exporter_filter(exporters);
            let (t, list) = (&self.t, select_list(fields));
            let mut stopped = false;
            if let Some(w) = b.window_cond() {
                let sql =
                    format!("SELECT {list} FROM {t}flows WHERE {cond} AND {w} FORMAT RowBinary");
                (flows, stopped) = self.stream(&sql, check, fields, f)?;
            }
            if !stopped && let Some(l) = b.late_cond() {
                let sql =
                    format!("SELECT {list} FROM {t}flows WHERE {cond} AND {l} FORMAT RowBinary");
                late = self.stream(&sql, check, fields, f)?.0;
            }
        }
        Ok(Some(b.job_window(flows, late)))
    }

    /// Streams the flow rows `sql` selects; with `check`, only those whose exporter is in it
    /// (addresses whose stored bytes collide: IPv4 and IPv4-mapped IPv6).
    fn stream(
        &self,
        sql: &str,
        check: Option<&[IpAddr]>,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<(u64, bool), StoreError> {
        let mut n = 0u64;
        let mut stopped = false;
        self.http.query_rows(sql, FLOW_ROW_LEN, &mut |row| {
            let flow = Reader::new(row).flow()?;
            if check.is_some_and(|set| !set.contains(&flow.exporter)) {
                return Ok(ControlFlow::Continue(()));
            }
            n += 1;
            let flow = if matches!(fields, Fields::All) {
                flow
            } else {
                fields.project(&flow)
            };
            let c = f(&flow);
            stopped = c.is_break();
            Ok(c)
        })?;
        Ok((n, stopped))
    }

    /// `exporter IN (…)` and the set to check rows against when the bytes are ambiguous.
    pub(super) fn exporter_filter(exporters: &[IpAddr]) -> (String, Option<&[IpAddr]>) {
        let list: Vec<String> = exporters.iter().map(|&a| addr_literal(a)).collect();
        let ambiguous = exporters.iter().any(|&a| addr16(a).1);
        let cond = if ambiguous {
            format!("exporter IN ({})", list.join(", "))
        } else {
            // no IPv6 address in mapped form asked for: leave those rows out in the server
            format!(
                "exporter IN ({}) AND bitAnd(v6_mapped, 1) = 0",
                list.join(", ")
            )
        };
        (cond, ambiguous.then_some(exporters))
    }

    pub(super) fn job_mark(&self, job_id: &str) -> Result<Option<JobMark>, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT argMax(window_end, version), argMax(late_seq, version) FROM {}jobs \
             WHERE job_id = {} GROUP BY job_id FORMAT RowBinary",
            self.t,
            quote(job_id)
        ))?;
        let mut r = Reader::new(&reply);
        if r.is_empty() {
            return Ok(None);
        }
        let window_end = r.i64()?;
        let late_seq = from_db("late_seq", r.i64()?)?;
        Ok(Some(JobMark {
            window_end,
            late_seq,
        }))
    }

    /// Late flows of batches up to this number are forgotten.
    pub(super) fn forgotten(&self) -> Result<u64, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT max(upto) FROM {}late_forgotten FORMAT RowBinary",
            self.t
        ))?;
        Reader::new(&reply).u64()
    }

    /// [`crate::Store::forget_consumed_late`]: the late flows of the batches every job has
    /// folded in stay in the flows table (they are flows); only the count is moved past them.
    pub(super) fn forget_late(&mut self) -> Result<u64, StoreError> {
        let t = self.t.clone();
        let reply = self.http.query(&format!(
            "SELECT min(s), count() FROM (SELECT argMax(late_seq, version) AS s FROM {t}jobs \
             GROUP BY job_id) FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        let (upto, jobs) = (r.u64()?, r.u64()?);
        let from = self.forgotten()?;
        if jobs == 0 || upto <= from {
            return Ok(0);
        }
        let reply = self.http.query(&format!(
            "SELECT sum(late) FROM {t}batches WHERE seq > {from} AND seq <= {upto} \
             FORMAT RowBinary"
        ))?;
        let n = Reader::new(&reply).u64()?;
        let version = self.version();
        self.http.execute(
            &format!("INSERT INTO {t}late_forgotten (upto, version) VALUES ({upto}, {version})"),
            true,
        )?;
        Ok(n)
    }
}

/// The SELECT list of a flow row: the fields not in `fields` as typed zeros.
pub(super) fn select_list(fields: Fields) -> String {
    super::rowbinary::FLOW_COLUMNS
        .iter()
        .map(|&(name, ty)| {
            let zero = matches!(fields, Fields::Aggregation)
                && matches!(name, "ts" | "src_port" | "packets" | "tcp_flags");
            if zero || name == "seq" {
                format!("to{ty}(0)")
            } else {
                name.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
