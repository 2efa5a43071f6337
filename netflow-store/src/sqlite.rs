//! The SQLite backend: one file, WAL mode, one transaction and one prepared statement per batch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::partition::{self, HOUR_MICROS};
use crate::schema::{self, MIGRATIONS, SCHEMA_VERSION};
use crate::{
    Backend, Expired, Exporter, Fields, Flow, FlowRange, FlowRead, FlowWrite, Head, JobLedger,
    JobMark, Snapshot, StoreConfig, StoreError, Streamed, Upkeep, Written,
};

/// How long a writer waits for another connection's write lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store: the zero-setup default. Build it with [`SqliteStore::open`] (or
/// [`crate::open`]).
///
/// Same tables as PostgreSQL in spirit: times are `INTEGER` microseconds, addresses `BLOB`s of
/// 4 (IPv4) or 16 (IPv6) bytes, and an index on `flows.ts` serves the window query and
/// retention. The file is in WAL mode with `synchronous = NORMAL`: a committed batch survives
/// a crash of the process, but the last batches may be lost on power failure.
pub struct SqliteStore {
    conn: Connection,
    prefix: String,
    retention_days: u32,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn.path())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// An address as the 4- or 16-byte blob stored (v4-mapped IPv6 stays 16 bytes).
fn addr_bytes(ip: &IpAddr) -> ([u8; 16], usize) {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

pub(crate) fn addr_from_row(
    row: &Row<'_>,
    idx: usize,
    column: &'static str,
) -> Result<IpAddr, StoreError> {
    let blob = row.get_ref(idx)?.as_blob().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e))
    })?;
    if let Ok(b) = <[u8; 4]>::try_from(blob) {
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    } else if let Ok(b) = <[u8; 16]>::try_from(blob) {
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        Err(StoreError::BadValue {
            column,
            value: i64::try_from(blob.len()).unwrap_or(i64::MAX),
        })
    }
}

fn int<T: TryFrom<i64>>(row: &Row<'_>, idx: usize, column: &'static str) -> Result<T, StoreError> {
    crate::from_db(column, row.get::<_, i64>(idx)?)
}

pub(crate) fn flow_from_row(row: &Row<'_>) -> Result<Flow, StoreError> {
    Ok(Flow {
        ts_micros: row.get(0)?,
        exporter: addr_from_row(row, 1, "exporter")?,
        input_if: int(row, 2, "input_if")?,
        output_if: int(row, 3, "output_if")?,
        direction: int(row, 4, "direction")?,
        protocol: int(row, 5, "protocol")?,
        src_addr: addr_from_row(row, 6, "src_addr")?,
        dst_addr: addr_from_row(row, 7, "dst_addr")?,
        src_port: int(row, 8, "src_port")?,
        dst_port: int(row, 9, "dst_port")?,
        bytes: int(row, 10, "bytes")?,
        packets: int(row, 11, "packets")?,
        tcp_flags: int(row, 12, "tcp_flags")?,
        ..Flow::default()
    })
}

/// Switches the file to WAL mode and returns the journal mode now in force.
///
/// Switching needs a moment of exclusive access, and SQLite answers `SQLITE_BUSY` at once,
/// without calling the busy handler, when another connection is opening the same file at
/// that instant; so the switch is retried here, with a short backoff, for up to
/// [`BUSY_TIMEOUT`] like every other statement.
/// Inserts `flows` with the prepared `sql` (the flow columns as ?1..?13, then `seq` as ?14
/// when given).
fn insert_flows<'a>(
    conn: &Connection,
    sql: &str,
    flows: impl Iterator<Item = &'a Flow>,
    seq: Option<i64>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    for f in flows {
        let (exp, exp_len) = addr_bytes(&f.exporter);
        let (src, src_len) = addr_bytes(&f.src_addr);
        let (dst, dst_len) = addr_bytes(&f.dst_addr);
        let cols = params![
            f.ts_micros,
            &exp[..exp_len],
            f.input_if,
            f.output_if,
            f.direction,
            f.protocol,
            &src[..src_len],
            &dst[..dst_len],
            f.src_port,
            f.dst_port,
            crate::counter_to_db(f.bytes),
            crate::counter_to_db(f.packets),
            f.tcp_flags,
        ];
        match seq {
            None => stmt.execute(cols)?,
            Some(s) => {
                let mut all = cols.to_vec();
                all.push(&s);
                stmt.execute(all.as_slice())?
            }
        };
    }
    Ok(())
}

/// Streams the rows of `sql` (the flow columns, with `leading` bound to its first `?`s) whose
/// exporter is one of `exporters` to `f`, projected to `fields` (every column is read: a local
/// file has no wire to save, and both backends then hand out the same flows).
fn stream_flows(
    conn: &Connection,
    sql: &str,
    leading: &[i64],
    exporters: &[IpAddr],
    fields: Fields,
    f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
) -> Result<Streamed, StoreError> {
    let mut read = Streamed::default();
    // SQLite caps bound parameters (32766 by default): chunk very long exporter lists
    for chunk in exporters.chunks(1000) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut stmt = conn.prepare_cached(&format!("{sql} AND exporter IN ({marks})"))?;
        for (i, v) in leading.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, *v)?;
        }
        for (i, e) in chunk.iter().enumerate() {
            let (b, len) = addr_bytes(e);
            stmt.raw_bind_parameter(i + 1 + leading.len(), &b[..len])?;
        }
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            read.flows += 1;
            if f(&fields.project(&flow_from_row(row)?)).is_break() {
                read.stopped = true;
                return Ok(read);
            }
        }
    }
    Ok(read)
}

fn switch_to_wal(conn: &Connection) -> Result<String, StoreError> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() + pause < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the file and migrates the schema to [`SCHEMA_VERSION`].
    pub fn open(config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        let mut store = SqliteStore::connect(config)?;
        store.migrate_to(SCHEMA_VERSION)?;
        Ok(store)
    }

    /// Opens the file without touching the schema (for tools and upgrade tests).
    pub fn connect(config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        config.validate()?;
        let Backend::Sqlite(path) = &config.backend else {
            return Err(StoreError::Config {
                setting: "backend",
                why: "not an SQLite path",
            });
        };
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = switch_to_wal(&conn)?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Config {
                setting: "SQLite path",
                why: "cannot switch the file to WAL mode",
            });
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        Ok(SqliteStore {
            conn,
            prefix: config.table_prefix.clone(),
            retention_days: config.retention_days,
        })
    }

    /// Applies the migrations after the file's version up to `version`, each in its own
    /// `BEGIN IMMEDIATE` transaction that re-reads the version under the write lock, so
    /// concurrent openers never migrate twice. Returns the version reached.
    pub fn migrate_to(&mut self, version: u32) -> Result<u32, StoreError> {
        let p = self.prefix.clone();
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {p}schema_migrations (version INTEGER PRIMARY KEY, \
             description TEXT NOT NULL, applied_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')))"
        ))?;
        let mut reached = self.schema_version()?;
        if reached > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: reached,
                supported: SCHEMA_VERSION,
            });
        }
        for m in MIGRATIONS.iter().filter(|m| m.version <= version) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: u32 = tx.query_row(
                &format!("SELECT coalesce(max(version), 0) FROM {p}schema_migrations"),
                [],
                |r| r.get(0),
            )?;
            if current >= m.version {
                continue; // dropping tx rolls back the empty transaction
            }
            tx.execute_batch(&schema::sql(m.sqlite, &p))?;
            tx.execute(
                &format!("INSERT INTO {p}schema_migrations (version, description) VALUES (?1, ?2)"),
                params![m.version, m.description],
            )?;
            tx.commit()?;
            reached = m.version;
        }
        Ok(reached)
    }
}

impl FlowWrite for SqliteStore {
    fn write_flows(&mut self, flows: &[Flow]) -> Result<Written, StoreError> {
        let Some((_, hi)) = crate::ts_span(flows)? else {
            return Ok(Written::default());
        };
        let p = &self.prefix;
        // The write lock is taken first (IMMEDIATE), so the max ts read here is the one every
        // reader saw before this batch: flows at or before it are late (see the PostgreSQL
        // backend's copy_batch).
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let late;
        {
            let (before, seq): (Option<i64>, i64) = tx
                .prepare_cached(&format!(
                    "SELECT max_ts, late_seq FROM {p}flow_stats WHERE id = 1"
                ))?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let cols = schema::flow_column_list();
            insert_flows(
                &tx,
                &format!(
                    "INSERT INTO {p}flows ({cols}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                flows.iter(),
                None,
            )?;
            let late_flows = flows
                .iter()
                .filter(|f| before.is_some_and(|b| f.ts_micros <= b));
            late = late_flows.clone().count() as u64;
            if late > 0 {
                let seq = seq.saturating_add(1);
                insert_flows(
                    &tx,
                    &format!(
                        "INSERT INTO {p}late_flows ({cols}, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                    ),
                    late_flows,
                    Some(seq),
                )?;
                tx.prepare_cached(&format!(
                    "UPDATE {p}flow_stats SET max_ts = max(coalesce(max_ts, ?1), ?1), late_seq = ?2 WHERE id = 1"
                ))?
                .execute([hi, seq])?;
            } else {
                tx.prepare_cached(&format!(
                    "UPDATE {p}flow_stats SET max_ts = max(coalesce(max_ts, ?1), ?1) WHERE id = 1"
                ))?
                .execute([hi])?;
            }
        }
        tx.commit()?;
        Ok(Written { late })
    }

    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError> {
        let p = &self.prefix;
        let sat = |c: &str| {
            format!(
                "{c} = CASE WHEN {p}exporters.{c} > 9223372036854775807 - excluded.{c} \
                 THEN 9223372036854775807 ELSE {p}exporters.{c} + excluded.{c} END"
            )
        };
        let sql = format!(
            "INSERT INTO {p}exporters (addr, first_seen, last_seen, packets, flows, lost_packets, lost_flows) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (addr) DO UPDATE SET \
             first_seen = min({p}exporters.first_seen, excluded.first_seen), \
             last_seen = max({p}exporters.last_seen, excluded.last_seen), {}, {}, {}, {}",
            sat("packets"),
            sat("flows"),
            sat("lost_packets"),
            sat("lost_flows")
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            for e in deltas {
                let (a, len) = addr_bytes(&e.addr);
                stmt.execute(params![
                    &a[..len],
                    e.first_seen_micros,
                    e.last_seen_micros,
                    crate::counter_to_db(e.packets),
                    crate::counter_to_db(e.flows),
                    crate::counter_to_db(e.lost_packets),
                    crate::counter_to_db(e.lost_flows),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// A deferred transaction: in WAL mode it reads one snapshot from its first `SELECT` to its
/// end.
struct SqliteSnapshot<'a, 'c> {
    tx: rusqlite::Transaction<'c>,
    prefix: &'a str,
}

impl Snapshot for SqliteSnapshot<'_, '_> {
    fn head(&mut self) -> Result<Head, StoreError> {
        let p = self.prefix;
        let (max_ts, late_seq) = self
            .tx
            .prepare_cached(&format!(
                "SELECT max_ts, late_seq FROM {p}flow_stats WHERE id = 1"
            ))?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Head { max_ts, late_seq })
    }

    fn job_mark(&mut self, job_id: &str) -> Result<Option<JobMark>, StoreError> {
        let p = self.prefix;
        Ok(self
            .tx
            .prepare_cached(&format!(
                "SELECT last_window_end, late_seq FROM {p}bot_jobs WHERE job_id = ?1"
            ))?
            .query_row([job_id], |r| {
                Ok(JobMark {
                    window_end: r.get(0)?,
                    late_seq: r.get(1)?,
                })
            })
            .optional()?)
    }

    fn flows(
        &mut self,
        exporters: &[IpAddr],
        range: FlowRange,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Streamed, StoreError> {
        let (p, cols) = (self.prefix, schema::flow_column_list());
        let (sql, leading) = match range {
            FlowRange::Time { after, upto } if after < upto => (
                format!("SELECT {cols} FROM {p}flows WHERE ts > ? AND ts <= ?"),
                vec![after, upto],
            ),
            FlowRange::Late {
                after_seq,
                upto_seq,
                ts_upto,
            } if after_seq < upto_seq => (
                format!("SELECT {cols} FROM {p}late_flows WHERE seq > ? AND seq <= ? AND ts <= ?"),
                vec![after_seq, upto_seq, ts_upto],
            ),
            _ => return Ok(Streamed::default()),
        };
        stream_flows(&self.tx, &sql, &leading, exporters, fields, f)
    }
}

impl FlowRead for SqliteStore {
    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut snapshot = SqliteSnapshot {
            tx: self.conn.transaction()?,
            prefix: &self.prefix,
        };
        f(&mut snapshot)?;
        snapshot.tx.commit()?;
        Ok(())
    }

    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT addr, first_seen, last_seen, packets, flows, lost_packets, lost_flows FROM {}exporters",
            self.prefix
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Exporter {
                addr: addr_from_row(row, 0, "addr")?,
                first_seen_micros: row.get(1)?,
                last_seen_micros: row.get(2)?,
                packets: int(row, 3, "packets")?,
                flows: int(row, 4, "flows")?,
                lost_packets: int(row, 5, "lost_packets")?,
                lost_flows: int(row, 6, "lost_flows")?,
            });
        }
        out.sort_by_key(|e| e.addr);
        Ok(out)
    }

    fn query(
        &mut self,
        q: &crate::query::Query,
        f: &mut dyn FnMut(crate::query::QueryRow<'_>) -> ControlFlow<()>,
    ) -> Result<crate::query::Totals, StoreError> {
        q.validate()?;
        crate::query_sqlite::run(&self.conn, &self.prefix, q, f)
    }
}

impl JobLedger for SqliteStore {
    fn set_job_mark(&mut self, job_id: &str, mark: JobMark) -> Result<(), StoreError> {
        partition::check_ts(mark.window_end)?;
        let p = &self.prefix;
        self.conn.execute(
            &format!(
                "INSERT INTO {p}bot_jobs (job_id, last_window_end, late_seq) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job_id) DO UPDATE SET last_window_end = excluded.last_window_end, \
                 late_seq = excluded.late_seq"
            ),
            params![job_id, mark.window_end, mark.late_seq],
        )?;
        Ok(())
    }

    fn forget_consumed_late(&mut self) -> Result<u64, StoreError> {
        let p = &self.prefix;
        let n = self.conn.execute(
            &format!(
                "DELETE FROM {p}late_flows WHERE seq <= (SELECT min(late_seq) FROM {p}bot_jobs)"
            ),
            [],
        )?;
        Ok(n as u64)
    }
}

impl Upkeep for SqliteStore {
    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError> {
        let cutoff = partition::hour_of(cutoff_micros).saturating_mul(HOUR_MICROS);
        let deleted = self.conn.execute(
            &format!("DELETE FROM {}flows WHERE ts < ?1", self.prefix),
            [cutoff],
        )?;
        self.conn.execute(
            &format!("DELETE FROM {}late_flows WHERE ts < ?1", self.prefix),
            [cutoff],
        )?;
        Ok(Expired {
            cutoff_micros: cutoff,
            partitions_dropped: 0,
            rows_deleted: Some(deleted as u64),
        })
    }

    fn retention_days(&self) -> u32 {
        self.retention_days
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let p = &self.prefix;
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [format!("{p}schema_migrations")],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        Ok(self.conn.query_row(
            &format!("SELECT coalesce(max(version), 0) FROM {p}schema_migrations"),
            [],
            |r| r.get(0),
        )?)
    }
}
