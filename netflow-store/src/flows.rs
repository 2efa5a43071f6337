//! The two sides of the flow table: the writer's batches ([`FlowWrite`]) and consistent reads
//! of a time range or a late-flow batch range ([`FlowRead`], [`Snapshot`]).

use std::net::IpAddr;
use std::ops::ControlFlow;

use crate::{Flow, StoreError};

/// An exporter's row in `<prefix>exporters`, and the delta that
/// [`FlowWrite::upsert_exporters`] adds to it.
///
/// As a delta: `first_seen_micros`/`last_seen_micros` widen the stored span, the counters are
/// added (saturating at `i64::MAX`, see the crate docs). As a row: the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exporter {
    /// The exporter's address (the UDP source of its datagrams).
    pub addr: IpAddr,
    /// First datagram seen, microseconds since the Unix epoch.
    pub first_seen_micros: i64,
    /// Last datagram seen, microseconds since the Unix epoch.
    pub last_seen_micros: i64,
    /// Export datagrams received.
    pub packets: u64,
    /// Flow records received.
    pub flows: u64,
    /// Export datagrams lost (sequence-number gaps, NetFlow v9 / IPFIX).
    pub lost_packets: u64,
    /// Flow records lost (sequence-number gaps, NetFlow v5).
    pub lost_flows: u64,
}

/// What [`FlowWrite::write_flows`] did besides storing the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// Flows of the batch that were late: `ts` at or before the store's max ts when the batch
    /// committed, so a bot job may already have sent their window. They are also kept in the
    /// late-flow log, from which [`crate::jobs::read_window`] folds them into each job's next
    /// window.
    pub late: u64,
}

/// The writer's side of a store: batches of flows, exactly once, and the exporters table.
pub trait FlowWrite {
    /// Stores a batch of flows in one transaction: all of them or, on error, none; says how
    /// many of them were late (see [`Written`]), which are copied to the late-flow log in the
    /// same transaction.
    ///
    /// Retrying after a retryable error stores the batch exactly once, even when the
    /// connection was lost while the `COMMIT` was in flight (PostgreSQL): each batch records
    /// its number in `<prefix>writers` in the same transaction, and the retry (recognized by a
    /// hash of its flows) first asks whether that number was committed.
    ///
    /// Call with [`Flow::renormalized`] flows. The backend keeps its own physical layout up to
    /// date from here: on PostgreSQL the hourly partitions the batch needs are created first,
    /// and about once a minute the coming hours' partitions are created ahead and the BRIN
    /// index of the hours being filled is summarized. Large batches are much cheaper per flow
    /// than small ones (10k–100k flows per call; see `benches/README.md`).
    fn write_flows(&mut self, flows: &[Flow]) -> Result<Written, StoreError>;

    /// Adds deltas to the exporters table in one transaction: new addresses are inserted,
    /// known ones get their seen span widened and counters added.
    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError>;
}

/// Which [`Flow`] fields a read fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fields {
    /// Every stored field.
    All,
    /// What the bot aggregates: exporter, interfaces, direction, protocol, addresses,
    /// destination port and bytes; `ts`, `src_port`, `packets` and `tcp_flags` read as 0.
    /// PostgreSQL then sends 9 of the 13 columns (about a fifth less work for the server).
    Aggregation,
}

impl Fields {
    /// `f` with the fields not in `self` reset (their [`Flow::default`] values).
    pub fn project(self, f: &Flow) -> Flow {
        match self {
            Fields::All => *f,
            Fields::Aggregation => Flow {
                ts_micros: 0,
                src_port: 0,
                packets: 0,
                tcp_flags: 0,
                ..*f
            },
        }
    }
}

/// The store's position: the largest `ts` ever written and the last late-flow batch number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The largest `ts` ever written, `None` before the first flow (not lowered by retention).
    pub max_ts: Option<i64>,
    /// The number of the last batch that had late flows (0 before the first).
    pub late_seq: i64,
}

/// Which flows a [`Snapshot::flows`] read streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowRange {
    /// The flow table: `after < ts <= upto`.
    Time {
        /// Exclusive lower bound, microseconds since the Unix epoch.
        after: i64,
        /// Inclusive upper bound.
        upto: i64,
    },
    /// The late-flow log: batches numbered `after_seq < seq <= upto_seq`, flows with
    /// `ts <= ts_upto`.
    Late {
        /// Exclusive lower batch number.
        after_seq: i64,
        /// Inclusive upper batch number.
        upto_seq: i64,
        /// Inclusive upper bound of `ts`.
        ts_upto: i64,
    },
}

/// What a [`Snapshot::flows`] read streamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streamed {
    /// Flows passed to the callback.
    pub flows: u64,
    /// The callback returned [`ControlFlow::Break`].
    pub stopped: bool,
}

/// One consistent view of a store (a read-only transaction): every read through it sees the
/// same committed batches, so a flow is never both in a window and in the late-flow log part.
pub trait Snapshot {
    /// The store's position in this snapshot.
    fn head(&mut self) -> Result<Head, StoreError>;

    /// The mark last recorded for a bot job ([`crate::JobLedger::set_job_mark`]), `None` for a
    /// new job.
    fn job_mark(&mut self, job_id: &str) -> Result<Option<crate::JobMark>, StoreError>;

    /// Streams every flow of `exporters` in `range` to `f`, in no particular order, with the
    /// `fields` asked for (the others at their [`Flow::default`] values). An empty
    /// `exporters` matches nothing. `f` may stop the stream with [`ControlFlow::Break`].
    fn flows(
        &mut self,
        exporters: &[IpAddr],
        range: FlowRange,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Streamed, StoreError>;

    /// Aggregation pushdown: the sums of the flows of `exporters` in all of `ranges` taken
    /// together, computed by the database server with top lists of `top_n`, and how many
    /// flows each range holds. `Ok(None)` (the default) when the backend does not aggregate in
    /// the server: stream the ranges with [`Snapshot::flows`] instead. ClickHouse does.
    fn sums(
        &mut self,
        exporters: &[IpAddr],
        ranges: &[FlowRange],
        top_n: usize,
    ) -> Result<Option<(crate::window_sums::WindowSums, Vec<u64>)>, StoreError> {
        let _ = (exporters, ranges, top_n);
        Ok(None)
    }
}

/// The readers' side of a store: consistent snapshots, and the exporters table.
pub trait FlowRead {
    /// Runs `f` on one [`Snapshot`] of the store, then ends it.
    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Every known exporter, ordered by address.
    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError>;

    /// The largest `ts` ever written, `None` before the first flow. Not lowered by retention.
    fn max_ts(&mut self) -> Result<Option<i64>, StoreError> {
        let mut max = None;
        self.read(&mut |s| {
            max = s.head()?.max_ts;
            Ok(())
        })?;
        Ok(max)
    }

    /// Runs a forensic query ([`crate::query::Query`]) inside the database, handing each
    /// result row to `f` as it is read (which may stop early with [`ControlFlow::Break`]), and
    /// returns the totals of every flow the window and filter match. See [`crate::query`].
    /// A backend that does not run queries answers [`StoreError::Query`].
    fn query(
        &mut self,
        q: &crate::query::Query,
        f: &mut dyn FnMut(crate::query::QueryRow<'_>) -> ControlFlow<()>,
    ) -> Result<crate::query::Totals, StoreError> {
        let _ = (q, f);
        Err(StoreError::Query(
            "this backend does not run forensic queries (yet)",
        ))
    }

    /// Streams every flow of `exporters` with `after_micros < ts <= upto_micros` to `f` (all
    /// fields), in no particular order, and returns how many were passed. `f` may stop the
    /// stream early by returning [`ControlFlow::Break`]. An empty `exporters` matches nothing.
    fn for_each_flow(
        &mut self,
        exporters: &[IpAddr],
        after_micros: i64,
        upto_micros: i64,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let range = FlowRange::Time {
            after: after_micros,
            upto: upto_micros,
        };
        self.read(&mut |s| {
            n = s.flows(exporters, range, Fields::All, f)?.flows;
            Ok(())
        })?;
        Ok(n)
    }
}
