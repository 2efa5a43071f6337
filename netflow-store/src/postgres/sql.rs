//! SQL text and the conversions between a [`Flow`] and PostgreSQL's types.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::Transaction;
use postgres::binary_copy::{BinaryCopyOutIter, BinaryCopyOutRow};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};

use crate::partition::{self, MIN_TS_MICROS};
use crate::schema::{self, Col, FLOW_COLUMNS};
use crate::{Fields, Flow, StoreError, Streamed};

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::pg(e)
    }
}

/// One flow as the SQL types of the flow table.
#[derive(Debug)]
pub(super) struct PgRow {
    ts: SystemTime,
    exporter: IpAddr,
    input_if: i64,
    output_if: i64,
    direction: i16,
    protocol: i16,
    src_addr: IpAddr,
    dst_addr: IpAddr,
    src_port: i32,
    dst_port: i32,
    bytes: i64,
    packets: i64,
    tcp_flags: i16,
}

impl PgRow {
    pub(super) fn new(f: &Flow) -> Result<PgRow, StoreError> {
        Ok(PgRow {
            ts: micros_to_time(f.ts_micros)?,
            exporter: f.exporter,
            input_if: i64::from(f.input_if),
            output_if: i64::from(f.output_if),
            direction: i16::from(f.direction),
            protocol: i16::from(f.protocol),
            src_addr: f.src_addr,
            dst_addr: f.dst_addr,
            src_port: i32::from(f.src_port),
            dst_port: i32::from(f.dst_port),
            bytes: crate::counter_to_db(f.bytes),
            packets: crate::counter_to_db(f.packets),
            tcp_flags: i16::from(f.tcp_flags),
        })
    }

    /// The values in [`FLOW_COLUMNS`] order.
    pub(super) fn values(&self) -> [&(dyn ToSql + Sync); FLOW_COLUMNS.len()] {
        [
            &self.ts,
            &self.exporter,
            &self.input_if,
            &self.output_if,
            &self.direction,
            &self.protocol,
            &self.src_addr,
            &self.dst_addr,
            &self.src_port,
            &self.dst_port,
            &self.bytes,
            &self.packets,
            &self.tcp_flags,
        ]
    }
}

/// A row of a binary COPY of the columns of `fields` (in table order) back to a [`Flow`] (the
/// other fields at their defaults).
pub(super) fn flow_from_row(row: &BinaryCopyOutRow, fields: Fields) -> Result<Flow, StoreError> {
    let mut f = Flow::default();
    for (i, c) in schema::columns(fields).enumerate() {
        match c.col {
            Col::Ts => f.ts_micros = time_to_micros(row.try_get(i)?)?,
            Col::Exporter => f.exporter = row.try_get(i)?,
            Col::InputIf => f.input_if = crate::from_db(c.name, row.try_get(i)?)?,
            Col::OutputIf => f.output_if = crate::from_db(c.name, row.try_get(i)?)?,
            Col::Direction => f.direction = crate::from_db(c.name, row.try_get::<i16>(i)?.into())?,
            Col::Protocol => f.protocol = crate::from_db(c.name, row.try_get::<i16>(i)?.into())?,
            Col::SrcAddr => f.src_addr = row.try_get(i)?,
            Col::DstAddr => f.dst_addr = row.try_get(i)?,
            Col::SrcPort => f.src_port = crate::from_db(c.name, row.try_get::<i32>(i)?.into())?,
            Col::DstPort => f.dst_port = crate::from_db(c.name, row.try_get::<i32>(i)?.into())?,
            Col::Bytes => f.bytes = crate::from_db(c.name, row.try_get(i)?)?,
            Col::Packets => f.packets = crate::from_db(c.name, row.try_get(i)?)?,
            Col::TcpFlags => f.tcp_flags = crate::from_db(c.name, row.try_get::<i16>(i)?.into())?,
        }
    }
    Ok(f)
}

/// `'{a,b}'::inet[]`: addresses as an SQL literal (COPY takes no parameters). The `Display`
/// of an `IpAddr` holds only hex digits, `.` and `:`, so no quoting is needed.
pub(super) fn inet_array_literal(addrs: &[IpAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    format!("'{{{}}}'::inet[]", list.join(","))
}

/// `ts > 'after' AND ts <= 'upto'` as literals (both clamped to the stored range; an `after`
/// before the first storable instant, year 0 to PostgreSQL, is left out).
pub(super) fn ts_range_literal(after: i64, upto: i64) -> String {
    let upto = format!("ts <= '{}'", partition::ts_literal(upto));
    if after < MIN_TS_MICROS {
        upto
    } else {
        format!("ts > '{}' AND {upto}", partition::ts_literal(after))
    }
}

/// Streams the rows of `select` (a query returning the columns of `fields`) to `f` through
/// `COPY (select) TO STDOUT (FORMAT binary)`, decoded by the `postgres` crate's
/// [`BinaryCopyOutIter`]: no per-row protocol round trip or `Row`, unlike a cursor. On `Break`
/// the rest of the stream is discarded by the client.
pub(super) fn copy_out(
    tx: &mut Transaction<'_>,
    select: &str,
    fields: Fields,
    f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
) -> Result<Streamed, StoreError> {
    let types: Vec<Type> = schema::columns(fields).map(|c| c.pg_type.clone()).collect();
    let reader = tx.copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))?;
    let mut rows = BinaryCopyOutIter::new(reader, &types);
    let mut read = Streamed::default();
    while let Some(row) = rows.next()? {
        read.flows += 1;
        if f(&flow_from_row(&row, fields)?).is_break() {
            read.stopped = true;
            break;
        }
    }
    Ok(read)
}

pub(super) fn micros_to_time(us: i64) -> Result<SystemTime, StoreError> {
    let d = Duration::from_micros(us.unsigned_abs());
    let t = if us >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.ok_or(StoreError::TimestampOutOfRange { ts_micros: us })
}

pub(super) fn time_to_micros(t: SystemTime) -> Result<i64, StoreError> {
    let us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).ok(),
        Err(e) => i64::try_from(e.duration().as_micros()).ok().map(|v| -v),
    };
    us.ok_or(StoreError::BadValue {
        column: "ts",
        value: i64::MAX,
    })
}

/// SQL text prepared once per store (the prefix is fixed).
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) prefix: String,
    /// The COPY types, in [`FLOW_COLUMNS`] order.
    pub(super) types: [Type; FLOW_COLUMNS.len()],
    /// `(columns) FROM STDIN (FORMAT binary)`, after `COPY table`.
    pub(super) copy_tail: String,
    pub(super) bump_max_ts: String,
    /// The max ts and late-batch number, row-locked until the batch commits.
    pub(super) lock_stats: String,
    /// Raises max ts and records a late batch's number.
    pub(super) bump_late: String,
    /// `COPY late_flows (seq, columns) FROM STDIN (FORMAT binary)`.
    pub(super) copy_late: String,
    /// The late COPY types: `seq`, then [`FLOW_COLUMNS`].
    pub(super) late_types: Vec<Type>,
    /// The max ts and late-batch number, unlocked.
    pub(super) stats: String,
    pub(super) job_mark_get: String,
    pub(super) job_mark_set: String,
    pub(super) forget_late: String,
    pub(super) expire_late: String,
    pub(super) upsert_exporter: String,
    pub(super) exporters: String,
    pub(super) partitions: String,
    pub(super) summarize: String,
    pub(super) mark_batch: String,
    pub(super) last_batch: String,
    pub(super) forget_writers: String,
    pub(super) migrations_table: String,
}

impl Sql {
    pub(super) fn new(prefix: &str) -> Sql {
        let p = prefix;
        let cols = schema::flow_column_list();
        let sat = |c: &str| {
            format!(
                "{c} = CASE WHEN {p}exporters.{c} > 9223372036854775807 - EXCLUDED.{c} \
                 THEN 9223372036854775807 ELSE {p}exporters.{c} + EXCLUDED.{c} END"
            )
        };
        Sql {
            prefix: p.to_owned(),
            types: FLOW_COLUMNS.map(|c| c.pg_type),
            copy_tail: format!("({cols}) FROM STDIN (FORMAT binary)"),
            bump_max_ts: format!(
                "UPDATE {p}flow_stats SET max_ts = GREATEST(max_ts, $1) WHERE id = 1"
            ),
            lock_stats: format!(
                "SELECT max_ts, late_seq FROM {p}flow_stats WHERE id = 1 FOR UPDATE"
            ),
            bump_late: format!(
                "UPDATE {p}flow_stats SET max_ts = GREATEST(max_ts, $1), late_seq = $2 WHERE id = 1"
            ),
            copy_late: format!("COPY {p}late_flows (seq, {cols}) FROM STDIN (FORMAT binary)"),
            late_types: std::iter::once(Type::INT8)
                .chain(FLOW_COLUMNS.map(|c| c.pg_type))
                .collect(),
            stats: format!("SELECT max_ts, late_seq FROM {p}flow_stats WHERE id = 1"),
            job_mark_get: format!(
                "SELECT last_window_end, late_seq FROM {p}bot_jobs WHERE job_id = $1"
            ),
            job_mark_set: format!(
                "INSERT INTO {p}bot_jobs (job_id, last_window_end, late_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_id) DO UPDATE SET last_window_end = EXCLUDED.last_window_end, \
                 late_seq = EXCLUDED.late_seq"
            ),
            // Without any recorded job nothing is known to be consumed: keep all (retention
            // bounds the log).
            forget_late: format!(
                "DELETE FROM {p}late_flows WHERE seq <= (SELECT min(late_seq) FROM {p}bot_jobs)"
            ),
            expire_late: format!("DELETE FROM {p}late_flows WHERE ts < $1"),
            upsert_exporter: format!(
                "INSERT INTO {p}exporters (addr, first_seen, last_seen, packets, flows, lost_packets, lost_flows) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (addr) DO UPDATE SET \
                 first_seen = LEAST({p}exporters.first_seen, EXCLUDED.first_seen), \
                 last_seen = GREATEST({p}exporters.last_seen, EXCLUDED.last_seen), {}, {}, {}, {}",
                sat("packets"),
                sat("flows"),
                sat("lost_packets"),
                sat("lost_flows")
            ),
            exporters: format!(
                "SELECT addr, first_seen, last_seen, packets, flows, lost_packets, lost_flows FROM {p}exporters"
            ),
            partitions: format!(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = to_regclass('{p}flows')"
            ),
            summarize: format!(
                "SELECT brin_summarize_new_values(i.inhrelid) FROM pg_inherits i \
                 JOIN pg_index x ON x.indexrelid = i.inhrelid \
                 WHERE i.inhparent = to_regclass('{p}flows_ts_brin') \
                 AND x.indrelid IN (to_regclass($1), to_regclass($2))"
            ),
            mark_batch: format!(
                "INSERT INTO {p}writers (writer_id, last_batch) VALUES ($1, $2) ON CONFLICT (writer_id) \
                 DO UPDATE SET last_batch = EXCLUDED.last_batch, updated_at = now()"
            ),
            last_batch: format!("SELECT last_batch FROM {p}writers WHERE writer_id = $1"),
            forget_writers: format!("DELETE FROM {p}writers WHERE updated_at < $1"),
            migrations_table: format!(
                "CREATE TABLE IF NOT EXISTS {p}schema_migrations (\
                 version integer PRIMARY KEY, description text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())"
            ),
        }
    }

    pub(super) fn partition_name(&self, hour: i64) -> String {
        format!("{}flows_p{}", self.prefix, partition::hour_suffix(hour))
    }
}
