//! Retention and the schema version: what a store's owner runs now and then.

use crate::StoreError;
use crate::partition;

/// What [`Upkeep::expire`] / [`Upkeep::expire_before`] removed.
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

/// Retention and schema facts.
pub trait Upkeep {
    /// Forgets every flow with `ts` before the start of the hour `cutoff_micros` falls in
    /// (late-flow log included). PostgreSQL drops whole partitions; SQLite deletes rows.
    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError>;

    /// Days of flows kept ([`crate::StoreConfig::retention_days`]).
    fn retention_days(&self) -> u32;

    /// The schema version in the database (after opening: [`crate::SCHEMA_VERSION`]).
    fn schema_version(&mut self) -> Result<u32, StoreError>;

    /// Retention: [`Upkeep::expire_before`] the hour [`Upkeep::retention_days`] days before
    /// `now_micros`.
    fn expire(&mut self, now_micros: i64) -> Result<Expired, StoreError> {
        self.expire_before(partition::retention_cutoff(
            now_micros,
            self.retention_days(),
        ))
    }
}
