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
//! 2. the same for its late flows into `<prefix>late`;
//! 3. last, one row in `<prefix>batches`: the commit record. **Readers see only rows whose
//!    `seq` is in `<prefix>batches`**, so a batch is invisible until it is complete.
//!
//! When any step fails, the store remembers the batch number and a hash of the flows. The
//! retry (the same flows) first asks which steps landed: the commit record (then it is done),
//! else, per partition, `count()` of its rows with that `seq` in that hour (all of them: skip;
//! none: insert). Nothing is stored twice, nothing dropped. A batch given up (the caller writes
//! other flows instead) stays invisible forever, and its rows leave with their hour.
//!
//! Batch numbers start, per opened store, above both the last committed number and the
//! current time in microseconds, so that a process that crashed mid-batch never shares a
//! number with its successor.
//!
//! # One writer per database
//!
//! The late-flow bookkeeping reads "every batch numbered up to S is complete" from the commit
//! records, which holds when one store writes the database (the collector's writer; the bot
//! and the queries only read). Several writers each write a database (or shard) of their own.
#![allow(clippy::cast_possible_truncation)]

mod http;
mod pushdown;
pub(crate) mod rowbinary;
mod schema;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::{SystemTime, UNIX_EPOCH};

use self::http::Http;
use self::rowbinary::{FLOW_COLUMNS, FLOW_ROW_LEN, Reader, addr_from16, addr16, put_flow};
use crate::partition::{HOUR_MICROS, check_ts, hour_of, retention_cutoff};
use crate::{
    Backend, Expired, Exporter, Fields, Flow, JobMark, JobWindow, SCHEMA_VERSION, Store,
    StoreConfig, StoreError, Written, counter_to_db, from_db, ts_span,
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
    next_seq: u64,
    /// The commit records' max ts and max batch number, once read (`None`: not known).
    committed: Option<Committed>,
    in_doubt: Option<InDoubt>,
    last_version: u64,
}

/// The newest commit: max ts and max batch number (`None` before the first batch).
#[derive(Debug, Clone, Copy)]
struct Committed(Option<(i64, u64)>);

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

/// The SELECT list of a flow row: the fields not in `fields` as typed zeros.
fn select_list(fields: Fields) -> String {
    FLOW_COLUMNS
        .iter()
        .map(|&(name, ty)| {
            let zero = matches!(fields, Fields::Aggregation)
                && matches!(name, "ts" | "src_port" | "packets" | "tcp_flags");
            if zero || name == "seq" {
                format!("to{ty}(0)")
            } else {
                name.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a job's next run reads: `after < ts <= upto` from batches up to `seq`, and the late
/// flows with `ts <= after` of batches after `from` (the job's mark, or the forgotten ones).
#[derive(Debug, Clone)]
struct JobBounds {
    after: i64,
    upto: i64,
    prev_seq: u64,
    from: u64,
    seq: u64,
    /// `database.prefix` of the tables.
    t: String,
}

impl JobBounds {
    /// The flows-table condition, `None` for an empty window.
    fn window_cond(&self) -> Option<String> {
        let (after, upto, seq, t) = (self.after, self.upto, self.seq, &self.t);
        (upto > after).then(|| {
            format!(
                "ts > {after} AND ts <= {upto} AND seq IN (SELECT seq FROM {t}batches WHERE \
                 seq <= {seq} AND max_ts > {after} AND min_ts <= {upto})"
            )
        })
    }

    /// The late-table condition, `None` when no late batch can qualify.
    fn late_cond(&self) -> Option<String> {
        let (after, from, seq, t) = (self.after, self.from, self.seq, &self.t);
        (seq > from).then(|| {
            format!(
                "ts <= {after} AND seq > {from} AND seq <= {seq} AND seq IN (SELECT seq FROM \
                 {t}batches WHERE seq > {from} AND seq <= {seq})"
            )
        })
    }

    fn job_window(&self, flows: u64, late: u64) -> JobWindow {
        JobWindow::read(
            self.after,
            self.upto,
            (self.prev_seq as i64, self.seq as i64),
            flows,
            late,
        )
    }
}

impl ClickHouseStore {
    /// A job's next window (`None` before the first batch), from fresh commit records.
    fn job_bounds(&mut self, job_id: &str, period: i64) -> Result<Option<JobBounds>, StoreError> {
        self.committed = None;
        let Committed(Some((upto, seq))) = self.committed()? else {
            return Ok(None);
        };
        let (after, prev_seq) = match self.job_mark(job_id)? {
            Some(m) => (m.window_end, from_db::<u64>("late_seq", m.late_seq)?),
            None => (upto.saturating_sub(period), seq),
        };
        let from = if seq > prev_seq {
            prev_seq.max(self.forgotten()?)
        } else {
            prev_seq
        };
        Ok(Some(JobBounds {
            after,
            upto,
            prev_seq,
            from,
            seq,
            t: self.t.clone(),
        }))
    }

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
            next_seq: 0,
            committed: None,
            in_doubt: None,
            last_version: 0,
        };
        store.migrate()?;
        let last = store.committed()?.0.map_or(0, |(_, s)| s);
        store.next_seq = (last + 1).max(now_micros());
        Ok(store)
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

    fn committed(&mut self) -> Result<Committed, StoreError> {
        if let Some(c) = self.committed {
            return Ok(c);
        }
        let reply = self.http.query(&format!(
            "SELECT max(max_ts), max(seq), count() FROM {}batches FORMAT RowBinary",
            self.t
        ))?;
        let mut r = Reader::new(&reply);
        let (max_ts, seq, n) = (r.i64()?, r.u64()?, r.u64()?);
        let c = Committed((n > 0).then_some((max_ts, seq)));
        self.committed = Some(c);
        Ok(c)
    }

    /// Rows of batch `seq` in `table` within the hour `hour`.
    fn count_rows(&self, table: &str, seq: u64, hour: i64) -> Result<u64, StoreError> {
        let lo = hour * HOUR_MICROS;
        let reply = self.http.query(&format!(
            "SELECT count() FROM {}{table} WHERE ts >= {lo} AND ts < {} AND seq = {seq} \
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

    /// Inserts the groups of one table (one part each), skipping on a retry those that landed.
    fn insert_groups(
        &self,
        table: &str,
        groups: &BTreeMap<i64, Vec<&Flow>>,
        seq: u64,
        retry: bool,
    ) -> Result<(), StoreError> {
        let columns = flow_column_list();
        let mut buf = Vec::new();
        for (&hour, rows) in groups {
            if retry {
                let n = self.count_rows(table, seq, hour)?;
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
                &format!("{}{table}", self.t),
                &columns,
                &buf,
                &[("max_insert_block_size", block)],
            )?;
        }
        Ok(())
    }

    fn write_batch(
        &mut self,
        flows: &[Flow],
        seq: u64,
        retry: bool,
        (lo, hi): (i64, i64),
    ) -> Result<Written, StoreError> {
        if retry && let Some(late) = self.commit_record(seq)? {
            self.committed = None;
            return Ok(Written { late });
        }
        let max_before = self.committed()?.0.map(|(ts, _)| ts);
        let mut groups: BTreeMap<i64, Vec<&Flow>> = BTreeMap::new();
        let mut late: BTreeMap<i64, Vec<&Flow>> = BTreeMap::new();
        let mut n_late = 0u64;
        for f in flows {
            let h = hour_of(f.ts_micros);
            groups.entry(h).or_default().push(f);
            if max_before.is_some_and(|m| f.ts_micros <= m) {
                late.entry(h).or_default().push(f);
                n_late += 1;
            }
        }
        self.insert_groups("flows", &groups, seq, retry)?;
        self.insert_groups("late", &late, seq, retry)?;
        self.http.execute(
            &format!(
                "INSERT INTO {}batches (seq, flows, late, min_ts, max_ts) VALUES \
                 ({seq}, {}, {n_late}, {lo}, {hi})",
                self.t,
                flows.len()
            ),
            true,
        )?;
        let prev = self.committed.and_then(|c| c.0);
        self.committed = Some(Committed(Some(match prev {
            Some((m, s)) => (m.max(hi), s.max(seq)),
            None => (hi, seq),
        })));
        Ok(Written { late: n_late })
    }

    /// Streams the flow rows `sql` selects; with `check`, only those whose exporter is in it
    /// (addresses whose stored bytes collide: IPv4 and IPv4-mapped IPv6).
    fn stream(
        &self,
        sql: &str,
        check: Option<&[IpAddr]>,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<(u64, bool), StoreError> {
        let mut n = 0u64;
        let mut stopped = false;
        self.http.query_rows(sql, FLOW_ROW_LEN, &mut |row| {
            let flow = Reader::new(row).flow()?;
            if check.is_some_and(|set| !set.contains(&flow.exporter)) {
                return Ok(ControlFlow::Continue(()));
            }
            n += 1;
            let flow = if matches!(fields, Fields::All) {
                flow
            } else {
                fields.project(&flow)
            };
            let c = f(&flow);
            stopped = c.is_break();
            Ok(c)
        })?;
        Ok((n, stopped))
    }

    /// `exporter IN (…)` and the set to check rows against when the bytes are ambiguous.
    fn exporter_filter(exporters: &[IpAddr]) -> (String, Option<&[IpAddr]>) {
        let list: Vec<String> = exporters.iter().map(|&a| addr_literal(a)).collect();
        let ambiguous = exporters.iter().any(|&a| addr16(a).1);
        let cond = if ambiguous {
            format!("exporter IN ({})", list.join(", "))
        } else {
            // no IPv6 address in mapped form asked for: leave those rows out in the server
            format!(
                "exporter IN ({}) AND bitAnd(v6_mapped, 1) = 0",
                list.join(", ")
            )
        };
        (cond, ambiguous.then_some(exporters))
    }

    fn job_mark(&self, job_id: &str) -> Result<Option<JobMark>, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT argMax(window_end, version), argMax(late_seq, version) FROM {}jobs \
             WHERE job_id = {} GROUP BY job_id FORMAT RowBinary",
            self.t,
            quote(job_id)
        ))?;
        let mut r = Reader::new(&reply);
        if r.is_empty() {
            return Ok(None);
        }
        let window_end = r.i64()?;
        let late_seq = from_db("late_seq", r.i64()?)?;
        Ok(Some(JobMark {
            window_end,
            late_seq,
        }))
    }

    fn forgotten(&self) -> Result<u64, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT max(upto) FROM {}late_forgotten FORMAT RowBinary",
            self.t
        ))?;
        Reader::new(&reply).u64()
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

impl Store for ClickHouseStore {
    fn write_flows_report(&mut self, flows: &[Flow]) -> Result<Written, StoreError> {
        let Some(span) = ts_span(flows)? else {
            return Ok(Written::default());
        };
        let hash = batch_hash(flows);
        let (seq, retry) = match self.in_doubt {
            Some(d) if d.hash == hash => (d.seq, true),
            _ => {
                let s = self.next_seq;
                self.next_seq += 1;
                (s, false)
            }
        };
        match self.write_batch(flows, seq, retry, span) {
            Ok(w) => {
                self.in_doubt = None;
                Ok(w)
            }
            Err(e) => {
                self.in_doubt = Some(InDoubt { seq, hash });
                self.committed = None;
                Err(e)
            }
        }
    }

    fn max_ts(&mut self) -> Result<Option<i64>, StoreError> {
        // another store may write this database: ask the server, not the cache
        self.committed = None;
        Ok(self.committed()?.0.map(|(ts, _)| ts))
    }

    fn for_each_flow(
        &mut self,
        exporters: &[IpAddr],
        after_micros: i64,
        upto_micros: i64,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<u64, StoreError> {
        if exporters.is_empty() || upto_micros <= after_micros {
            return Ok(0);
        }
        let (cond, check) = Self::exporter_filter(exporters);
        let t = &self.t;
        let sql = format!(
            "SELECT {} FROM {t}flows WHERE {cond} AND ts > {after_micros} AND ts <= {upto_micros} \
             AND seq IN (SELECT seq FROM {t}batches WHERE max_ts > {after_micros} AND \
             min_ts <= {upto_micros}) FORMAT RowBinary",
            select_list(Fields::All)
        );
        Ok(self.stream(&sql, check, Fields::All, f)?.0)
    }

    fn upsert_exporters(&mut self, deltas: &[Exporter]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(deltas.len() * 65);
        for d in deltas {
            let (addr, v6) = addr16(d.addr);
            buf.extend_from_slice(&addr);
            buf.push(u8::from(v6));
            buf.extend_from_slice(&d.first_seen_micros.to_le_bytes());
            buf.extend_from_slice(&d.last_seen_micros.to_le_bytes());
            for c in [d.packets, d.flows, d.lost_packets, d.lost_flows] {
                buf.extend_from_slice(&counter_to_db(c).to_le_bytes());
            }
        }
        self.http.insert(
            &format!("{}exporters", self.t),
            "addr, v6_mapped, first_seen, last_seen, packets, flows, lost_packets, lost_flows",
            &buf,
            &[],
        )
    }

    fn exporters(&mut self) -> Result<Vec<Exporter>, StoreError> {
        // sums saturate at i64::MAX like the other backends (a UInt64 sum could wrap)
        let sat = |c: &str| {
            format!(
                "if(sum(toFloat64({c})) >= toFloat64(9223372036854775807), \
                 toUInt64(9223372036854775807), sum({c}))"
            )
        };
        let reply = self.http.query(&format!(
            "SELECT addr, v6_mapped, min(first_seen), max(last_seen), {}, {}, {}, {} \
             FROM {}exporters GROUP BY addr, v6_mapped FORMAT RowBinary",
            sat("packets"),
            sat("flows"),
            sat("lost_packets"),
            sat("lost_flows"),
            self.t
        ))?;
        let mut r = Reader::new(&reply);
        let mut out = Vec::new();
        while !r.is_empty() {
            let addr = r.fixed16()?;
            let v6 = r.u8()? != 0;
            out.push(Exporter {
                addr: addr_from16(addr, v6),
                first_seen_micros: r.i64()?,
                last_seen_micros: r.i64()?,
                packets: r.u64()?,
                flows: r.u64()?,
                lost_packets: r.u64()?,
                lost_flows: r.u64()?,
            });
        }
        out.sort_by_key(|e| e.addr);
        Ok(out)
    }

    fn job_window_end(&mut self, job_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.job_mark(job_id)?.map(|m| m.window_end))
    }

    fn set_job_window_end(&mut self, job_id: &str, end_micros: i64) -> Result<(), StoreError> {
        check_ts(end_micros)?;
        let late_seq = match self.job_mark(job_id)? {
            Some(m) => m.late_seq,
            None => {
                self.committed = None;
                self.committed()?.0.map_or(0, |(_, s)| s as i64)
            }
        };
        self.set_job_mark(
            job_id,
            JobMark {
                window_end: end_micros,
                late_seq,
            },
        )
    }

    fn read_job_window(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period_micros: i64,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Option<JobWindow>, StoreError> {
        let Some(b) = self.job_bounds(job_id, period_micros)? else {
            return Ok(None);
        };
        let (mut flows, mut late) = (0, 0);
        if !exporters.is_empty() {
            let (cond, check) = Self::exporter_filter(exporters);
            let (t, list) = (&self.t, select_list(fields));
            let (n, stopped) = match b.window_cond() {
                Some(w) => self.stream(
                    &format!("SELECT {list} FROM {t}flows WHERE {cond} AND {w} FORMAT RowBinary"),
                    check,
                    fields,
                    f,
                )?,
                None => (0, false),
            };
            flows = n;
            if !stopped && let Some(l) = b.late_cond() {
                let sql =
                    format!("SELECT {list} FROM {t}late WHERE {cond} AND {l} FORMAT RowBinary");
                late = self.stream(&sql, check, fields, f)?.0;
            }
        }
        Ok(Some(b.job_window(flows, late)))
    }

    fn window_sums(
        &mut self,
        job_id: &str,
        exporters: &[IpAddr],
        period_micros: i64,
        top_n: usize,
    ) -> Result<Option<(JobWindow, crate::window_sums::WindowSums)>, StoreError> {
        self.pushdown(job_id, exporters, period_micros, top_n)
    }

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
        let t = &self.t.clone();
        let reply = self.http.query(&format!(
            "SELECT min(s), count() FROM (SELECT argMax(late_seq, version) AS s FROM {t}jobs \
             GROUP BY job_id) FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        let (upto, jobs) = (r.u64()?, r.u64()?);
        let from = self.forgotten()?;
        if jobs == 0 || upto <= from {
            return Ok(0);
        }
        let reply = self.http.query(&format!(
            "SELECT count() FROM {t}late WHERE seq > {from} AND seq <= {upto} AND seq IN \
             (SELECT seq FROM {t}batches WHERE seq > {from} AND seq <= {upto}) FORMAT RowBinary"
        ))?;
        let n = Reader::new(&reply).u64()?;
        let version = self.version();
        self.http.execute(
            &format!("INSERT INTO {t}late_forgotten (upto, version) VALUES ({upto}, {version})"),
            true,
        )?;
        Ok(n)
    }

    fn ensure_partitions(&mut self, _now_micros: i64) -> Result<(), StoreError> {
        // ClickHouse makes a partition when its first part is written
        Ok(())
    }

    fn expire_before(&mut self, cutoff_micros: i64) -> Result<Expired, StoreError> {
        let cutoff_hour = hour_of(cutoff_micros);
        let first_kept = cutoff_hour.saturating_add(schema::EPOCH_HOUR);
        let mut dropped = 0;
        for table in ["flows", "late"] {
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

    fn expire(&mut self, now_micros: i64) -> Result<Expired, StoreError> {
        self.expire_before(retention_cutoff(now_micros, self.retention_days))
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        let reply = self.http.query(&format!(
            "SELECT max(version) FROM {}schema_migrations FORMAT RowBinary",
            self.t
        ))?;
        Reader::new(&reply).u32()
    }
}
