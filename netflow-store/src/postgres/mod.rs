//! The PostgreSQL backend: binary COPY into an hourly-partitioned flow table.
//!
//! `sql` holds the statements and the row conversions, `write` the batch path (COPY, late
//! flows, exactly once, partitions); this file the store, its connection, migrations and the
//! read side.

mod query;
mod sql;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::SystemTime;

use postgres::{Client, NoTls, Statement, Transaction};

use self::sql::{
    Sql, copy_out, inet_array_literal, micros_to_time, time_to_micros, ts_range_literal,
};
use self::write::InDoubt;
use crate::partition::{self, HOUR_MICROS, MAX_TS_MICROS, MIN_TS_MICROS};
use crate::schema::{self, MIGRATIONS, SCHEMA_VERSION};
use crate::{
    Backend, Expired, Exporter, Fields, Flow, FlowRange, FlowRead, Head, JobLedger, JobMark,
    Snapshot, StoreConfig, StoreError, Streamed, Upkeep,
};

/// The connection, re-established on the first call after it was lost, and the statements
/// prepared on it.
pub(super) struct Conn {
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
pub(super) fn prepared(
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
/// [`PgStore::ensure_partitions`] and, for a batch that needs one that is missing, on demand
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
    /// The batch max ts at which the write path last kept the layout.
    layout_kept: Option<i64>,
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

    /// Connects without touching the schema (for tools and upgrade tests; the [`crate::Store`]
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
            layout_kept: None,
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

/// A read-only `REPEATABLE READ` transaction: one snapshot for every read (see `copy_batch`
/// for why the marks and the late-flow log then agree).
struct PgSnapshot<'a, 't> {
    tx: Transaction<'t>,
    sql: &'a Sql,
}

impl Snapshot for PgSnapshot<'_, '_> {
    fn head(&mut self) -> Result<Head, StoreError> {
        let row = self.tx.query_one(&self.sql.stats, &[])?;
        Ok(Head {
            max_ts: row
                .try_get::<_, Option<SystemTime>>(0)?
                .map(time_to_micros)
                .transpose()?,
            late_seq: row.try_get(1)?,
        })
    }

    fn job_mark(&mut self, job_id: &str) -> Result<Option<JobMark>, StoreError> {
        match self.tx.query_opt(&self.sql.job_mark_get, &[&job_id])? {
            Some(r) => Ok(Some(JobMark {
                window_end: time_to_micros(r.try_get(0)?)?,
                late_seq: r.try_get(1)?,
            })),
            None => Ok(None),
        }
    }

    fn flows(
        &mut self,
        exporters: &[IpAddr],
        range: FlowRange,
        fields: Fields,
        f: &mut dyn FnMut(&Flow) -> ControlFlow<()>,
    ) -> Result<Streamed, StoreError> {
        let (p, cols) = (&self.sql.prefix, schema::column_list(fields));
        let exporters_sql = inet_array_literal(exporters);
        // COPY takes no parameters: the conditions are literals of numbers, addresses and
        // timestamps formatted here (nothing from outside is spliced as text).
        let select = match range {
            FlowRange::Time { after, upto } => {
                let after = after.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS);
                let upto = upto.clamp(MIN_TS_MICROS - 1, MAX_TS_MICROS);
                if exporters.is_empty() || after >= upto {
                    return Ok(Streamed::default());
                }
                format!(
                    "SELECT {cols} FROM {p}flows WHERE exporter = ANY({exporters_sql}) AND {}",
                    ts_range_literal(after, upto)
                )
            }
            FlowRange::Late {
                after_seq,
                upto_seq,
                ts_upto,
            } => {
                if exporters.is_empty() || after_seq >= upto_seq || ts_upto < MIN_TS_MICROS {
                    return Ok(Streamed::default());
                }
                format!(
                    "SELECT {cols} FROM {p}late_flows WHERE seq > {after_seq} AND seq <= {upto_seq} \
                     AND exporter = ANY({exporters_sql}) AND ts <= '{}'",
                    partition::ts_literal(ts_upto.min(MAX_TS_MICROS))
                )
            }
        };
        copy_out(&mut self.tx, &select, fields, f)
    }
}

impl FlowRead for PgStore {
    fn read(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Snapshot) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let sql = &self.sql;
        self.conn.run(|client, _| {
            let tx = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let mut snapshot = PgSnapshot { tx, sql };
            // Without fresh statistics on a partition being filled, the planner believes the
            // BRIN index useless (no correlation known) and scans the whole hour for a
            // one-minute window. A bitmap scan is never much worse than a sequential one here
            // (for whole partitions it reads the same pages in order), so forbid the
            // sequential scan for this transaction only.
            snapshot
                .tx
                .batch_execute("SET LOCAL enable_seqscan = off")?;
            f(&mut snapshot)?;
            snapshot.tx.commit()?;
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

    fn query(
        &mut self,
        q: &crate::query::Query,
        f: &mut dyn FnMut(crate::query::QueryRow<'_>) -> ControlFlow<()>,
    ) -> Result<crate::query::Totals, StoreError> {
        q.validate()?;
        let prefix = &self.sql.prefix;
        self.conn.run(|client, _| query::run(client, prefix, q, f))
    }
}

impl JobLedger for PgStore {
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
}

impl Upkeep for PgStore {
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

    fn retention_days(&self) -> u32 {
        self.retention_days
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
