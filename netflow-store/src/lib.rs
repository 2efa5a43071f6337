//! Flow storage for the NetFlow collector: every normalized flow ([`netflow_wire::Flow`]) kept
//! for later investigation, the window queries of the aggregation bot, and retention.
//!
//! # Guarantees
//!
//! * **One interface, two backends.** [`Store`] is implemented by [`PgStore`] (PostgreSQL,
//!   production: binary `COPY`, hourly native partitions) and [`SqliteStore`] (an SQLite file,
//!   the zero-setup default). Both pass one conformance test suite, so they store, return and
//!   forget exactly the same flows.
//! * **A batch is all or nothing.** [`Store::write_flows`] is one transaction. After an error
//!   for which [`StoreError::is_retryable`] is true (connection lost, server restarting, busy
//!   file) retry the same batch and it lands exactly once, even if the connection died while
//!   the `COMMIT` was in flight (the retry asks whether it landed). The store reconnects by
//!   itself on the next call.
//! * **Streaming reads.** [`Store::for_each_flow`] hands the flows of a window to a callback row
//!   by row (`COPY (SELECT …) TO STDOUT (FORMAT binary)` decoded by the `postgres` crate's
//!   `BinaryCopyOutIter` on PostgreSQL, a stepping statement on SQLite): memory does not grow
//!   with the window.
//! * **Late flows are not lost.** A flow written with a `ts` at or before the max ts already
//!   stored (a pending data set released by a late template, a spool drained after an outage,
//!   a second writer) may fall in a window a bot job has already aggregated. The batch's
//!   transaction also copies such flows to a late-flow log under a batch number, and
//!   [`Store::read_job_window`] hands each job the late flows it missed, once, with its next
//!   window, from one snapshot (so a flow is never both in a window and in the log part).
//! * **Migrations.** Opening a store applies the numbered migrations it lacks, each in its own
//!   transaction, recorded in `<prefix>schema_migrations`; concurrent openers serialize (a
//!   PostgreSQL advisory lock, SQLite's write lock), so a schema is migrated exactly once.
//!
//! # What is stored
//!
//! All [`Flow`] fields except `sampling_interval`, `start_ms` and `end_ms`, which read back as
//! [`Flow::default`]'s values (1, 0, 0): store renormalized flows ([`Flow::renormalized`]).
//! Counters (`bytes`, `packets`) are SQL `bigint`, which is signed: **values above `i64::MAX`
//! are saturated to `i64::MAX`** (9.2 EB in one flow is not a real measurement; saturating
//! keeps the row and SQL sums meaningful, where reinterpreting the bits would store negative
//! counters). Timestamps must lie within years 1 to 9999 UTC, else the batch is refused with
//! [`StoreError::TimestampOutOfRange`]. Times are `i64` microseconds since the Unix epoch (UTC)
//! everywhere in this API.
//!
//! # Choosing a backend
//!
//! [`open`] picks one from a [`StoreConfig`]: `postgres://…` URLs (or the original bot's
//! `DB_HOST`/`DB_DATABASE`/`DB_USERNAME`/`DB_PASSWORD`, see [`StoreConfig::from_db_env`]) give
//! PostgreSQL, anything else an SQLite file. SQLite suits one writer and tens of thousands of
//! flows per second; PostgreSQL takes hundreds of thousands per second (see `benches/README.md`)
//! and several writers.
//!
//! # Example
//!
//! ```
//! use std::net::IpAddr;
//! use std::ops::ControlFlow;
//! use netflow_store::{open, StoreConfig};
//! use netflow_wire::Flow;
//!
//! # let path = std::env::temp_dir().join(format!("netflow-store-doc-{}.db", std::process::id()));
//! # let url = format!("sqlite:{}", path.display());
//! let mut store = open(&StoreConfig::from_url(&url)?)?;
//! let router: IpAddr = "192.0.2.1".parse().unwrap();
//! let flow = Flow {
//!     ts_micros: 1_700_000_000_000_000,
//!     exporter: router,
//!     src_addr: "10.0.0.1".parse().unwrap(),
//!     dst_addr: "10.0.0.2".parse().unwrap(),
//!     protocol: 6,
//!     dst_port: 443,
//!     bytes: 1500,
//!     packets: 1,
//!     ..Flow::default()
//! };
//! store.write_flows(&[flow.renormalized()])?;
//!
//! let upto = store.max_ts()?.unwrap_or(0);
//! let mut bytes = 0;
//! let seen = store.for_each_flow(&[router], upto - 60_000_000, upto, &mut |f: &Flow| {
//!     bytes += f.bytes;
//!     ControlFlow::Continue(())
//! })?;
//! assert_eq!((seen, bytes), (1, 1500));
//! # drop(store);
//! # for ext in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
//! # Ok::<(), netflow_store::StoreError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![deny(rustdoc::broken_intra_doc_links)]

mod clickhouse;
mod config;
mod error;
mod partition;
mod postgres;
mod schema;
mod sqlite;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod window_sums;

use std::net::IpAddr;
use std::ops::ControlFlow;

pub use netflow_wire::Flow;

pub use crate::clickhouse::ClickHouseStore;
pub use crate::config::{
    Backend, ClickHouseConfig, DEFAULT_CLICKHOUSE_DATABASE, DEFAULT_PARTITIONS_AHEAD,
    DEFAULT_RETENTION_DAYS, DEFAULT_TABLE_PREFIX, StoreConfig,
};
pub use crate::error::StoreError;
pub use crate::postgres::PgStore;
pub use crate::schema::SCHEMA_VERSION;
pub use crate::sqlite::SqliteStore;

/// An exporter's row in `<prefix>exporters`, and the delta that
/// [`Store::upsert_exporters`] adds to it.
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

/// What [`Store::write_flows_report`] did besides storing the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// Flows of the batch that were late: `ts` at or before the store's max ts when the batch
    /// committed, so a bot job may already have sent their window. They are also kept in the
    /// late-flow log, from which [`Store::read_job_window`] folds them into each job's next
    /// window.
    pub late: u64,
}

/// A bot job's bookkeeping: the end of the last window it sent and the last late-flow batch it
/// folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobMark {
    /// The end (inclusive) of the last window sent, microseconds since the Unix epoch.
    pub window_end: i64,
    /// The last late-flow batch number folded in.
    pub late_seq: i64,
}

/// Which [`Flow`] fields a window read fills.
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

/// What [`Store::read_job_window`] streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobWindow {
    /// The window is `after < ts <= upto`: the previous window end (or `upto` minus the
    /// period for a new job) ...
    pub after: i64,
    /// ... to the max ts.
    pub upto: i64,
    /// What to record with [`Store::set_job_mark`] once the values are sent.
    pub mark: JobMark,
    /// Flows of the window passed to the callback.
    pub flows: u64,
    /// Late flows passed to the callback: written after the job's previous run, with `ts` at
    /// or before its previous window end.
    pub late_flows: u64,
}

impl JobWindow {
    /// The window `after < ts <= max(upto, after)` that read late batches up to `seq` (the
    /// job's previous mark had `prev_seq`), with the mark that records both: one place for
    /// every backend.
    pub(crate) fn read(
        after: i64,
        upto: i64,
        (prev_seq, seq): (i64, i64),
        flows: u64,
        late_flows: u64,
    ) -> JobWindow {
        let upto = upto.max(after);
        JobWindow {
            after,
            upto,
            mark: JobMark {
                window_end: upto,
                late_seq: seq.max(prev_seq),
            },
            flows,
            late_flows,
        }
    }
}

/// What [`Store::expire`] / [`Store::expire_before`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expired {
    /// Effective cutoff (start of an hour): every flow with `ts` before it is gone, every flow
    /// at or after it is kept.
    pub cutoff_micros: i64,
    /// Hourly partitions dropped (PostgreSQL; 0 on SQLite).
    pub partitions_dropped: u64,
    /// Rows deleted (SQLite; `None` on PostgreSQL, which drops whole partitions uncounted).
    pub rows_deleted: Option<u64>,
}

/// The storage interface shared by both backends. Object safe: [`open`] returns a
/// `Box<dyn Store>`.
///
/// Times are microseconds since the Unix epoch, UTC. Every method may fail with a retryable
/// [`StoreError`] when the database is unreachable; the store reconnects on the next call.
pub trait Store: Send + std::fmt::Debug {
    /// Stores a batch of flows in one transaction: all of them or, on error, none.
    ///
    /// Retrying after a retryable error stores the batch exactly once, even when the
    /// connection was lost while the `COMMIT` was in flight (PostgreSQL): each batch records
    /// its number in `<prefix>writers` in the same transaction, and the retry (recognized by a
    /// hash of its flows) first asks whether that number was committed.
    ///
    /// Call with [`Flow::renormalized`] flows. On PostgreSQL, hourly partitions missing for
    /// the batch are created first. Large batches are much cheaper per flow than small ones
    /// (10k–100k flows per call; see `benches/README.md`).
    fn write_flows(&mut self, flows: &[Flow]) -> Result<(), StoreError> {
        self.write_flows_report(flows).map(|_| ())
    }

    /// [`Store::write_flows`], also saying how many of the flows were late (see [`Written`]).
    /// Late flows are copied to the late-flow log in the same transaction.
    fn write_flows_report(&mut self, flows: &[Flow]) -> Result<Written, StoreError>;

    /// The largest `ts` ever written, `None` before the first flow. Cheap (one row read), and
    /// not lowered by retention.
    fn max_ts(&mut self) -> Result<Option<i64>, StoreError>;

    /// Streams every flow of `exporters` with `after_micros < ts <= upto_micros` to `f`, in
    /// no particular order, and returns how many were passed. `f` may stop the stream early by
    /// returning [`ControlFlow::Break`]. An empty `exporters` matches nothing.
    fn for_each_flow(
        &mut self,
        exporters: &[IpAddr],
        after_micros: i64,
        upto_micros: i64,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<u64, StoreError>;

    /// Adds deltas to the exporters table in one transaction: new addresses are inserted,
    /// known ones get their seen span widened and counters added.
    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError>;

    /// Every known exporter, ordered by address.
    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError>;

    /// The window end last recorded for a bot job, `None` for a new job.
    fn job_window_end(&mut self, job_id: &str) -> Result<Option<i64>, StoreError>;

    /// Records a bot job's window end (replacing the previous one). A new job starts with the
    /// current late-flow batch number; a known one keeps its own.
    fn set_job_window_end(&mut self, job_id: &str, end_micros: i64) -> Result<(), StoreError>;

    /// Streams, from one consistent snapshot, what a bot job's next run must aggregate, and
    /// returns the window and the [`JobMark`] to record once its values are sent (`None`
    /// before the first flow):
    ///
    /// * the flows of `exporters` with `after < ts <= upto`, where `upto` is the max ts and
    ///   `after` the job's recorded window end (`upto - period_micros` for a new job);
    /// * the late flows of `exporters` it has not folded in yet: written in a batch numbered
    ///   after the job's recorded [`JobMark::late_seq`], with `ts <= after` (so outside this
    ///   and every future window, and missing from the windows already sent).
    ///
    /// Each flow is passed once per job over all its runs, provided every run's mark is
    /// recorded, with the `fields` asked for. `f` may stop the stream early with
    /// [`ControlFlow::Break`].
    fn read_job_window(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period_micros: i64,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Option<JobWindow>, StoreError>;

    /// Records a bot job's mark (replacing the previous one).
    fn set_job_mark(&mut self, job_id: &str, mark: JobMark) -> Result<(), StoreError>;

    /// Forgets the late flows every recorded job has folded in; returns how many. (Retention
    /// forgets the rest with the flows of their hour, e.g. those of a job no longer run.)
    fn forget_consumed_late(&mut self) -> Result<u64, StoreError>;

    /// Creates the hourly partitions from the hour before `now_micros` to
    /// [`StoreConfig::partitions_ahead`] hours after it, so that writes in that span never
    /// wait on DDL, and summarizes the BRIN index of the current and previous hour so that
    /// window queries read only the blocks of their window. Call it about once a minute from
    /// the writer. A no-op on SQLite.
    fn ensure_partitions(&mut self, now_micros: i64) -> Result<(), StoreError>;

    /// Forgets every flow with `ts` before the start of the hour `cutoff_micros` falls in
    /// (late-flow log included). PostgreSQL drops whole partitions; SQLite deletes rows.
    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError>;

    /// Retention: [`Store::expire_before`] the hour [`StoreConfig::retention_days`] days
    /// before `now_micros`.
    fn expire(&mut self, now_micros: i64) -> Result<Expired, StoreError>;

    /// The schema version in the database (after opening: [`SCHEMA_VERSION`]).
    fn schema_version(&mut self) -> Result<u32, StoreError>;

    /// Aggregation pushdown: what [`Store::read_job_window`] would stream for this job (the
    /// window and its late flows, same bounds, same mark), summed by the database server into
    /// [`window_sums::WindowSums`] with top lists of `top_n`; only the sums travel.
    ///
    /// `Ok(None)` when the backend does not aggregate in the server (PostgreSQL, SQLite: the
    /// default) or holds no flow yet: then call [`Store::read_job_window`], which answers
    /// `None` in the second case too. ClickHouse implements it.
    fn window_sums(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period_micros: i64,
        top_n: usize,
    ) -> Result<Option<(JobWindow, window_sums::WindowSums)>, StoreError> {
        let _ = (job_id, exporters, period_micros, top_n);
        Ok(None)
    }
}

/// Opens the store `config` describes, connecting and migrating the schema to
/// [`SCHEMA_VERSION`].
pub fn open(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    Ok(match &config.backend {
        Backend::Postgres(_) => Box::new(PgStore::open(config)?),
        Backend::Sqlite(_) => Box::new(SqliteStore::open(config)?),
        Backend::ClickHouse(_) => Box::new(ClickHouseStore::open(config)?),
    })
}

/// Clamps a counter to the signed 64-bit range the databases store (see the crate docs).
pub(crate) fn counter_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored counter or interface index back to its unsigned type.
pub(crate) fn from_db<T: TryFrom<i64>>(column: &'static str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::BadValue { column, value })
}

/// Widest batch boundaries of the timestamps in `flows`, validating each.
pub(crate) fn ts_span(flows: &[Flow]) -> Result<Option<(i64, i64)>, StoreError> {
    let mut span: Option<(i64, i64)> = None;
    for f in flows {
        partition::check_ts(f.ts_micros)?;
        span = Some(match span {
            None => (f.ts_micros, f.ts_micros),
            Some((lo, hi)) => (lo.min(f.ts_micros), hi.max(f.ts_micros)),
        });
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counter_saturates() {
        assert_eq!(counter_to_db(0), 0);
        assert_eq!(counter_to_db(i64::MAX as u64), i64::MAX);
        assert_eq!(counter_to_db(u64::MAX), i64::MAX);
        assert!(matches!(
            from_db::<u32>("input_if", -1),
            Err(StoreError::BadValue {
                column: "input_if",
                value: -1
            })
        ));
        assert_eq!(
            from_db::<u32>("input_if", 4_294_967_295).ok(),
            Some(u32::MAX)
        );
    }
}
