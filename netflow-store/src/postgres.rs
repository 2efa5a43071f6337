//! The PostgreSQL backend: binary COPY into an hourly-partitioned flow table.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::binary_copy::{BinaryCopyInWriter, BinaryCopyOutIter, BinaryCopyOutRow};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement, Transaction};

use crate::partition::{self, HOUR_MICROS, MAX_TS_MICROS, MIN_TS_MICROS};
use crate::schema::{self, FLOW_COLUMNS, MIGRATIONS, SCHEMA_VERSION};
use crate::{
    Backend, Expired, Exporter, Fields, Flow, JobMark, JobWindow, Store, StoreConfig, StoreError,
    Written,
};

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::pg(e)
    }
}

/// One flow as the SQL types of the flow table.
#[derive(Debug)]
pub(crate) struct PgRow {
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
    fn new(f: &Flow) -> Result<PgRow, StoreError> {
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
    fn values(&self) -> [&(dyn ToSql + Sync); FLOW_COLUMNS.len()] {
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

/// A row of the window's binary COPY (columns in [`FLOW_COLUMNS`] order) back to a [`Flow`].
fn flow_from_copy_row(row: &BinaryCopyOutRow) -> Result<Flow, StoreError> {
    Ok(Flow {
        ts_micros: time_to_micros(row.try_get(0)?)?,
        exporter: row.try_get(1)?,
        input_if: crate::from_db("input_if", row.try_get(2)?)?,
        output_if: crate::from_db("output_if", row.try_get(3)?)?,
        direction: crate::from_db("direction", row.try_get::<i16>(4)?.into())?,
        protocol: crate::from_db("protocol", row.try_get::<i16>(5)?.into())?,
        src_addr: row.try_get(6)?,
        dst_addr: row.try_get(7)?,
        src_port: crate::from_db("src_port", row.try_get::<i32>(8)?.into())?,
        dst_port: crate::from_db("dst_port", row.try_get::<i32>(9)?.into())?,
        bytes: crate::from_db("bytes", row.try_get(10)?)?,
        packets: crate::from_db("packets", row.try_get(11)?)?,
        tcp_flags: crate::from_db("tcp_flags", row.try_get::<i16>(12)?.into())?,
        ..Flow::default()
    })
}

/// The columns the bot aggregates ([`Fields::Aggregation`]), in this order.
const AGGREGATION_COLUMNS: &str =
    "exporter, input_if, output_if, direction, protocol, src_addr, dst_addr, dst_port, bytes";

/// A row of [`AGGREGATION_COLUMNS`] back to a [`Flow`] (the other fields default).
fn flow_from_aggregation_row(row: &BinaryCopyOutRow) -> Result<Flow, StoreError> {
    Ok(Flow {
        exporter: row.try_get(0)?,
        input_if: crate::from_db("input_if", row.try_get(1)?)?,
        output_if: crate::from_db("output_if", row.try_get(2)?)?,
        direction: crate::from_db("direction", row.try_get::<i16>(3)?.into())?,
        protocol: crate::from_db("protocol", row.try_get::<i16>(4)?.into())?,
        src_addr: row.try_get(5)?,
        dst_addr: row.try_get(6)?,
        dst_port: crate::from_db("dst_port", row.try_get::<i32>(7)?.into())?,
        bytes: crate::from_db("bytes", row.try_get(8)?)?,
        ..Flow::default()
    })
}

/// `'{a,b}'::inet[]`: addresses as an SQL literal (COPY takes no parameters). The `Display`
/// of an `IpAddr` holds only hex digits, `.` and `:`, so no quoting is needed.
fn inet_array_literal(addrs: &[IpAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    format!("'{{{}}}'::inet[]", list.join(","))
}

/// `ts > 'after' AND ts <= 'upto'` as literals (both clamped to the stored range; an `after`
/// before the first storable instant, year 0 to PostgreSQL, is left out).
fn ts_range_literal(after: i64, upto: i64) -> String {
    let upto = format!("ts <= '{}'", partition::ts_literal(upto));
    if after < MIN_TS_MICROS {
        upto
    } else {
        format!("ts > '{}' AND {upto}", partition::ts_literal(after))
    }
}

/// Streams the rows of `select` (a query returning the [`FLOW_COLUMNS`]) to `f` through
/// `COPY (select) TO STDOUT (FORMAT binary)`, decoded by the `postgres` crate's
/// [`BinaryCopyOutIter`]: no per-row protocol round trip or `Row`, unlike a cursor. Returns
/// how many rows `f` saw. On `Break` the rest of the stream is discarded by the client.
fn copy_out_flows(
    tx: &mut Transaction<'_>,
    types: &[Type],
    select: &str,
    f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
) -> Result<u64, StoreError> {
    copy_out(tx, types, select, flow_from_copy_row, f)
}

/// [`copy_out_flows`] with the row decoder `decode` (its columns and `types` must agree).
fn copy_out(
    tx: &mut Transaction<'_>,
    types: &[Type],
    select: &str,
    decode: fn(&BinaryCopyOutRow) -> Result<Flow, StoreError>,
    f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
) -> Result<u64, StoreError> {
    let reader = tx.copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))?;
    let mut rows = BinaryCopyOutIter::new(reader, types);
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += 1;
        if f(&decode(&row)?).is_break() {
            break;
        }
    }
    Ok(n)
}

pub(crate) fn micros_to_time(us: i64) -> Result<SystemTime, StoreError> {
    let d = Duration::from_micros(us.unsigned_abs());
    let t = if us >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.ok_or(StoreError::TimestampOutOfRange { ts_micros: us })
}

pub(crate) fn time_to_micros(t: SystemTime) -> Result<i64, StoreError> {
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
struct Sql {
    prefix: String,
    /// The COPY types, in [`FLOW_COLUMNS`] order.
    types: [Type; FLOW_COLUMNS.len()],
    /// `(columns) FROM STDIN (FORMAT binary)`, after `COPY table`.
    copy_tail: String,
    bump_max_ts: String,
    /// The COPY types of [`AGGREGATION_COLUMNS`].
    aggregation_types: [Type; 9],
    /// The max ts and late-batch number, row-locked until the batch commits.
    lock_stats: String,
    /// Raises max ts and records a late batch's number.
    bump_late: String,
    /// `COPY late_flows (seq, columns) FROM STDIN (FORMAT binary)`.
    copy_late: String,
    /// The late COPY types: `seq`, then [`FLOW_COLUMNS`].
    late_types: Vec<Type>,
    /// The max ts and late-batch number, unlocked.
    stats: String,
    /// `SELECT columns FROM flows WHERE `, completed with literal conditions (COPY).
    window: String,
    /// `SELECT columns FROM late_flows WHERE `, completed likewise.
    late_window: String,
    /// [`Sql::window`] and [`Sql::late_window`] of [`AGGREGATION_COLUMNS`].
    aggregation_window: String,
    aggregation_late_window: String,
    job_mark_get: String,
    job_mark_set: String,
    forget_late: String,
    expire_late: String,
    max_ts: String,
    upsert_exporter: String,
    exporters: String,
    job_get: String,
    job_set: String,
    partitions: String,
    summarize: String,
    mark_batch: String,
    last_batch: String,
    forget_writers: String,
    migrations_table: String,
}

impl Sql {
    fn new(prefix: &str) -> Sql {
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
            aggregation_types: [
                Type::INET,
                Type::INT8,
                Type::INT8,
                Type::INT2,
                Type::INT2,
                Type::INET,
                Type::INET,
                Type::INT4,
                Type::INT8,
            ],
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
            window: format!("SELECT {cols} FROM {p}flows WHERE "),
            late_window: format!("SELECT {cols} FROM {p}late_flows WHERE "),
            aggregation_window: format!("SELECT {AGGREGATION_COLUMNS} FROM {p}flows WHERE "),
            aggregation_late_window: format!(
                "SELECT {AGGREGATION_COLUMNS} FROM {p}late_flows WHERE "
            ),
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
            max_ts: format!("SELECT max_ts FROM {p}flow_stats WHERE id = 1"),
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
            job_get: format!("SELECT last_window_end FROM {p}bot_jobs WHERE job_id = $1"),
            job_set: format!(
                "INSERT INTO {p}bot_jobs (job_id, last_window_end, late_seq) VALUES ($1, $2, \
                 (SELECT late_seq FROM {p}flow_stats WHERE id = 1)) \
                 ON CONFLICT (job_id) DO UPDATE SET last_window_end = EXCLUDED.last_window_end"
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

    fn partition_name(&self, hour: i64) -> String {
        format!("{}flows_p{}", self.prefix, partition::hour_suffix(hour))
    }
}

/// The connection, re-established on the first call after it was lost, and the statements
/// prepared on it.
struct Conn {
    config: postgres::Config,
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => {
                self.statements.clear();
                self.config.connect(NoTls)?
            }
        };
        Ok(self.client.insert(client))
    }

    /// Runs `f` on a live connection; forgets the connection when `f` reports it lost.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Client, &mut HashMap<String, Statement>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let r = match self.client.as_mut() {
            Some(client) => f(client, &mut self.statements),
            None => {
                return Err(StoreError::Config {
                    setting: "connection",
                    why: "not connected",
                });
            }
        };
        if matches!(r, Err(StoreError::ConnectionLost(_))) {
            self.client = None;
        }
        r
    }
}

/// `sql` prepared once per connection (saves a round trip per batch).
fn prepared(
    client: &mut Client,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, StoreError> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    if statements.len() >= 64 {
        statements.clear(); // one COPY statement per hour partition: keep the cache small
    }
    let s = client.prepare(sql)?;
    statements.insert(sql.to_owned(), s.clone());
    Ok(s)
}

/// The PostgreSQL store. Build it with [`PgStore::open`] (or [`crate::open`]).
///
/// Flows go to `<prefix>flows`, partitioned by range of `ts` into one partition per UTC hour
/// named `<prefix>flows_pYYYYMMDDHH`, with a BRIN index on `ts`. Partitions are created ahead by
/// [`Store::ensure_partitions`] and, for a batch that needs one that is missing, on demand
/// before its COPY; retention drops whole partitions. Partition DDL is serialized across
/// processes by an advisory lock.
pub struct PgStore {
    conn: Conn,
    sql: Sql,
    retention_days: u32,
    partitions_ahead: u32,
    /// Hours whose partition is known to exist.
    partitions: BTreeSet<i64>,
    /// This store's row in `<prefix>writers`: random per instance.
    writer_id: i64,
    /// Number of the last batch attempted; committed with it into `<prefix>writers`.
    batch_seq: i64,
    /// A batch whose COMMIT was in flight when the connection was lost.
    in_doubt: Option<InDoubt>,
}

/// A batch that may or may not have landed: its number and a hash of its flows, to recognize
/// its retry.
#[derive(Debug, Clone, Copy)]
struct InDoubt {
    batch: i64,
    fingerprint: u64,
}

fn fingerprint(flows: &[Flow]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    flows.hash(&mut h);
    h.finish()
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("config", &self.conn.config)
            .field("connected", &self.conn.client.is_some())
            .field("prefix", &self.sql.prefix)
            .field("known_partitions", &self.partitions.len())
            .finish()
    }
}

impl PgStore {
    /// Connects and migrates the schema to [`SCHEMA_VERSION`].
    pub fn open(config: &StoreConfig) -> Result<PgStore, StoreError> {
        let mut store = PgStore::connect(config)?;
        store.migrate_to(SCHEMA_VERSION)?;
        store.refresh_partitions()?;
        Ok(store)
    }

    /// Connects without touching the schema (for tools and upgrade tests; the [`Store`]
    /// methods need [`PgStore::migrate_to`]`(`[`SCHEMA_VERSION`]`)` first).
    pub fn connect(config: &StoreConfig) -> Result<PgStore, StoreError> {
        config.validate()?;
        let Backend::Postgres(pg) = &config.backend else {
            return Err(StoreError::Config {
                setting: "backend",
                why: "not a PostgreSQL URL",
            });
        };
        let mut pg = postgres::Config::clone(pg);
        if pg.get_application_name().is_none() {
            pg.application_name("netflow-store");
        }
        let mut conn = Conn {
            config: pg,
            client: None,
            statements: HashMap::new(),
        };
        conn.client()?;
        Ok(PgStore {
            conn,
            sql: Sql::new(&config.table_prefix),
            retention_days: config.retention_days,
            partitions_ahead: config.partitions_ahead,
            partitions: BTreeSet::new(),
            writer_id: {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                i64::from_ne_bytes(h.finish().to_ne_bytes())
            },
            batch_seq: 0,
            in_doubt: None,
        })
    }

    /// Applies the migrations after the database's version up to `version`, each in its own
    /// transaction, holding a session advisory lock so that concurrent openers wait instead of
    /// migrating twice. Returns the version reached. Never downgrades.
    pub fn migrate_to(&mut self, version: u32) -> Result<u32, StoreError> {
        let key = schema::lock_key("migrate", &self.sql.prefix);
        let sql = &self.sql;
        self.conn.run(|client, _| {
            client.execute("SELECT pg_advisory_lock($1)", &[&key])?;
            let r = migrate_locked(client, sql, version);
            // on a lost connection the server has released the lock already
            let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
            let reached = r?;
            unlock?;
            Ok(reached)
        })
    }

    /// Reloads the set of existing partitions from the catalog.
    fn refresh_partitions(&mut self) -> Result<(), StoreError> {
        let sql = &self.sql;
        let found = self.conn.run(|client, _| {
            let skip = format!("{}flows_p", sql.prefix);
            let mut hours = BTreeSet::new();
            for row in client.query(&sql.partitions, &[])? {
                let name: String = row.try_get(0)?;
                if let Some(h) = name
                    .strip_prefix(&skip)
                    .and_then(partition::parse_hour_suffix)
                {
                    hours.insert(h);
                }
            }
            Ok(hours)
        })?;
        self.partitions = found;
        Ok(())
    }

    /// Creates the partitions of `hours` that are not known to exist.
    fn create_partitions(
        &mut self,
        hours: impl IntoIterator<Item = i64>,
    ) -> Result<(), StoreError> {
        let missing: Vec<i64> = hours
            .into_iter()
            .filter(|h| !self.partitions.contains(h))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let key = schema::lock_key("partitions", &self.sql.prefix);
        let sql = &self.sql;
        self.conn.run(|client, _| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
            for &h in &missing {
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {}flows FOR VALUES FROM ('{}') TO ('{}')",
                    sql.partition_name(h),
                    sql.prefix,
                    partition::hour_literal(h),
                    partition::hour_literal(h + 1),
                ))?;
            }
            tx.commit()?;
            Ok(())
        })?;
        self.partitions.extend(missing);
        Ok(())
    }

    /// One transaction: the COPY, then the max-ts bump. A batch within one hour is copied
    /// straight into its partition: routing rows through the parent costs the server about
    /// 1.5 ms per COPY statement, which dominates small batches (see benches/README.md).
    ///
    /// After the COPY the batch locks the one-row `flow_stats` until it commits and reads the
    /// max ts committed before it: its flows at or before that are late (a bot may have read a
    /// window ending there already) and are also copied to `late_flows` under the next batch
    /// number. The lock orders late numbers as commits; a bot's snapshot that sees max ts `M`
    /// and number `S` then sees every batch that committed with flows at or before `M`,
    /// except those numbered after `S`. Returns the late flow count.
    fn copy_batch(
        &mut self,
        flows: &[Flow],
        max_ts: i64,
        hour: Option<i64>,
    ) -> Result<u64, StoreError> {
        let sql = &self.sql;
        let copy = match hour {
            Some(h) => format!("COPY {} {}", sql.partition_name(h), sql.copy_tail),
            None => format!("COPY {}flows {}", sql.prefix, sql.copy_tail),
        };
        let max_ts = micros_to_time(max_ts)?;
        self.batch_seq += 1;
        let (writer, batch) = (self.writer_id, self.batch_seq);
        let mut committing = false;
        let r = self.conn.run(|client, statements| {
            let copy = prepared(client, statements, &copy)?;
            let bump = prepared(client, statements, &sql.bump_max_ts)?;
            let lock = prepared(client, statements, &sql.lock_stats)?;
            let mark = prepared(client, statements, &sql.mark_batch)?;
            let mut tx = client.transaction()?;
            let mut copy_writer = BinaryCopyInWriter::new(tx.copy_in(&copy)?, &sql.types);
            for f in flows {
                copy_writer.write(&PgRow::new(f)?.values())?;
            }
            copy_writer.finish()?;
            let stats = tx.query_one(&lock, &[])?;
            let late: Vec<&Flow> = match stats.try_get::<_, Option<SystemTime>>(0)? {
                Some(t) => {
                    let before = time_to_micros(t)?;
                    flows.iter().filter(|f| f.ts_micros <= before).collect()
                }
                None => Vec::new(),
            };
            if late.is_empty() {
                tx.execute(&bump, &[&max_ts])?;
            } else {
                let seq = stats.try_get::<_, i64>(1)?.saturating_add(1);
                let mut w = BinaryCopyInWriter::new(tx.copy_in(&sql.copy_late)?, &sql.late_types);
                for f in &late {
                    let row = PgRow::new(f)?;
                    let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(14);
                    values.push(&seq);
                    values.extend(row.values());
                    w.write(&values)?;
                }
                w.finish()?;
                tx.execute(&sql.bump_late, &[&max_ts, &seq])?;
            }
            tx.execute(&mark, &[&writer, &batch])?;
            committing = true;
            tx.commit()?;
            Ok(late.len() as u64)
        });
        if committing && matches!(r, Err(StoreError::ConnectionLost(_))) {
            self.in_doubt = Some(InDoubt {
                batch,
                fingerprint: fingerprint(flows),
            });
        }
        r
    }

    /// Whether the batch in doubt landed, if `flows` is its retry (`Some(true)`: do not write
    /// it again). Keeps the doubt while the server cannot be asked.
    fn resolve_doubt(&mut self, flows: &[Flow]) -> Result<bool, StoreError> {
        let Some(doubt) = self.in_doubt else {
            return Ok(false);
        };
        let (sql, writer) = (&self.sql, self.writer_id);
        let last: Option<i64> = self.conn.run(|client, _| {
            Ok(client
                .query_opt(&sql.last_batch, &[&writer])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })?;
        self.in_doubt = None;
        Ok(last.is_some_and(|b| b >= doubt.batch) && fingerprint(flows) == doubt.fingerprint)
    }
}

fn migrate_locked(client: &mut Client, sql: &Sql, target: u32) -> Result<u32, StoreError> {
    let p = &sql.prefix;
    client.batch_execute(&sql.migrations_table)?;
    let current: i32 = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {p}schema_migrations"),
            &[],
        )?
        .try_get(0)?;
    let current = crate::from_db::<u32>("version", current.into())?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    let mut reached = current;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        let mut tx = client.transaction()?;
        tx.batch_execute(&schema::sql(m.postgres, p))?;
        let v = i32::try_from(m.version).unwrap_or(i32::MAX);
        tx.execute(
            &format!("INSERT INTO {p}schema_migrations (version, description) VALUES ($1, $2)"),
            &[&v, &m.description],
        )?;
        tx.commit()?;
        reached = m.version;
    }
    Ok(reached)
}

impl Store for PgStore {
    fn write_flows_report(&mut self, flows: &[Flow]) -> Result<Written, StoreError> {
        let Some((lo, hi)) = crate::ts_span(flows)? else {
            return Ok(Written::default());
        };
        if self.resolve_doubt(flows)? {
            // the retry of a batch whose COMMIT landed although its reply was lost (its late
            // count went with the lost reply)
            return Ok(Written::default());
        }
        let (first, last) = (partition::hour_of(lo), partition::hour_of(hi));
        let hours: BTreeSet<i64> = if last - first <= 48 {
            (first..=last).collect()
        } else {
            flows
                .iter()
                .map(|f| partition::hour_of(f.ts_micros))
                .collect()
        };
        if hours.iter().any(|h| !self.partitions.contains(h)) {
            // another process may have created them: refresh before DDL
            self.refresh_partitions()?;
            self.create_partitions(hours.iter().copied())?;
        }
        let single = (first == last).then_some(first);
        let late = match self.copy_batch(flows, hi, single) {
            // Retention in another process may have dropped a cached partition: the COPY then
            // fails (no such relation, no partition for a row, or, for a prepared COPY, a
            // protocol error without SQLSTATE). Start from a fresh connection, look again, and
            // retry once if a partition was indeed missing.
            Err(StoreError::Postgres(e)) => {
                self.conn.client = None;
                self.refresh_partitions()?;
                if hours.iter().all(|h| self.partitions.contains(h)) {
                    return Err(StoreError::Postgres(e));
                }
                self.create_partitions(hours)?;
                self.copy_batch(flows, hi, single)
            }
            r => r,
        }?;
        Ok(Written { late })
    }

    fn max_ts(&mut self) -> Result<Option<i64>, StoreError> {
        let sql = &self.sql;
        self.conn.run(|client, _| {
            let row = client.query_opt(&sql.max_ts, &[])?;
            match row
                .map(|r| r.try_get::<_, Option<SystemTime>>(0))
                .transpose()?
                .flatten()
            {
                Some(t) => time_to_micros(t).map(Some),
                None => Ok(None),
            }
        })
    }

    fn for_each_flow(
        &mut self,
        exporters: &[IpAddr],
        after_micros: i64,
        upto_micros: i64,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        let after = after_micros.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS);
        let upto = upto_micros.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS);
        if exporters.is_empty() || after >= upto {
            return Ok(0);
        }
        let select = format!(
            "{}exporter = ANY({}) AND {}",
            self.sql.window,
            inet_array_literal(exporters),
            ts_range_literal(after, upto),
        );
        let sql = &self.sql;
        self.conn.run(|client, _| {
            let mut tx = client.transaction()?;
            // Without fresh statistics on a partition being filled, the planner believes the
            // BRIN index useless (no correlation known) and scans the whole hour for a
            // one-minute window. A bitmap scan is never much worse than a sequential one
            // here (for whole partitions it reads the same pages in order), so forbid the
            // sequential scan for this transaction only.
            tx.batch_execute("SET LOCAL enable_seqscan = off")?;
            let n = copy_out_flows(&mut tx, &sql.types, &select, f)?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        // a fixed lock order, so that concurrent writers cannot deadlock
        let mut sorted = deltas.to_vec();
        sorted.sort_by_key(|e| e.addr);
        let sql = &self.sql;
        self.conn.run(|client, _| {
            let mut tx = client.transaction()?;
            let stmt = tx.prepare(&sql.upsert_exporter)?;
            for e in &sorted {
                let (first, last) = (
                    micros_to_time(e.first_seen_micros)?,
                    micros_to_time(e.last_seen_micros)?,
                );
                tx.execute(
                    &stmt,
                    &[
                        &e.addr,
                        &first,
                        &last,
                        &crate::counter_to_db(e.packets),
                        &crate::counter_to_db(e.flows),
                        &crate::counter_to_db(e.lost_packets),
                        &crate::counter_to_db(e.lost_flows),
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError> {
        let sql = &self.sql;
        let mut list = self.conn.run(|client, _| {
            let mut out = Vec::new();
            for row in client.query(&sql.exporters, &[])? {
                out.push(Exporter {
                    addr: row.try_get(0)?,
                    first_seen_micros: time_to_micros(row.try_get(1)?)?,
                    last_seen_micros: time_to_micros(row.try_get(2)?)?,
                    packets: crate::from_db("packets", row.try_get(3)?)?,
                    flows: crate::from_db("flows", row.try_get(4)?)?,
                    lost_packets: crate::from_db("lost_packets", row.try_get(5)?)?,
                    lost_flows: crate::from_db("lost_flows", row.try_get(6)?)?,
                });
            }
            Ok(out)
        })?;
        list.sort_by_key(|e| e.addr);
        Ok(list)
    }

    fn job_window_end(&mut self, job_id: &str) -> Result<Option<i64>, StoreError> {
        let sql = &self.sql;
        self.conn.run(
            |client, _| match client.query_opt(&sql.job_get, &[&job_id])? {
                Some(row) => time_to_micros(row.try_get(0)?).map(Some),
                None => Ok(None),
            },
        )
    }

    fn set_job_window_end(&mut self, job_id: &str, end_micros: i64) -> Result<(), StoreError> {
        partition::check_ts(end_micros)?;
        let end = micros_to_time(end_micros)?;
        let sql = &self.sql;
        self.conn.run(|client, _| {
            client.execute(&sql.job_set, &[&job_id, &end])?;
            Ok(())
        })
    }

    fn read_job_window(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period_micros: i64,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Option<JobWindow>, StoreError> {
        let sql = &self.sql;
        let exporters_sql = inet_array_literal(exporters);
        type Decode = fn(&BinaryCopyOutRow) -> Result<Flow, StoreError>;
        let (window, late_window, types, decode): (&str, &str, &[Type], Decode) = match fields {
            Fields::Aggregation => (
                &sql.aggregation_window,
                &sql.aggregation_late_window,
                &sql.aggregation_types,
                flow_from_aggregation_row,
            ),
            _ => (
                &sql.window,
                &sql.late_window,
                &sql.types,
                flow_from_copy_row,
            ),
        };
        self.conn.run(|client, _| {
            // One snapshot for the marks and both streams (see `copy_batch`).
            let mut tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let stats = tx.query_one(&sql.stats, &[])?;
            let Some(max) = stats.try_get::<_, Option<SystemTime>>(0)? else {
                tx.commit()?;
                return Ok(None);
            };
            let upto = time_to_micros(max)?;
            let seq: i64 = stats.try_get(1)?;
            let (after, prev_seq) = match tx.query_opt(&sql.job_mark_get, &[&job_id])? {
                Some(r) => (time_to_micros(r.try_get(0)?)?, r.try_get::<_, i64>(1)?),
                None => (upto.saturating_sub(period_micros), seq),
            };
            tx.batch_execute("SET LOCAL enable_seqscan = off")?; // see for_each_flow
            let stopped = std::cell::Cell::new(false);
            let mut g = |fl: &Flow| {
                let r = f(fl);
                stopped.set(stopped.get() || r.is_break());
                r
            };
            let (lo, hi) = (
                after.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS),
                upto.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS),
            );
            let mut flows = 0;
            if !exporters.is_empty() && hi > lo {
                let select = format!(
                    "{window}exporter = ANY({exporters_sql}) AND {}",
                    ts_range_literal(lo, hi)
                );
                flows = copy_out(&mut tx, types, &select, decode, &mut g)?;
            }
            let mut late_flows = 0;
            if !exporters.is_empty() && seq > prev_seq && !stopped.get() && lo >= MIN_TS_MICROS {
                let select = format!(
                    "{late_window}seq > {prev_seq} AND seq <= {seq} \
                     AND exporter = ANY({exporters_sql}) AND ts <= '{}'",
                    partition::ts_literal(lo)
                );
                late_flows = copy_out(&mut tx, types, &select, decode, &mut g)?;
            }
            tx.commit()?;
            Ok(Some(JobWindow::read(
                after,
                upto,
                (prev_seq, seq),
                flows,
                late_flows,
            )))
        })
    }

    fn set_job_mark(&mut self, job_id: &str, mark: JobMark) -> Result<(), StoreError> {
        partition::check_ts(mark.window_end)?;
        let end = micros_to_time(mark.window_end)?;
        let sql = &self.sql;
        self.conn.run(|client, _| {
            client.execute(&sql.job_mark_set, &[&job_id, &end, &mark.late_seq])?;
            Ok(())
        })
    }

    fn forget_consumed_late(&mut self) -> Result<u64, StoreError> {
        let sql = &self.sql;
        self.conn
            .run(|client, _| Ok(client.execute(&sql.forget_late, &[])?))
    }

    fn ensure_partitions(&mut self, now_micros: i64) -> Result<(), StoreError> {
        partition::check_ts(now_micros)?;
        let now = partition::hour_of(now_micros);
        let last = now
            .saturating_add(i64::from(self.partitions_ahead))
            .min(partition::hour_of(MAX_TS_MICROS));
        let first = (now - 1).max(partition::hour_of(MIN_TS_MICROS));
        if !(first..=last).all(|h| self.partitions.contains(&h)) {
            self.refresh_partitions()?;
            self.create_partitions(first..=last)?;
        }
        // Summarize the BRIN ranges written since the last call in the hours being filled, so
        // that a window query skips the older blocks of its partition instead of scanning every
        // unsummarized range (autovacuum would summarize them only after ~20% growth).
        let sql = &self.sql;
        let tables = [sql.partition_name(now - 1), sql.partition_name(now)];
        self.conn.run(|client, _| {
            client.execute(&sql.summarize, &[&tables[0], &tables[1]])?;
            Ok(())
        })
    }

    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError> {
        let cutoff_hour = partition::hour_of(cutoff_micros);
        self.refresh_partitions()?;
        let old: Vec<i64> = self.partitions.range(..cutoff_hour).copied().collect();
        let key = schema::lock_key("partitions", &self.sql.prefix);
        let sql = &self.sql;
        if !old.is_empty() {
            self.conn.run(|client, _| {
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
                for &h in &old {
                    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", sql.partition_name(h)))?;
                }
                tx.commit()?;
                Ok(())
            })?;
        }
        for h in &old {
            self.partitions.remove(h);
        }
        let cutoff = micros_to_time(cutoff_hour.saturating_mul(HOUR_MICROS).max(MIN_TS_MICROS))?;
        self.conn.run(|client, _| {
            client.execute(&sql.forget_writers, &[&cutoff])?;
            client.execute(&sql.expire_late, &[&cutoff])?;
            Ok(())
        })?;
        Ok(Expired {
            cutoff_micros: cutoff_hour.saturating_mul(HOUR_MICROS),
            partitions_dropped: old.len() as u64,
            rows_deleted: None,
        })
    }

    fn expire(&mut self, now_micros: i64) -> Result<Expired, StoreError> {
        self.expire_before(partition::retention_cutoff(now_micros, self.retention_days))
    }

    fn query(
        &mut self,
        q: &crate::query::Query,
        f: &mut dyn FnMut(crate::query::QueryRow<'_>) -> ControlFlow<()>,
    ) -> Result<crate::query::Totals, StoreError> {
        q.validate()?;
        let prefix = &self.sql.prefix;
        self.conn
            .run(|client, _| crate::query_pg::run(client, prefix, q, f))
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let p = &self.sql.prefix;
        self.conn.run(|client, _| {
            let exists: bool = client
                .query_one(
                    &format!("SELECT to_regclass('{p}schema_migrations') IS NOT NULL"),
                    &[],
                )?
                .try_get(0)?;
            if !exists {
                return Ok(0);
            }
            let v: i32 = client
                .query_one(
                    &format!("SELECT coalesce(max(version), 0) FROM {p}schema_migrations"),
                    &[],
                )?
                .try_get(0)?;
            crate::from_db("version", v.into())
        })
    }
}
