//! The ClickHouse schema: numbered migrations recorded in `<prefix>schema_migrations`, in SQL
//! that 18.16 and current releases both accept (no `DateTime64`, `IPv6`, `TTL`, codecs or
//! `Nullable` keys). `{db}` stands for the database, `{p}` for the table prefix.
//!
//! The ClickHouse backend was born at schema 5 of the other backends (same flows, same job
//! bookkeeping, late flows): its first migration is number 5, and every later change of the
//! shared schema gets a ClickHouse entry of the same number.
//!
//! # Layout, and why
//!
//! * `{p}flows`: one row per flow, `MergeTree` partitioned by the hour of `ts` (hours since
//!   0001-01-01, so that even year-1 timestamps give a non-negative partition number; retention
//!   drops whole partitions, exactly at hour boundaries as on PostgreSQL), ordered by
//!   `(exporter, ts)`: every read is "these exporters, this time range" (the bot's windows, the
//!   queries), which the primary key answers by reading only the granules of those exporters
//!   in those hours. akvorado orders by time first because its queries rarely name an
//!   exporter; ours always do. `ts` is `Int64` microseconds (18.16 has no `DateTime64`; the
//!   same integer also keeps the range checks and hour arithmetic identical to the other
//!   backends). Addresses are `FixedString(16)`, IPv6-mapped (the bytes current releases' `IPv6`
//!   type holds), with `v6_mapped` telling the rare IPv6 address in mapped form from IPv4.
//!   `seq` is the batch number (see the store's exactly-once design).
//! * `{p}batches`: one row per committed batch, written after all its rows: the commit
//!   record, with the batch's time span and late count. Readers see only rows of batches
//!   listed here. There is no separate late-flow log: a job's late flows are the flows of the
//!   batches committed since its last run with `ts` at or before its window end, found through
//!   the commit records' spans (so only those hours are read).
//! * `{p}store`: the database's writer identity, in every commit record (the snapshot over
//!   several shards takes the smallest of each writer's last numbers).
//! * `{p}jobs`, `{p}late_forgotten`, `{p}exporters`: insert-only logs read with `argMax` /
//!   `GROUP BY` (ClickHouse has no `UPDATE`; these are small).

/// Statements of each migration, in order.
pub(crate) const MIGRATIONS: &[(u32, &[&str])] = &[
    (
        5,
        &[
            "CREATE TABLE IF NOT EXISTS {db}.{p}flows ({flow_columns}) ENGINE = MergeTree \
         PARTITION BY intDiv(ts + 62135596800000000, 3600000000) ORDER BY (exporter, ts) \
         SETTINGS index_granularity = 8192",
            "CREATE TABLE IF NOT EXISTS {db}.{p}batches (seq UInt64, store_id UInt64, \
         flows UInt64, late UInt64, min_ts Int64, max_ts Int64, \
         written_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY seq",
            "CREATE TABLE IF NOT EXISTS {db}.{p}store (id UInt64) ENGINE = MergeTree ORDER BY id",
            "CREATE TABLE IF NOT EXISTS {db}.{p}jobs (job_id String, window_end Int64, \
         late_seq UInt64, version UInt64) ENGINE = MergeTree ORDER BY (job_id, version)",
            "CREATE TABLE IF NOT EXISTS {db}.{p}late_forgotten (upto UInt64, version UInt64) \
         ENGINE = MergeTree ORDER BY version",
            "CREATE TABLE IF NOT EXISTS {db}.{p}exporters (addr FixedString(16), v6_mapped UInt8, \
         first_seen Int64, last_seen Int64, packets UInt64, flows UInt64, lost_packets UInt64, \
         lost_flows UInt64) ENGINE = MergeTree ORDER BY (addr, v6_mapped)",
        ],
    ),
    // Schema 6 gave PostgreSQL and SQLite btrees on the flow addresses for forensic queries
    // (netflow-query); nothing here: the flows are read by column (only those a query tests),
    // and 18.16's skip indexes are experimental.
    (6, &[]),
];

/// Hours from 0001-01-01 to the Unix epoch: partition number = this + hour since the epoch.
pub(crate) const EPOCH_HOUR: i64 = 62_135_596_800 / 3600;
