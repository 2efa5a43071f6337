//! PostgreSQL-only behaviour: partitions, migrations from every older schema, concurrent
//! openers, and connection loss in the middle of a run. Each test has a database of its own.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{HOUR, PgDb, T0, as_stored, flow, ip, read_all, sorted};
use netflow_store::test_support::PrivateServer;
use netflow_store::{
    Backend, FlowRead, FlowWrite, PgStore, SCHEMA_VERSION, StoreConfig, StoreError, Upkeep,
};

fn partitions(c: &mut postgres::Client) -> Vec<String> {
    let mut v: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'netflow_flows'::regclass",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    v.sort();
    v
}

fn count(c: &mut postgres::Client) -> i64 {
    c.query_one("SELECT count(*) FROM netflow_flows", &[])
        .unwrap()
        .get(0)
}

/// 2023-11-14 22:00 UTC, T0's hour.
const H0: i64 = T0 - T0 % HOUR;

#[test]
fn flows_land_in_their_hour_partition_and_retention_drops_exactly_old_ones() {
    let db = PgDb::new();
    let mut s = PgStore::open(&db.config).unwrap();
    let mut c = db.client();
    // 3 flows in each of 60 hours (a 60-hour batch: partitions created on demand)
    let flows: Vec<_> = (0..60 * 3)
        .map(|i| flow(H0 + i * HOUR / 3, "192.0.2.1"))
        .collect();
    s.write_flows(&flows).unwrap();
    let names = partitions(&mut c);
    // the write path also keeps `partitions_ahead` hours ready after the batch's newest hour
    let ahead = db.config.partitions_ahead as usize;
    assert_eq!(names.len(), 60 + ahead);
    assert_eq!(names[0], "netflow_flows_p2023111422");
    assert_eq!(names[59], "netflow_flows_p2023111709");
    assert_eq!(names[60], "netflow_flows_p2023111710");
    // every row sits in the partition named after its hour
    let misplaced: i64 = c
        .query_one(
            "SELECT count(*) FROM netflow_flows \
             WHERE tableoid::regclass::text <> 'netflow_flows_p' || to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDDHH24')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(misplaced, 0);
    let per_partition: Vec<i64> = c
        .query("SELECT count(*) FROM netflow_flows GROUP BY tableoid", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(per_partition.iter().all(|&n| n == 3), "{per_partition:?}");
    // the window query over all of them is complete
    assert_eq!(read_all(&mut s, &[ip("192.0.2.1")]).len(), 180);

    // retention: 5 days before "now" = hour 30 + 5 days  ->  hours 0..30 dropped
    let now = H0 + 30 * HOUR + 5 * 24 * HOUR + HOUR / 2;
    let expired = s.expire(now).unwrap();
    assert_eq!(expired.cutoff_micros, H0 + 30 * HOUR);
    assert_eq!(expired.partitions_dropped, 30);
    assert_eq!(partitions(&mut c), names[30..].to_vec());
    assert_eq!(count(&mut c), 90);
    // a write into a dropped hour recreates its partition instead of failing
    s.write_flows(&[flow(H0, "192.0.2.1")]).unwrap();
    assert_eq!(count(&mut c), 91);
}

#[test]
fn partitions_are_created_ahead() {
    let db = PgDb::new();
    let mut s = PgStore::open(&db.config).unwrap();
    s.ensure_partitions(T0).unwrap();
    let names = partitions(&mut db.client());
    assert_eq!(
        names,
        [
            "netflow_flows_p2023111421",
            "netflow_flows_p2023111422",
            "netflow_flows_p2023111423",
            "netflow_flows_p2023111500",
            "netflow_flows_p2023111501"
        ]
    );
    // every partition carries the BRIN index of the parent
    let brin: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'netflow_flows_p%' AND indexdef LIKE '%USING brin (ts)%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(brin, 5);
}

#[test]
fn concurrent_writers_create_the_same_partitions_without_error() {
    let db = PgDb::new();
    PgStore::open(&db.config).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (config, barrier) = (db.config.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = PgStore::open(&config).unwrap();
                barrier.wait();
                for h in 0..5 {
                    let flows: Vec<_> = (0..100)
                        .map(|i| flow(H0 + h * HOUR + i, &format!("192.0.2.{t}")))
                        .collect();
                    s.write_flows(&flows).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = db.client();
    assert_eq!(count(&mut c), 4 * 5 * 100);
    // the 5 hours written, the hour before the first (kept ready by the write path) and
    // `partitions_ahead` hours after the last
    let ahead = db.config.partitions_ahead as usize;
    assert_eq!(partitions(&mut c).len(), 1 + 5 + ahead);
}

#[test]
fn concurrent_openers_migrate_once() {
    let db = PgDb::new();
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (config, barrier) = (db.config.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(&config).map(|mut s| s.schema_version())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap().unwrap(), SCHEMA_VERSION);
    }
    let rows: Vec<i32> = db
        .client()
        .query(
            "SELECT version FROM netflow_schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, (1..=SCHEMA_VERSION as i32).collect::<Vec<_>>());
}

#[test]
fn upgrades_every_older_schema_in_place() {
    for from in 0..SCHEMA_VERSION {
        let db = PgDb::new();
        let mut s = PgStore::connect(&db.config).unwrap();
        assert_eq!(s.migrate_to(from).unwrap(), from);
        assert_eq!(s.schema_version().unwrap(), from);
        let mut c = db.client();
        if from >= 1 {
            c.batch_execute(
                "CREATE TABLE netflow_flows_p2023111422 PARTITION OF netflow_flows
                     FOR VALUES FROM ('2023-11-14 22:00:00+00') TO ('2023-11-14 23:00:00+00');
                 INSERT INTO netflow_flows VALUES ('2023-11-14 22:13:20+00', '192.0.2.1', 1, 2, 0, 6,
                     '10.0.0.1', '10.0.0.2', 1234, 443, 1000, 2, 0);
                 INSERT INTO netflow_bot_jobs VALUES ('1min', '2023-11-14 22:00:00+00');",
            )
            .unwrap();
        }
        if from >= 2 {
            c.batch_execute(
                "INSERT INTO netflow_exporters VALUES ('192.0.2.1', '2023-11-14 22:13:20+00',
                     '2023-11-14 22:13:20+00', 7, 1, 0, 0)",
            )
            .unwrap();
        }
        if from >= 3 {
            // a version-3 writer kept max_ts with every batch
            c.batch_execute("UPDATE netflow_flow_stats SET max_ts = '2023-11-14 22:13:20+00'")
                .unwrap();
        }
        drop(s);
        let mut s = PgStore::open(&db.config).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION, "from {from}");
        if from >= 1 {
            let f = flow(T0, "192.0.2.1");
            assert_eq!(
                read_all(&mut s, &[ip("192.0.2.1")]),
                vec![netflow_store::Flow {
                    input_if: 1,
                    output_if: 2,
                    ..f
                }]
            );
            assert_eq!(
                s.max_ts().unwrap(),
                Some(T0),
                "from {from}: max_ts backfilled"
            );
            assert_eq!(
                netflow_store::jobs::window_end(&mut s, "1min").unwrap(),
                Some(H0)
            );
            let ex = s.exporters().unwrap();
            assert_eq!(
                (ex.len(), ex[0].flows, ex[0].first_seen_micros),
                (1, 1, T0),
                "from {from}"
            );
            assert_eq!(ex[0].packets, if from >= 2 { 7 } else { 0 });
            // the job recorded before version 5 gets the late flows written after the upgrade
            common::assert_upgraded_job_gets_late_flows(&mut s, H0, T0, from);
        } else {
            assert_eq!(s.max_ts().unwrap(), None);
        }
        // and it works as a fresh store afterwards
        s.write_flows(&[flow(T0 + 1, "192.0.2.1")]).unwrap();
        assert_eq!(s.max_ts().unwrap(), Some(T0 + 1));
    }
}

#[test]
fn newer_schema_is_refused() {
    let db = PgDb::new();
    PgStore::open(&db.config).unwrap();
    db.client()
        .execute(
            "INSERT INTO netflow_schema_migrations (version, description) VALUES ($1, 'future')",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .unwrap();
    let err = PgStore::open(&db.config).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
}

/// Terminates the store's connections to the test database (not autovacuum's, not the
/// caller's); returns how many.
fn terminate_store_connections(c: &mut postgres::Client, db: &str, only_copy: bool) -> i64 {
    let filter = if only_copy {
        "AND query LIKE 'COPY%' AND state = 'active'"
    } else {
        ""
    };
    c.query(
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'netflow-store' {filter}"
        ),
        &[&db],
    )
    .unwrap()
    .len() as i64
}

#[test]
fn killed_connection_is_reported_and_the_retried_batch_lands_once() {
    let db = PgDb::new();
    let mut s = PgStore::open(&db.config).unwrap();
    let mut admin = db.client();
    let a: Vec<_> = (0..1000).map(|i| flow(T0 + i, "192.0.2.1")).collect();
    let b: Vec<_> = (0..1000)
        .map(|i| flow(T0 + 1000 + i, "192.0.2.1"))
        .collect();
    s.write_flows(&a).unwrap();
    assert_eq!(terminate_store_connections(&mut admin, &db.name, false), 1);
    let err = s.write_flows(&b).unwrap_err();
    assert!(
        err.is_retryable() && matches!(err, StoreError::ConnectionLost(_)),
        "{err:?}"
    );
    s.write_flows(&b).unwrap(); // reconnects
    assert_eq!(count(&mut admin), 2000);
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 1999));
    // every other operation reports and recovers the same way
    assert_eq!(terminate_store_connections(&mut admin, &db.name, false), 1);
    assert!(s.max_ts().unwrap_err().is_retryable());
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 1999));
}

#[test]
fn connection_killed_during_copy_leaves_nothing_and_the_retry_lands_once() {
    let db = PgDb::new();
    PgStore::open(&db.config).unwrap();
    let mut admin = db.client();
    let mut expected = 0;
    let mut killed_mid_copy = false;
    for attempt in 0..4 {
        let n = 300_000 << attempt;
        let flows: Vec<_> = (0..n).map(|i| flow(T0 + i, "192.0.2.1")).collect();
        let config = db.config.clone();
        let writer = std::thread::spawn(move || {
            let mut s = PgStore::open(&config).unwrap();
            let first = s.write_flows(&flows);
            let failed = first.is_err();
            if let Err(e) = first {
                assert!(e.is_retryable(), "{e:?}");
                s.write_flows(&flows).unwrap();
            }
            failed
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut killed = 0;
        while killed == 0 && !writer.is_finished() && Instant::now() < deadline {
            killed = terminate_store_connections(&mut admin, &db.name, true);
            std::thread::sleep(Duration::from_millis(2));
        }
        let failed = writer.join().unwrap();
        expected += n;
        assert_eq!(count(&mut admin), expected, "attempt {attempt}");
        if killed > 0 {
            assert!(failed, "the COPY was killed but the write reported success");
            killed_mid_copy = true;
            break;
        }
    }
    assert!(killed_mid_copy, "never caught the COPY in flight");
}

#[test]
fn unreachable_server_is_a_retryable_error() {
    let mut pg = postgres::Config::new();
    pg.host("127.0.0.1")
        .port(1)
        .user("postgres")
        .connect_timeout(Duration::from_secs(2));
    let err = PgStore::open(&StoreConfig::new(Backend::Postgres(Box::new(pg)))).unwrap_err();
    assert!(
        matches!(err, StoreError::ConnectionLost(_)) && err.is_retryable(),
        "{err:?}"
    );
}

/// The server restarts between two batches, then stays down for a while: the next write fails
/// with a retryable error, the store reconnects by itself once the server is back, and each
/// batch lands exactly once. A server of this test's own (`test_support::PrivateServer`), never
/// the shared one.
#[test]
fn server_restart_mid_run() {
    let server = PrivateServer::acquire();
    let db = PgDb::on(server.admin_config());
    let mut s = PgStore::open(&db.config).unwrap();
    let batch = |n: i64| -> Vec<_> {
        (0..1000)
            .map(|i| flow(T0 + n * 1000 + i, "192.0.2.1"))
            .collect()
    };
    s.write_flows(&batch(0)).unwrap();

    // restart: the store's connection is gone, the first write says so, a retry lands
    server.restart();
    let mut tries = 0;
    loop {
        match s.write_flows(&batch(1)) {
            Ok(_) => break,
            Err(e) if e.is_retryable() && tries < 30 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(tries >= 1, "the restart went unnoticed");
    assert_eq!(count(&mut db.client()), 2000);

    // down for a while: every write fails retryably, the first one after the start lands
    server.stop();
    for _ in 0..3 {
        let err = s.write_flows(&batch(2)).unwrap_err();
        assert!(err.is_retryable(), "server down: {err:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    server.start();
    let mut tries = 0;
    while let Err(e) = s.write_flows(&batch(2)) {
        assert!(e.is_retryable() && tries < 30, "{e:?}");
        tries += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        read_all(&mut s, &[ip("192.0.2.1")]),
        sorted((0..3).flat_map(batch).map(|f| as_stored(&f)).collect())
    );
}

#[test]
fn window_query_reads_only_its_blocks_through_brin() {
    let db = PgDb::new();
    let mut s = PgStore::open(&db.config).unwrap();
    // one hour partition filled with 60 minutes x 2000 flows, in ts order
    let per_min = 2000;
    let flows: Vec<_> = (0..60 * per_min)
        .map(|i| flow(H0 + i * 60_000_000 / per_min, "192.0.2.1"))
        .collect();
    for chunk in flows.chunks(10_000) {
        s.write_flows(chunk).unwrap();
    }
    s.ensure_partitions(H0 + 59 * 60_000_000).unwrap(); // summarizes the BRIN ranges
    let mut c = db.client();
    let (after, upto) = (H0 + 30 * 60_000_000, H0 + 31 * 60_000_000);
    // the session setting for_each_flow uses
    c.batch_execute("SET enable_seqscan = off").unwrap();
    let plan: Vec<String> = c
        .query(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT * FROM netflow_flows WHERE exporter = ANY($1) \
             AND ts > to_timestamp($2::float8 / 1e6) AND ts <= to_timestamp($3::float8 / 1e6)",
            &[&vec![ip("192.0.2.1")], &(after as f64), &(upto as f64)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    eprintln!("{plan}");
    assert!(
        plan.contains("Bitmap Index Scan on netflow_flows_p2023111422_ts_idx"),
        "{plan}"
    );
    let removed: i64 = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rows Removed by Index Recheck: "))
        .map_or(0, |n| n.parse().unwrap());
    assert!(
        removed < 10_000,
        "BRIN let {removed} rows of other minutes through:\n{plan}"
    );
    assert_eq!(
        common::read(&mut s, &[ip("192.0.2.1")], after, upto).len(),
        per_min as usize
    );
}

#[test]
fn partition_dropped_by_another_process_is_recreated() {
    let db = PgDb::new();
    let mut writer = PgStore::open(&db.config).unwrap();
    let mut maintenance = PgStore::open(&db.config).unwrap();
    // one-hour batch (COPY into the partition) and a two-hour batch (COPY through the parent)
    let one: Vec<_> = (0..10).map(|i| flow(H0 + i, "192.0.2.1")).collect();
    let two: Vec<_> = (0..10)
        .map(|i| flow(H0 + i * HOUR / 5, "192.0.2.1"))
        .collect();
    for batch in [&one, &two] {
        writer.write_flows(batch).unwrap(); // caches the partitions and the COPY statements
        assert!(
            maintenance
                .expire_before(H0 + 3 * HOUR)
                .unwrap()
                .partitions_dropped
                >= 1
        );
        writer.write_flows(batch).unwrap(); // finds them gone, recreates, retries once
        assert_eq!(count(&mut db.client()), 10);
        maintenance.expire_before(H0 + 3 * HOUR).unwrap();
    }
}

/// A TCP proxy in front of the server that, once armed, forwards the client's `COMMIT`, lets
/// the server commit, and then cuts the connection before the reply reaches the client: the
/// one case where the client cannot know whether its batch landed.
fn commit_cutting_proxy(armed: Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream = {
        let c = common::pg_admin_config();
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!("127.0.0.1:{port}")
    };
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(&upstream).unwrap();
            let cut = Arc::new(AtomicBool::new(false));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (armed, cut2) = (armed.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = c_in.read(&mut buf) {
                    let commit = buf[..n].windows(7).any(|w| w == b"COMMIT\0");
                    if commit && armed.swap(false, Ordering::SeqCst) {
                        cut2.store(true, Ordering::SeqCst);
                        let _ = s_out.write_all(&buf[..n]);
                        std::thread::sleep(Duration::from_millis(300)); // the server commits
                        let _ = c_in.shutdown(Shutdown::Both);
                        let _ = s_out.shutdown(Shutdown::Both);
                        return;
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Both);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s_in.read(&mut buf) {
                    if cut.load(Ordering::SeqCst) || c_out.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

#[test]
fn batch_whose_commit_reply_was_lost_is_not_written_twice() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = PgDb::new();
    let armed = Arc::new(AtomicBool::new(false));
    let port = commit_cutting_proxy(armed.clone());
    let admin = common::pg_admin_config();
    let mut pg = postgres::Config::new();
    pg.host("127.0.0.1")
        .port(port)
        .dbname(&db.name)
        .user(admin.get_user().unwrap_or("postgres"));
    if let Some(pw) = admin.get_password() {
        pg.password(pw);
    }
    let mut s = PgStore::open(&StoreConfig::new(Backend::Postgres(Box::new(pg)))).unwrap();
    s.ensure_partitions(T0).unwrap(); // no partition DDL (and its COMMIT) inside the write
    let a: Vec<_> = (0..1000).map(|i| flow(T0 + i, "192.0.2.1")).collect();
    let b: Vec<_> = (0..1000)
        .map(|i| flow(T0 + 1000 + i, "192.0.2.1"))
        .collect();
    s.write_flows(&a).unwrap();

    armed.store(true, Ordering::SeqCst);
    let err = s.write_flows(&b).unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        !armed.load(Ordering::SeqCst),
        "the proxy never saw the COMMIT"
    );
    let mut admin = db.client();
    assert_eq!(
        count(&mut admin),
        2000,
        "the COMMIT landed although its reply was lost"
    );
    s.write_flows(&b).unwrap(); // the retry: recognized as landed, not written again
    assert_eq!(count(&mut admin), 2000);
    // a different batch after a doubt is written normally
    let c: Vec<_> = (0..10).map(|i| flow(T0 + 5000 + i, "192.0.2.1")).collect();
    s.write_flows(&c).unwrap();
    assert_eq!(count(&mut admin), 2010);
}

/// Issue 13, item 2: the product never called `ensure_partitions`, so the coming hours'
/// partitions were made on demand by the first batch that needed them (DDL in the write path)
/// and the BRIN ranges of the hour being filled stayed unsummarized. The write path now keeps
/// the layout itself.
#[test]
fn writes_keep_the_next_hours_partitions_ready_and_brin_summarized() {
    let db = PgDb::new();
    let mut s = PgStore::open(&db.config).unwrap();
    let mut c = db.client();
    assert!(partitions(&mut c).is_empty());
    s.write_flows(&[flow(T0, "192.0.2.1")]).unwrap();
    let ahead = db.config.partitions_ahead as i64;
    let want: Vec<String> = (-1..=ahead)
        .map(|h| {
            let hour = (H0 + h * HOUR) / HOUR;
            let days = hour.div_euclid(24);
            let (y, m, d) = civil(days);
            format!(
                "netflow_flows_p{y:04}{m:02}{d:02}{:02}",
                hour.rem_euclid(24)
            )
        })
        .collect();
    assert_eq!(partitions(&mut c), want);
    // A batch in the next hour runs the upkeep again, which summarizes the BRIN ranges of
    // the hour just filled: nothing is left for a summarize call to do there.
    s.write_flows(&[flow(H0 + HOUR + 1, "192.0.2.1")]).unwrap();
    let left: i32 = c
        .query_one(
            "SELECT brin_summarize_new_values(i.inhrelid) FROM pg_inherits i \
             JOIN pg_index x ON x.indexrelid = i.inhrelid \
             WHERE i.inhparent = to_regclass('netflow_flows_ts_brin') \
             AND x.indrelid = to_regclass($1)",
            &[&want[1]],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "the filled hour's BRIN ranges were left unsummarized"
    );
    let more = partitions(&mut c);
    assert_eq!(
        more.len(),
        want.len() + 1,
        "one more hour kept ready: {more:?}"
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
