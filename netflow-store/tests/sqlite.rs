//! SQLite-only behaviour: WAL mode, migrations from every older schema, concurrent openers.

mod common;

use std::sync::{Arc, Barrier};

use common::{SqliteDb, T0, flow, ip, read_all};
use netflow_store::{
    Backend, FlowRead, FlowWrite, SCHEMA_VERSION, SqliteStore, StoreError, Upkeep,
};

fn raw(db: &SqliteDb) -> rusqlite::Connection {
    let Backend::Sqlite(path) = &db.config.backend else {
        unreachable!()
    };
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn file_is_in_wal_mode() {
    let db = SqliteDb::new();
    SqliteStore::open(&db.config).unwrap();
    let mode: String = raw(&db)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn concurrent_openers_migrate_once() {
    let db = SqliteDb::new();
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let (config, barrier) = (db.config.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut s = SqliteStore::open(&config).unwrap();
                s.write_flows(&[flow(T0 + t, "192.0.2.1")]).unwrap();
                s.schema_version().unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), SCHEMA_VERSION);
    }
    let n: u32 = raw(&db)
        .query_row("SELECT count(*) FROM netflow_schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, SCHEMA_VERSION);
    let mut s = SqliteStore::open(&db.config).unwrap();
    assert_eq!(read_all(&mut s, &[ip("192.0.2.1")]).len(), 6);
}

#[test]
fn upgrades_every_older_schema_in_place() {
    for from in 0..SCHEMA_VERSION {
        let db = SqliteDb::new();
        let mut s = SqliteStore::connect(&db.config).unwrap();
        assert_eq!(s.migrate_to(from).unwrap(), from);
        let c = raw(&db);
        if from >= 1 {
            c.execute_batch(&format!(
                "INSERT INTO netflow_flows VALUES ({T0}, x'c0000201', 1, 2, 0, 6, x'0a000001', x'0a000002', 1234, 443, 1000, 2, 0);
                 INSERT INTO netflow_bot_jobs (job_id, last_window_end) VALUES ('1min', {T0});"
            ))
            .unwrap();
        }
        if from >= 2 {
            c.execute_batch(&format!(
                "INSERT INTO netflow_exporters VALUES (x'c0000201', {T0}, {T0}, 7, 1, 0, 0)"
            ))
            .unwrap();
        }
        if from >= 3 {
            // a version-3 writer kept max_ts with every batch
            c.execute_batch(&format!("UPDATE netflow_flow_stats SET max_ts = {T0}"))
                .unwrap();
        }
        drop(s);
        let mut s = SqliteStore::open(&db.config).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
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
            assert_eq!(s.max_ts().unwrap(), Some(T0), "from {from}");
            assert_eq!(
                netflow_store::jobs::window_end(&mut s, "1min").unwrap(),
                Some(T0)
            );
            let ex = s.exporters().unwrap();
            assert_eq!(
                (ex.len(), ex[0].flows, ex[0].packets),
                (1, 1, if from >= 2 { 7 } else { 0 })
            );
            // the job recorded before version 5 gets the late flows written after the upgrade
            common::assert_upgraded_job_gets_late_flows(&mut s, T0, T0, from);
        }
        s.write_flows(&[flow(T0 + 1, "192.0.2.1")]).unwrap();
        assert_eq!(s.max_ts().unwrap(), Some(T0 + 1));
    }
}

#[test]
fn newer_schema_is_refused() {
    let db = SqliteDb::new();
    SqliteStore::open(&db.config).unwrap();
    raw(&db)
        .execute(
            "INSERT INTO netflow_schema_migrations (version, description) VALUES (?1, 'future')",
            [SCHEMA_VERSION + 1],
        )
        .unwrap();
    assert!(matches!(
        SqliteStore::open(&db.config),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[test]
fn corrupt_address_is_a_typed_error_not_a_panic() {
    let db = SqliteDb::new();
    let mut s = SqliteStore::open(&db.config).unwrap();
    raw(&db)
        .execute_batch(&format!(
            "INSERT INTO netflow_flows VALUES ({T0}, x'c0000201', -1, 2, 0, 6, x'0a00', x'0a000002', 1234, 443, 1000, 2, 0)"
        ))
        .unwrap();
    let err = s
        .for_each_flow(&[ip("192.0.2.1")], T0 - 1, T0, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadValue {
                column: "input_if",
                value: -1
            }
        ),
        "{err}"
    );
}
