//! Flow storage for the NetFlow collector: every normalized flow ([`netflow_wire::Flow`]) kept
//! for later investigation, the window queries of the aggregation bot, and retention.
//!
//! # Guarantees
//!
//! * **One shape, three backends.** A store is four small traits, one concern each:
//!   [`FlowWrite`] (the writer's batches, exactly once, and the exporters table), [`FlowRead`]
//!   (consistent [`Snapshot`]s: flows of a time range or a late-flow batch range, with a
//!   column projection), [`JobLedger`] (the bot's marks) and [`Upkeep`] (retention).
//!   [`Store`] is all four. [`PgStore`] (PostgreSQL, production: binary `COPY`, hourly native
//!   partitions), [`SqliteStore`] (an SQLite file, the zero-setup default) and
//!   [`ClickHouseStore`] (ClickHouse over HTTP, RowBinary, for more flows than one PostgreSQL
//!   server keeps; it also sums a bot window in the server, [`jobs::read_window_sums`])
//!   implement them and pass one conformance test suite, so they store, return and forget exactly the same
//!   flows. The rules that are not a backend's own, the bot's windows and late flows, live
//!   once in [`jobs`].
//! * **A batch is all or nothing.** [`FlowWrite::write_flows`] is one transaction. After an
//!   error for which [`StoreError::is_retryable`] is true (connection lost, server restarting,
//!   busy file) retry the same batch and it lands exactly once, even if the connection died
//!   while the `COMMIT` was in flight (the retry asks whether it landed). The store reconnects
//!   by itself on the next call.
//! * **Streaming reads.** [`Snapshot::flows`] hands the flows of a range to a callback row by
//!   row (`COPY (SELECT …) TO STDOUT (FORMAT binary)` decoded by the `postgres` crate's
//!   `BinaryCopyOutIter` on PostgreSQL, a stepping statement on SQLite): memory does not grow
//!   with the window.
//! * **Late flows are not lost.** A flow written with a `ts` at or before the max ts already
//!   stored (a pending data set released by a late template, a spool drained after an outage,
//!   a second writer) may fall in a window a bot job has already aggregated. The batch's
//!   transaction also copies such flows to a late-flow log under a batch number, and
//!   [`jobs::read_window`] hands each job the late flows it missed, once, with its next
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
//! [`open`] picks one from a [`StoreConfig`]: `postgres://…` URLs (or host, database, user and
//! password, [`StoreConfig::postgres`]) give PostgreSQL, anything else an SQLite file. This
//! crate reads no environment: the binaries map their settings (`DB_HOST`, …) onto a
//! `StoreConfig`. SQLite suits one writer and tens of thousands of
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
//!
//! # Features
//!
//! * `test-support`: `test_support`, a PostgreSQL cluster of the tests' own that a test may
//!   stop and restart (fault tests here and in the apps). For tests only: it is not part of
//!   the API and not in these docs (`#[doc(hidden)]`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]
#![deny(rustdoc::broken_intra_doc_links)]

mod clickhouse;
mod config;
mod error;
mod flows;
pub mod jobs;
mod partition;
mod postgres;
pub mod query;
mod query_sql;
mod query_sqlite;
mod schema;
mod sqlite;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support;
mod upkeep;
pub mod window_sums;

pub use netflow_wire::Flow;

pub use crate::clickhouse::ClickHouseStore;
pub use crate::config::{
    Aggregation, Backend, ClickHouseConfig, DEFAULT_CLICKHOUSE_DATABASE, DEFAULT_PARTITIONS_AHEAD,
    DEFAULT_RETENTION_DAYS, DEFAULT_TABLE_PREFIX, StoreConfig,
};
pub use crate::error::StoreError;
pub use crate::flows::{
    Exporter, Fields, FlowRange, FlowRead, FlowWrite, Head, Snapshot, Streamed, Written,
};
pub use crate::jobs::{JobLedger, JobMark, JobWindow};
pub use crate::postgres::PgStore;
pub use crate::schema::SCHEMA_VERSION;
pub use crate::sqlite::SqliteStore;
pub use crate::upkeep::{Expired, Upkeep};

/// A whole store, as [`open`] returns it: the writer's side, the readers' side, the bot's job
/// ledger and upkeep, each a small trait of its own (a caller that needs one asks for that
/// one). Implemented for every type that implements the four.
///
/// Times are microseconds since the Unix epoch, UTC. Every method may fail with a retryable
/// [`StoreError`] when the database is unreachable; the store reconnects on the next call.
pub trait Store: FlowWrite + FlowRead + JobLedger + Upkeep + Send + std::fmt::Debug {}

impl<T: FlowWrite + FlowRead + JobLedger + Upkeep + Send + std::fmt::Debug> Store for T {}

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
