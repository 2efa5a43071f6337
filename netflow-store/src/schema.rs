//! Schema: the flow column table and the numbered migrations of both backends.
//!
//! A migration is never edited once released: a new schema is a new, higher-numbered entry.
//! `{p}` in the SQL stands for the configured table prefix.

use postgres::types::Type;

/// Newest schema version this build knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Which [`Flow`](crate::Flow) field a column holds: what each backend's row encoder and
/// decoder match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    Ts,
    Exporter,
    InputIf,
    OutputIf,
    Direction,
    Protocol,
    SrcAddr,
    DstAddr,
    SrcPort,
    DstPort,
    Bytes,
    Packets,
    TcpFlags,
}

/// One column of the flow table: the single source of the COPY/INSERT column lists, the COPY
/// types, the SELECT lists and the projections, in this order. Released migrations keep their
/// own frozen text.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) col: Col,
    pub(crate) name: &'static str,
    pub(crate) pg_type: Type,
    /// Read for [`Fields::Aggregation`](crate::Fields::Aggregation).
    pub(crate) aggregated: bool,
}

/// The flow table of the newest schema, in table order.
pub(crate) const FLOW_COLUMNS: [Column; 13] = [
    Column {
        col: Col::Ts,
        name: "ts",
        pg_type: Type::TIMESTAMPTZ,
        aggregated: false,
    },
    Column {
        col: Col::Exporter,
        name: "exporter",
        pg_type: Type::INET,
        aggregated: true,
    },
    Column {
        col: Col::InputIf,
        name: "input_if",
        pg_type: Type::INT8,
        aggregated: true,
    },
    Column {
        col: Col::OutputIf,
        name: "output_if",
        pg_type: Type::INT8,
        aggregated: true,
    },
    Column {
        col: Col::Direction,
        name: "direction",
        pg_type: Type::INT2,
        aggregated: true,
    },
    Column {
        col: Col::Protocol,
        name: "protocol",
        pg_type: Type::INT2,
        aggregated: true,
    },
    Column {
        col: Col::SrcAddr,
        name: "src_addr",
        pg_type: Type::INET,
        aggregated: true,
    },
    Column {
        col: Col::DstAddr,
        name: "dst_addr",
        pg_type: Type::INET,
        aggregated: true,
    },
    Column {
        col: Col::SrcPort,
        name: "src_port",
        pg_type: Type::INT4,
        aggregated: false,
    },
    Column {
        col: Col::DstPort,
        name: "dst_port",
        pg_type: Type::INT4,
        aggregated: true,
    },
    Column {
        col: Col::Bytes,
        name: "bytes",
        pg_type: Type::INT8,
        aggregated: true,
    },
    Column {
        col: Col::Packets,
        name: "packets",
        pg_type: Type::INT8,
        aggregated: false,
    },
    Column {
        col: Col::TcpFlags,
        name: "tcp_flags",
        pg_type: Type::INT2,
        aggregated: false,
    },
];

/// The columns a read of `fields` returns, in table order.
pub(crate) fn columns(fields: crate::Fields) -> impl Iterator<Item = &'static Column> {
    FLOW_COLUMNS
        .iter()
        .filter(move |c| fields == crate::Fields::All || c.aggregated)
}

/// `ts, exporter, ...`: the flow columns as an SQL list.
pub(crate) fn flow_column_list() -> String {
    column_list(crate::Fields::All)
}

/// The columns of `fields` as an SQL list.
pub(crate) fn column_list(fields: crate::Fields) -> String {
    columns(fields)
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One schema step.
#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) description: &'static str,
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

/// All migrations, oldest first; `MIGRATIONS[i].version == i + 1`.
pub(crate) const MIGRATIONS: [Migration; 6] = [
    Migration {
        version: 1,
        description: "flows partitioned by hour; bot job bookkeeping",
        postgres: "
            CREATE TABLE {p}flows (
                ts        timestamptz NOT NULL,
                exporter  inet        NOT NULL,
                input_if  bigint      NOT NULL,
                output_if bigint      NOT NULL,
                direction smallint    NOT NULL,
                protocol  smallint    NOT NULL,
                src_addr  inet        NOT NULL,
                dst_addr  inet        NOT NULL,
                src_port  integer     NOT NULL,
                dst_port  integer     NOT NULL,
                bytes     bigint      NOT NULL,
                packets   bigint      NOT NULL,
                tcp_flags smallint    NOT NULL
            ) PARTITION BY RANGE (ts);
            CREATE TABLE {p}bot_jobs (
                job_id          text PRIMARY KEY,
                last_window_end timestamptz NOT NULL
            );",
        sqlite: "
            CREATE TABLE {p}flows (
                ts        INTEGER NOT NULL,
                exporter  BLOB    NOT NULL,
                input_if  INTEGER NOT NULL,
                output_if INTEGER NOT NULL,
                direction INTEGER NOT NULL,
                protocol  INTEGER NOT NULL,
                src_addr  BLOB    NOT NULL,
                dst_addr  BLOB    NOT NULL,
                src_port  INTEGER NOT NULL,
                dst_port  INTEGER NOT NULL,
                bytes     INTEGER NOT NULL,
                packets   INTEGER NOT NULL,
                tcp_flags INTEGER NOT NULL
            );
            CREATE INDEX {p}flows_ts ON {p}flows (ts);
            CREATE TABLE {p}bot_jobs (
                job_id          TEXT PRIMARY KEY,
                last_window_end INTEGER NOT NULL
            );",
    },
    Migration {
        version: 2,
        description: "exporters with first/last seen and packet/flow/loss counters, backfilled from flows",
        postgres: "
            CREATE TABLE {p}exporters (
                addr         inet PRIMARY KEY,
                first_seen   timestamptz NOT NULL,
                last_seen    timestamptz NOT NULL,
                packets      bigint NOT NULL DEFAULT 0,
                flows        bigint NOT NULL DEFAULT 0,
                lost_packets bigint NOT NULL DEFAULT 0,
                lost_flows   bigint NOT NULL DEFAULT 0
            );
            INSERT INTO {p}exporters (addr, first_seen, last_seen, flows)
                SELECT exporter, min(ts), max(ts), count(*) FROM {p}flows GROUP BY exporter;",
        sqlite: "
            CREATE TABLE {p}exporters (
                addr         BLOB PRIMARY KEY,
                first_seen   INTEGER NOT NULL,
                last_seen    INTEGER NOT NULL,
                packets      INTEGER NOT NULL DEFAULT 0,
                flows        INTEGER NOT NULL DEFAULT 0,
                lost_packets INTEGER NOT NULL DEFAULT 0,
                lost_flows   INTEGER NOT NULL DEFAULT 0
            );
            INSERT INTO {p}exporters (addr, first_seen, last_seen, flows)
                SELECT exporter, min(ts), max(ts), count(*) FROM {p}flows GROUP BY exporter;",
    },
    Migration {
        version: 3,
        // BRIN, not btree: flows arrive in ts order, so a BRIN range summary finds a window's
        // blocks; it costs a fraction of a btree on insert (see benches/README.md). max_ts is
        // kept in a one-row table because max(ts) over BRIN-only partitions is a full scan.
        description: "BRIN index on flows.ts; max ts bookkeeping",
        postgres: "
            CREATE INDEX {p}flows_ts_brin ON {p}flows USING brin (ts) WITH (pages_per_range = 32);
            CREATE TABLE {p}flow_stats (
                id     smallint PRIMARY KEY CHECK (id = 1),
                max_ts timestamptz
            );
            INSERT INTO {p}flow_stats (id, max_ts) SELECT 1, max(ts) FROM {p}flows;",
        sqlite: "
            CREATE TABLE {p}flow_stats (
                id     INTEGER PRIMARY KEY CHECK (id = 1),
                max_ts INTEGER
            );
            INSERT INTO {p}flow_stats (id, max_ts) SELECT 1, max(ts) FROM {p}flows;",
    },
    Migration {
        version: 4,
        // Each batch's transaction records (writer, batch number): when the connection drops
        // while COMMIT is in flight, the retry asks whether the batch landed instead of
        // writing it twice. A local SQLite commit is never in doubt.
        description: "writers: last committed batch per writer instance",
        postgres: "
            CREATE TABLE {p}writers (
                writer_id  bigint PRIMARY KEY,
                last_batch bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now()
            );",
        sqlite: "",
    },
    Migration {
        version: 5,
        // Late flows: a batch's flows with ts at or before the max ts when it commits may lie
        // in windows a bot job has already sent. They are also copied to late_flows under a
        // batch number (flow_stats.late_seq, taken under flow_stats' row lock, so numbers
        // become visible in commit order); each job records the last number it folded in.
        description: "late flows: late_flows log, flow_stats.late_seq, bot_jobs.late_seq",
        postgres: "
            ALTER TABLE {p}flow_stats ADD COLUMN late_seq bigint NOT NULL DEFAULT 0;
            ALTER TABLE {p}bot_jobs ADD COLUMN late_seq bigint NOT NULL DEFAULT 0;
            CREATE TABLE {p}late_flows (
                seq       bigint      NOT NULL,
                ts        timestamptz NOT NULL,
                exporter  inet        NOT NULL,
                input_if  bigint      NOT NULL,
                output_if bigint      NOT NULL,
                direction smallint    NOT NULL,
                protocol  smallint    NOT NULL,
                src_addr  inet        NOT NULL,
                dst_addr  inet        NOT NULL,
                src_port  integer     NOT NULL,
                dst_port  integer     NOT NULL,
                bytes     bigint      NOT NULL,
                packets   bigint      NOT NULL,
                tcp_flags smallint    NOT NULL
            );
            CREATE INDEX {p}late_flows_seq ON {p}late_flows (seq);",
        sqlite: "
            ALTER TABLE {p}flow_stats ADD COLUMN late_seq INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE {p}bot_jobs ADD COLUMN late_seq INTEGER NOT NULL DEFAULT 0;
            CREATE TABLE {p}late_flows (
                seq       INTEGER NOT NULL,
                ts        INTEGER NOT NULL,
                exporter  BLOB    NOT NULL,
                input_if  INTEGER NOT NULL,
                output_if INTEGER NOT NULL,
                direction INTEGER NOT NULL,
                protocol  INTEGER NOT NULL,
                src_addr  BLOB    NOT NULL,
                dst_addr  BLOB    NOT NULL,
                src_port  INTEGER NOT NULL,
                dst_port  INTEGER NOT NULL,
                bytes     INTEGER NOT NULL,
                packets   INTEGER NOT NULL,
                tcp_flags INTEGER NOT NULL
            );
            CREATE INDEX {p}late_flows_seq ON {p}late_flows (seq);",
    },
    Migration {
        version: 6,
        // Forensic queries (netflow-query) mostly start from an address: `src ip X and dst
        // port 443`, `ip X`. On SQLite (the zero-setup store, tens of thousands of flows/s) a
        // btree on each address column finds its flows without reading the others. On
        // PostgreSQL the same two indexes cut ingest from 669k to 151k flows/s at 100k batches
        // (server CPU 1.7 -> 5.7 us/flow, benches/README.md), which the writer's 500k flows/s
        // cannot afford; there the time window's partitions are scanned instead (0.7-1.0 s for
        // a 10M-flow window, nfdump 2.0 s), and the README shows the two CREATE INDEX
        // statements for a site that wants 10-30 ms address queries at that ingest cost.
        description: "btree indexes on flows.src_addr and flows.dst_addr for address queries (SQLite)",
        postgres: "SELECT 1;",
        sqlite: "
            CREATE INDEX {p}flows_src_addr ON {p}flows (src_addr);
            CREATE INDEX {p}flows_dst_addr ON {p}flows (dst_addr);",
    },
];

/// Replaces `{p}` by the table prefix (validated to `[a-z_][a-z0-9_]*`, so no quoting needed).
pub(crate) fn sql(template: &str, prefix: &str) -> String {
    template.replace("{p}", prefix)
}

/// A 64-bit FNV-1a hash, used as PostgreSQL advisory lock key so that stores with different
/// prefixes in one database do not wait on each other.
pub(crate) fn lock_key(purpose: &str, prefix: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "netflow-store:"
        .bytes()
        .chain(purpose.bytes())
        .chain(prefix.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_migrations_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.description);
        }
        assert_eq!(flow_column_list().split(", ").count(), FLOW_COLUMNS.len());
        assert_ne!(lock_key("migrate", "a_"), lock_key("migrate", "b_"));
    }
}
