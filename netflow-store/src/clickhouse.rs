//! The ClickHouse backend: flows in a `MergeTree` table over HTTP, inserted in RowBinary.
//!
//! # Exactly once without transactions
//!
//! ClickHouse has no multi-statement transactions, and insert deduplication exists only for
//! `Replicated*` tables (and, in current releases, behind a setting for plain `MergeTree`).
//! What it does guarantee, on every release this crate supports: **one inserted block becomes
//! one part per partition, and a part appears whole or not at all** (written to a temporary
//! directory, then renamed; a crash leaves only the temporary directory, removed at start). A
//! RowBinary `INSERT` of at most `max_insert_block_size` rows is one block. So a batch is
//! written as:
//!
//! 1. one `INSERT` per hour partition into `<prefix>flows` (each one part: atomic), every row
//!    carrying the batch number `seq`;
//! 2. last, one row in `<prefix>batches`: the commit record (with the batch's time span and
//!    late count). **Readers see only rows whose `seq` has a commit record**, so a batch is
//!    invisible until it is complete.
//!
//! Each insert carries a query id naming the batch and step. When any step fails, the store
//! remembers the batch number and a hash of the flows. The retry (the same flows) first waits
//! until none of the batch's inserts still runs in the server (`system.processes`: an insert
//! whose reply was lost may still be writing), then asks which steps landed: the commit record
//! (then it is done), else, per hour, `count()` of its rows with that `seq` (all of them: skip;
//! none: insert). Nothing is stored twice, nothing dropped. A batch given up (the caller writes
//! other flows instead), or retried after the store's last commit is over a minute old, stays
//! invisible under its old number (its rows leave with their hour) and is written anew under a new one.
//!
//! # Batch numbers and readers
//!
//! Batch numbers come from the clock in microseconds, above the store's last one, and each
//! store (one writer and its database) commits them in order. A reader sees the batches up to
//! a snapshot number below which nothing can still commit: with one writer, its last number;
//! over the shards of a `Distributed` table, the smallest of the active writers' last numbers
//! (see `read.rs`). **One writer per database**: the collector's writer writes, the bot and
//! the queries only read. Several writers each write a database (a shard) of their own.
#![allow(clippy::cast_possible_truncation)]

mod exporters;
mod http;
mod pushdown;
mod query;
mod read;
pub(crate) mod rowbinary;
mod schema;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use self::http::Http;
use self::rowbinary::{FLOW_COLUMNS, FLOW_ROW_LEN, Reader, addr16, put_flow};
use crate::partition::{HOUR_MICROS, check_ts, hour_of};
use crate::{
    Aggregation, Backend, Expired, Exporter, Flow, FlowRead, FlowWrite, JobLedger, JobMark,
    SCHEMA_VERSION, Snapshot, StoreConfig, StoreError, Upkeep, Written, from_db, ts_span,
};

/// A store in a ClickHouse database.
#[derive(Debug)]
pub struct ClickHouseStore {
    http: Http,
    /// `database.prefix` of every table name.
    t: String,
    db: String,
    prefix: String,
    retention_days: u32,
    /// Where the bot's window sums are computed (`CLICKHOUSE_AGGREGATION`).
    aggregation: Aggregation,
    next_seq: u64,
    /// The commit records' max ts and max batch number, once read (`None`: not known).
    committed: Option<Committed>,
    in_doubt: Option<InDoubt>,
    /// This database's writer identity (`<prefix>store`), in its commit records.
    store_id: u64,
    last_version: u64,
}

/// A database's newest commit: the max ts of its flows (`None` before the first flow) and the
/// highest batch number (heartbeats included; 0 before the first).
#[derive(Debug, Clone, Copy)]
struct Committed {
    max_ts: Option<i64>,
    seq: u64,
}

/// A batch that may have landed in part.
#[derive(Debug, Clone, Copy)]
struct InDoubt {
    seq: u64,
    hash: u64,
}

fn batch_hash(flows: &[Flow]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    flows.hash(&mut h);
    h.finish()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A SQL string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A `FixedString(16)` literal of the stored bytes of `a`.
fn addr_literal(a: IpAddr) -> String {
    let (b, _) = addr16(a);
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("toFixedString(unhex('{hex}'), 16)")
}

fn flow_column_list() -> String {
    FLOW_COLUMNS.map(|(n, _)| n).join(", ")
}

impl ClickHouseStore {
    /// Connects, creates the database if it is missing and applies the migrations it lacks.
    pub fn open(config: &StoreConfig) -> Result<ClickHouseStore, StoreError> {
        config.validate()?;
        let Backend::ClickHouse(c) = &config.backend else {
            return Err(StoreError::Config {
                setting: "backend",
                why: "not a ClickHouse configuration",
            });
        };
        let http = Http::new(
            &c.url,
            &c.database,
            c.user.as_deref(),
            c.password.as_deref(),
        );
        let mut store = ClickHouseStore {
            http,
            t: format!("{}.{}", c.database, config.table_prefix),
            db: c.database.clone(),
            prefix: config.table_prefix.clone(),
            retention_days: config.retention_days,
            aggregation: c.aggregation,
            next_seq: 0,
            committed: None,
            in_doubt: None,
            last_version: 0,
            store_id: 0,
        };
        store.migrate()?;
        store.store_id = store.read_store_id()?;
        let last = store.committed()?.seq;
        store.next_seq = (last + 1).max(now_micros());
        Ok(store)
    }

    /// The database's writer identity, made on first use.
    fn read_store_id(&mut self) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT min(id), count() FROM {}store FORMAT RowBinary",
            self.t
        );
        let mut r = Reader::new(&self.http.query(&sql)?).u64_pair()?;
        if r.1 == 0 {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now_micros());
            let id = h.finish().max(1);
            self.http.execute(
                &format!("INSERT INTO {}store (id) VALUES ({id})", self.t),
                true,
            )?;
            // two openers at once: the smallest id wins for both
            r = Reader::new(&self.http.query(&sql)?).u64_pair()?;
        }
        Ok(r.0)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let t = &self.t.clone();
        self.http
            .execute(&format!("CREATE DATABASE IF NOT EXISTS {}", self.db), false)?;
        self.http.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {t}schema_migrations (version UInt32, \
                 applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
            ),
            true,
        )?;
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let columns: Vec<String> = FLOW_COLUMNS
            .iter()
            .map(|(n, ty)| format!("{n} {ty}"))
            .collect();
        for &(version, statements) in schema::MIGRATIONS {
            if version <= found {
                continue;
            }
            // each statement is idempotent (IF NOT EXISTS): concurrent openers may both run
            // them; the version is recorded once all have succeeded
            for s in statements {
                let sql = s
                    .replace("{db}.{p}", t)
                    .replace("{flow_columns}", &columns.join(", "));
                self.http.execute(&sql, true)?;
            }
            self.http.execute(
                &format!("INSERT INTO {t}schema_migrations (version) VALUES ({version})"),
                true,
            )?;
        }
        Ok(())
    }

    /// A job-ledger version number: increasing within this store, and across stores by clock.
    fn version(&mut self) -> u64 {
        self.last_version = (self.last_version + 1).max(now_micros());
        self.last_version
    }

    /// This database's newest commit (cached until a write fails or another reader asks).
    fn committed(&mut self) -> Result<Committed, StoreError> {
        if let Some(c) = self.committed {
            return Ok(c);
        }
        let reply = self.http.query(&format!(
            "SELECT maxIf(max_ts, flows > 0), max(seq), countIf(flows > 0) FROM {}batches \
             FORMAT RowBinary",
            self.t
        ))?;
        let mut r = Reader::new(&reply);
        let (max_ts, seq, n) = (r.i64()?, r.u64()?, r.u64()?);
        let c = Committed {
            max_ts: (n > 0).then_some(max_ts),
            seq,
        };
        self.committed = Some(c);
        Ok(c)
    }

    /// The number of a new batch: above the last one and the clock (see [`read`]), after a
    /// heartbeat when this store has not committed for a while.
    fn new_seq(&mut self) -> Result<u64, StoreError> {
        let seq = self.next_seq.max(now_micros());
        self.next_seq = seq + 1;
        let last = self.committed()?.seq;
        if seq.saturating_sub(last) <= read::HEARTBEAT_MICROS {
            return Ok(seq);
        }
        self.commit(seq, 0, 0, (i64::MAX, i64::MIN))?;
        self.committed = Some(Committed {
            seq,
            ..self.committed()?
        });
        let next = self.next_seq;
        self.next_seq += 1;
        Ok(next)
    }

    /// `nf-<store>-<seq>-`: the prefix of the query ids of a batch's inserts.
    fn query_prefix(&self, seq: u64) -> String {
        format!("nf-{:016x}-{seq}-", self.store_id)
    }

    /// Waits until no insert of batch `seq` still runs on the server (one whose reply was
    /// lost may still be writing its part), so that what the retry counts is final.
    fn wait_idle(&self, seq: u64) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT count() FROM system.processes WHERE query_id LIKE '{}%' FORMAT RowBinary",
            self.query_prefix(seq)
        );
        for _ in 0..600 {
            if Reader::new(&self.http.query(&sql)?).u64()? == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(StoreError::ClickHouse {
            status: 0,
            code: 216,
            message: "an earlier insert of this batch still runs after 30 s".into(),
        })
    }

    /// Rows of batch `seq` within the hour `hour`.
    fn count_rows(&self, seq: u64, hour: i64) -> Result<u64, StoreError> {
        let lo = hour * HOUR_MICROS;
        let reply = self.http.query(&format!(
            "SELECT count() FROM {}flows WHERE ts >= {lo} AND ts < {} AND seq = {seq} \
             FORMAT RowBinary",
            self.t,
            lo + HOUR_MICROS
        ))?;
        Reader::new(&reply).u64()
    }

    /// The commit record of batch `seq`: its late count, `None` if it is not committed.
    fn commit_record(&self, seq: u64) -> Result<Option<u64>, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT late FROM {}batches WHERE seq = {seq} LIMIT 1 FORMAT RowBinary",
            self.t
        ))?;
        let mut r = Reader::new(&reply);
        if r.is_empty() {
            Ok(None)
        } else {
            r.u64().map(Some)
        }
    }

    /// Writes the commit record of batch `seq` (a heartbeat: no flows, `min_ts` above
    /// `max_ts`, so that no window selects it).
    fn commit(
        &self,
        seq: u64,
        flows: u64,
        late: u64,
        (lo, hi): (i64, i64),
    ) -> Result<(), StoreError> {
        let mut row = Vec::with_capacity(48);
        for v in [seq, self.store_id, flows, late] {
            row.extend_from_slice(&v.to_le_bytes());
        }
        row.extend_from_slice(&lo.to_le_bytes());
        row.extend_from_slice(&hi.to_le_bytes());
        self.http.insert(
            &format!("{}batches", self.t),
            "seq, store_id, flows, late, min_ts, max_ts",
            &row,
            &[("query_id", format!("{}commit", self.query_prefix(seq)))],
        )
    }

    /// Inserts a batch's rows, one insert (one part) per hour; on a retry, skips the hours
    /// that landed.
    fn insert_groups(
        &self,
        groups: &BTreeMap<i64, Vec<&Flow>>,
        seq: u64,
        retry: bool,
    ) -> Result<(), StoreError> {
        let columns = flow_column_list();
        let mut buf = Vec::new();
        for (&hour, rows) in groups {
            if retry {
                let n = self.count_rows(seq, hour)?;
                if n == rows.len() as u64 {
                    continue;
                }
                if n != 0 {
                    return Err(StoreError::ClickHouseReply(
                        "a part of a batch holds only some of its rows (insert not atomic?)",
                    ));
                }
            }
            buf.clear();
            buf.reserve(rows.len() * FLOW_ROW_LEN);
            for f in rows {
                put_flow(&mut buf, f, seq);
            }
            // one block, so one part: all or nothing
            let block = rows.len().max(1_048_576).to_string();
            self.http.insert(
                &format!("{}flows", self.t),
                &columns,
                &buf,
                &[
                    ("max_insert_block_size", block),
                    ("query_id", format!("{}{hour}", self.query_prefix(seq))),
                ],
            )?;
        }
        Ok(())
    }

    /// Writes batch `seq`; `retry` when an earlier attempt may have landed in part.
    fn write_batch(
        &mut self,
        flows: &[Flow],
        seq: u64,
        retry: bool,
        span: (i64, i64),
    ) -> Result<Written, StoreError> {
        let max_before = self.committed()?.max_ts;
        let mut groups: BTreeMap<i64, Vec<&Flow>> = BTreeMap::new();
        let mut late = 0u64;
        for f in flows {
            groups.entry(hour_of(f.ts_micros)).or_default().push(f);
            if max_before.is_some_and(|m| f.ts_micros <= m) {
                late += 1;
            }
        }
        self.insert_groups(&groups, seq, retry)?;
        self.commit(seq, flows.len() as u64, late, span)?;
        let c = self.committed()?;
        self.committed = Some(Committed {
            max_ts: Some(c.max_ts.map_or(span.1, |m| m.max(span.1))),
            seq: c.seq.max(seq),
        });
        Ok(Written { late })
    }

    fn partitions(&self, table: &str) -> Result<Vec<i64>, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT DISTINCT toInt64(partition) FROM system.parts WHERE database = {} \
             AND table = {} AND active FORMAT RowBinary",
            quote(&self.db),
            quote(&format!("{}{table}", self.prefix))
        ))?;
        let mut r = Reader::new(&reply);
        let mut out = Vec::new();
        while !r.is_empty() {
            out.push(r.i64()?);
        }
        Ok(out)
    }
}

impl FlowWrite for ClickHouseStore {
    fn write_flows(&mut self, flows: &[Flow]) -> Result<Written, StoreError> {
        let Some(span) = ts_span(flows)? else {
            // an empty batch: the idle writer's heartbeat (see read.rs)
            self.heartbeat()?;
            return Ok(Written::default());
        };
        let hash = batch_hash(flows);
        let attempt = (|| {
            let (mut seq, mut retry) = match self.in_doubt {
                Some(d) if d.hash == hash => (d.seq, true),
                _ => (self.new_seq()?, false),
            };
            self.in_doubt = Some(InDoubt { seq, hash });
            if retry {
                self.wait_idle(seq)?;
                if let Some(late) = self.commit_record(seq)? {
                    return Ok(Written { late });
                }
                let last = self.committed()?.seq;
                if last > seq || now_micros().saturating_sub(last) > read::HEARTBEAT_MICROS {
                    // not to be committed now (a store commits in number order, and readers
                    // may have passed it): the rows that landed stay invisible, the batch is
                    // written anew under a new number
                    seq = self.new_seq()?;
                    self.in_doubt = Some(InDoubt { seq, hash });
                    retry = false;
                }
            }
            self.write_batch(flows, seq, retry, span)
        })();
        match attempt {
            Ok(w) => {
                self.in_doubt = None;
                Ok(w)
            }
            Err(e) => {
                self.committed = None;
                Err(e)
            }
        }
    }

    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError> {
        exporters::upsert(self, deltas)
    }
}

impl FlowRead for ClickHouseStore {
    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let view = self.view()?;
        f(&mut read::ChSnapshot { store: self, view })
    }

    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError> {
        exporters::read(self)
    }

    fn query(
        &mut self,
        q: &crate::query::Query,
        f: &mut dyn FnMut(crate::query::QueryRow<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<crate::query::Totals, StoreError> {
        q.validate()?;
        self.run_query(q, f)
    }
}

impl JobLedger for ClickHouseStore {
    fn set_job_mark(&mut self, job_id: &str, mark: JobMark) -> Result<(), StoreError> {
        check_ts(mark.window_end)?;
        let late_seq: u64 = from_db("late_seq", mark.late_seq)?;
        let version = self.version();
        let mut buf = Vec::new();
        rowbinary::put_string(&mut buf, job_id);
        buf.extend_from_slice(&mark.window_end.to_le_bytes());
        buf.extend_from_slice(&late_seq.to_le_bytes());
        buf.extend_from_slice(&version.to_le_bytes());
        self.http.insert(
            &format!("{}jobs", self.t),
            "job_id, window_end, late_seq, version",
            &buf,
            &[],
        )
    }

    fn forget_consumed_late(&mut self) -> Result<u64, StoreError> {
        self.forget_late()
    }
}

impl Upkeep for ClickHouseStore {
    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError> {
        let cutoff_hour = hour_of(cutoff_micros);
        let first_kept = cutoff_hour.saturating_add(schema::EPOCH_HOUR);
        let mut dropped = 0;
        for table in ["flows"] {
            for p in self.partitions(table)? {
                if p < first_kept {
                    self.http.execute(
                        &format!("ALTER TABLE {}{table} DROP PARTITION {p}", self.t),
                        true,
                    )?;
                    if table == "flows" {
                        dropped += 1;
                    }
                }
            }
        }
        Ok(Expired {
            cutoff_micros: cutoff_hour.saturating_mul(HOUR_MICROS),
            partitions_dropped: dropped,
            rows_deleted: None,
        })
    }

    fn retention_days(&self) -> u32 {
        self.retention_days
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT max(version) FROM {}schema_migrations FORMAT RowBinary",
            self.t
        ))?;
        Reader::new(&reply).u32()
    }
}

impl ClickHouseStore {
    /// An empty commit record when this store has committed nothing for a while and no batch
    /// is in doubt (see read.rs). ClickHouse makes partitions by itself.
    fn heartbeat(&mut self) -> Result<(), StoreError> {
        let last = self.committed()?.seq;
        let seq = self.next_seq.max(now_micros());
        if seq.saturating_sub(last) > read::IDLE_HEARTBEAT_MICROS && self.in_doubt.is_none() {
            self.next_seq = seq + 1;
            self.commit(seq, 0, 0, (i64::MAX, i64::MIN))?;
            let c = self.committed()?;
            self.committed = Some(Committed { seq, ..c });
        }
        Ok(())
    }
}
