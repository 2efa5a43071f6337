//! The write path: one transaction per batch (COPY, late-flow log, batch mark), exactly once
//! across lost replies, and the hourly partitions it needs.

use std::collections::BTreeSet;
use std::time::SystemTime;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::ToSql;

use super::sql::{PgRow, micros_to_time, time_to_micros};
use super::{PgStore, prepared};
use crate::partition::{self, MAX_TS_MICROS, MIN_TS_MICROS};
use crate::schema;
use crate::{Exporter, Flow, FlowWrite, StoreError, Written};

/// How far the flows' time advances between two runs of [`PgStore::ensure_partitions`] from
/// the write path: a minute.
pub(super) const LAYOUT_EVERY_MICROS: i64 = 60_000_000;

/// A batch that may or may not have landed: its number and a hash of its flows, to recognize
/// its retry.
#[derive(Debug, Clone, Copy)]
pub(super) struct InDoubt {
    batch: i64,
    fingerprint: u64,
}

fn fingerprint(flows: &[Flow]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    flows.hash(&mut h);
    h.finish()
}

impl PgStore {
    /// Reloads the set of existing partitions from the catalog.
    pub(super) fn refresh_partitions(&mut self) -> Result<(), StoreError> {
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
    pub(super) fn create_partitions(
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

    /// Keeps the physical layout ahead of the writes, from the write path: at the first
    /// batch, whenever a batch reaches a new hour, and once the flows' time has advanced a
    /// minute since the last time, [`PgStore::ensure_partitions`] around the batch's newest
    /// `ts` (the collector's receive time: "now" for a live writer, and the same cadence when
    /// a backlog or a capture is replayed).
    fn keep_layout(&mut self, batch_max_ts: i64) -> Result<(), StoreError> {
        let hour = partition::hour_of(batch_max_ts);
        let due = match self.layout_kept {
            None => true,
            Some(last) => {
                partition::hour_of(last) != hour
                    || batch_max_ts.saturating_sub(last) >= LAYOUT_EVERY_MICROS
            }
        };
        if due {
            self.ensure_partitions(batch_max_ts)?;
            self.layout_kept = Some(batch_max_ts);
        }
        Ok(())
    }

    /// Creates the hourly partitions from the hour before `now_micros` to
    /// [`crate::StoreConfig::partitions_ahead`] hours after it, so that writes in that span never
    /// wait on DDL, and summarizes the BRIN index of the current and previous hour so that
    /// window reads touch only the blocks of their window (autovacuum would summarize them
    /// only after ~20 % growth). [`FlowWrite::write_flows`] calls it by itself about once a
    /// minute; call it directly only to prepare a database ahead of its writer.
    pub fn ensure_partitions(&mut self, now_micros: i64) -> Result<(), StoreError> {
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
        let sql = &self.sql;
        let tables = [sql.partition_name(now - 1), sql.partition_name(now)];
        self.conn.run(|client, _| {
            client.execute(&sql.summarize, &[&tables[0], &tables[1]])?;
            Ok(())
        })
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

impl FlowWrite for PgStore {
    fn write_flows(&mut self, flows: &[Flow]) -> Result<Written, StoreError> {
        let Some((lo, hi)) = crate::ts_span(flows)? else {
            return Ok(Written::default());
        };
        if self.resolve_doubt(flows)? {
            // the retry of a batch whose COMMIT landed although its reply was lost (its late
            // count went with the lost reply)
            return Ok(Written::default());
        }
        self.keep_layout(hi)?;
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
}
