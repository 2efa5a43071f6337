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
//! when asked to write an empty batch and idle for [`IDLE_HEARTBEAT_MICROS`] (the collector's
//! writer does every 20 s), so an idle shard holds the others back by about that much at most; a store idle for more than [`HEARTBEAT_MICROS`] (its writer stopped) first
//! writes a heartbeat before its next batch, so it rejoins with a number above any S read
//! meanwhile. With one store S is simply its last number.

use std::net::IpAddr;
use std::ops::ControlFlow;

use super::rowbinary::{FLOW_ROW_LEN, Reader, addr16};
use super::{ClickHouseStore, addr_literal, now_micros, quote};
use crate::window_sums::WindowSums;
use crate::{
    Aggregation, Fields, Flow, FlowRange, Head, JobMark, Snapshot, StoreError, Streamed, from_db,
};

/// A store whose last commit is older than this is left out of the view (90 s).
pub(super) const ACTIVE_MICROS: u64 = 90_000_000;
/// A store writes a heartbeat before a batch when its last commit is older than this (60 s),
/// and renumbers a retried batch that old.
pub(super) const HEARTBEAT_MICROS: u64 = 60_000_000;
/// `ensure_partitions` writes a heartbeat when the last commit is older than this (10 s).
pub(super) const IDLE_HEARTBEAT_MICROS: u64 = 10_000_000;

/// What a reader may see: batches up to `seq`, whose flows reach up to `upto`.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) seq: u64,
    pub(super) upto: i64,
}

/// One read of a ClickHouse store: the [`View`] taken when it began.
#[derive(Debug)]
pub(super) struct ChSnapshot<'a> {
    pub(super) store: &'a ClickHouseStore,
    pub(super) view: Option<View>,
}

impl ChSnapshot<'_> {
    /// The flows-table condition of `range` within this view, `None` when it selects nothing.
    pub(super) fn range_cond(&self, range: FlowRange) -> Result<Option<String>, StoreError> {
        let Some(v) = self.view else {
            return Ok(None);
        };
        let t = &self.store.t;
        Ok(match range {
            FlowRange::Time { after, upto } => (upto > after).then(|| {
                format!(
                    "ts > {after} AND ts <= {upto} AND seq GLOBAL IN (SELECT seq FROM \
                     {t}batches WHERE seq <= {} AND max_ts > {after} AND min_ts <= {upto})",
                    v.seq
                )
            }),
            FlowRange::Late {
                after_seq,
                upto_seq,
                ts_upto,
            } => {
                // the flows at or before ts_upto of the batches committed in the range (and
                // not forgotten), found through their commit records' spans
                let from = u64::try_from(after_seq)
                    .unwrap_or(0)
                    .max(self.store.forgotten()?);
                let upto = u64::try_from(upto_seq).unwrap_or(0).min(v.seq);
                if upto <= from {
                    return Ok(None);
                }
                let batches = format!(
                    "FROM {t}batches WHERE seq > {from} AND seq <= {upto} AND flows > 0 AND \
                     min_ts <= {ts_upto}"
                );
                let reply = self.store.http.query(&format!(
                    "SELECT min(min_ts), count() {batches} FORMAT RowBinary"
                ))?;
                let (lo, n) = {
                    let mut r = Reader::new(&reply);
                    (r.i64()?, r.u64()?)
                };
                (n > 0).then(|| {
                    format!(
                        "ts >= {lo} AND ts <= {ts_upto} AND seq GLOBAL IN (SELECT seq {batches})"
                    )
                })
            }
        })
    }
}

impl Snapshot for ChSnapshot<'_> {
    fn head(&mut self) -> Result<Head, StoreError> {
        Ok(Head {
            max_ts: self.view.map(|v| v.upto),
            late_seq: self.view.map_or(0, |v| v.seq as i64),
        })
    }

    fn job_mark(&mut self, job_id: &str) -> Result<Option<JobMark>, StoreError> {
        self.store.job_mark(job_id)
    }

    fn flows(
        &mut self,
        exporters: &[IpAddr],
        range: FlowRange,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Streamed, StoreError> {
        if exporters.is_empty() {
            return Ok(Streamed::default());
        }
        let Some(c) = self.range_cond(range)? else {
            return Ok(Streamed::default());
        };
        let (cond, check) = ClickHouseStore::exporter_filter(exporters);
        let sql = format!(
            "SELECT {} FROM {}flows WHERE {cond} AND {c} FORMAT RowBinary",
            select_list(fields),
            self.store.t
        );
        let (flows, stopped) = self.store.stream(&sql, check, fields, f)?;
        Ok(Streamed { flows, stopped })
    }

    fn sums(
        &mut self,
        exporters: &[IpAddr],
        ranges: &[FlowRange],
        top_n: usize,
    ) -> Result<Option<(WindowSums, Vec<u64>)>, StoreError> {
        if self.store.aggregation == Aggregation::Bot {
            // CLICKHOUSE_AGGREGATION=bot: the caller streams the flows and sums them itself
            return Ok(None);
        }
        self.pushdown(exporters, ranges, top_n).map(Some)
    }
}

impl ClickHouseStore {
    /// The view (see the module docs), `None` before the first flow.
    pub(super) fn view(&self) -> Result<Option<View>, StoreError> {
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
            "SELECT maxIf(max_ts, flows > 0), countIf(flows > 0) FROM {t}batches \
             WHERE seq <= {seq} FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        let (upto, n) = (r.i64()?, r.u64()?);
        Ok((n > 0).then_some(View { seq, upto }))
    }

    /// Streams the flow rows `sql` selects; with `check`, only those whose exporter is in it
    /// (addresses whose stored bytes collide: IPv4 and IPv4-mapped IPv6).
    pub(super) fn stream(
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
