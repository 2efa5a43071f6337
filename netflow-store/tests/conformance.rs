//! The conformance suite: every check runs on every backend (PostgreSQL on the test server,
//! SQLite in a temp file, ClickHouse on the tests' own server), each in a database of its own.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;

use common::{HOUR, T0, as_stored, flow, ip, read, read_all, sorted};
use netflow_store::{Exporter, Fields, Flow, JobWindow, SCHEMA_VERSION, Store, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[test]
            fn $name() {
                let db = super::common::PgDb::new();
                let mut store = netflow_store::open(&db.config).expect("open PostgreSQL store");
                super::$name(&mut *store);
            })*
        }
        mod clickhouse {
            $(#[test]
            fn $name() {
                let db = super::common::ClickHouseDb::new();
                let mut store = netflow_store::open(&db.config).expect("open ClickHouse store");
                super::$name(&mut *store);
            })*
        }
        mod sqlite {
            $(#[test]
            fn $name() {
                let db = super::common::SqliteDb::new();
                let mut store = netflow_store::open(&db.config).expect("open SQLite store");
                super::$name(&mut *store);
            })*
        }
    };
}

conformance!(
    empty_store,
    round_trip_extremes,
    round_trip_random_batches,
    window_is_after_exclusive_upto_inclusive,
    window_spanning_many_hours_is_complete,
    stream_stops_on_break,
    max_ts_is_largest_ever_written,
    retention_forgets_exactly_before_cutoff_hour,
    exporters_upsert_adds_and_saturates,
    job_window_ends,
    out_of_range_timestamp_rejects_whole_batch,
    late_flows_reach_each_job_once,
);

fn empty_store(s: &mut dyn Store) {
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(s.max_ts().unwrap(), None);
    assert!(read_all(s, &[ip("192.0.2.1")]).is_empty());
    assert!(s.exporters().unwrap().is_empty());
    assert_eq!(netflow_store::jobs::window_end(s, "1min").unwrap(), None);
    s.write_flows(&[]).unwrap();
    assert_eq!(s.max_ts().unwrap(), None);
}

fn round_trip_extremes(s: &mut dyn Store) {
    let v4 = ip("198.51.100.7");
    let v6 = ip("2001:db8::1");
    let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
    let mut flows = Vec::new();
    for (i, &exporter) in [v4, v6, mapped].iter().enumerate() {
        let ts = T0 + i as i64;
        flows.push(Flow {
            ts_micros: ts,
            exporter,
            input_if: u32::MAX,
            output_if: 0,
            direction: Flow::EGRESS,
            protocol: 255,
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::BROADCAST),
            src_port: 0,
            dst_port: 65535,
            bytes: u64::MAX, // saturates to i64::MAX (documented)
            packets: i64::MAX as u64 + 1,
            tcp_flags: 255,
            ..Flow::default()
        });
        flows.push(Flow {
            ts_micros: ts,
            exporter,
            input_if: 0,
            output_if: u32::MAX,
            direction: Flow::INGRESS,
            protocol: 0,
            src_addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            dst_addr: IpAddr::V6(Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            )),
            src_port: 65535,
            dst_port: 0,
            bytes: i64::MAX as u64, // largest stored exactly
            packets: 0,
            tcp_flags: 0,
            // not stored: read back as defaults
            sampling_interval: 100,
            start_ms: 5,
            end_ms: 6,
        });
    }
    s.write_flows(&flows).unwrap();
    let back = read_all(s, &[v4, v6, mapped]);
    assert_eq!(back, sorted(flows.iter().map(as_stored).collect()));
    assert_eq!(
        back.iter().filter(|f| f.bytes == i64::MAX as u64).count(),
        6
    );
    // a mapped address is not the IPv4 address
    assert_eq!(read_all(s, &[ip("203.0.113.9")]).len(), 0);

    // the earliest and latest instants stored
    let (min_ts, max_ts) = (-62_135_596_800_000_000, 253_402_300_799_999_999);
    let edge = [flow(min_ts, "192.0.2.99"), flow(max_ts, "192.0.2.99")];
    s.write_flows(&edge).unwrap();
    assert_eq!(read_all(s, &[ip("192.0.2.99")]), sorted(edge.to_vec()));
    assert_eq!(s.max_ts().unwrap(), Some(max_ts));
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(b.into())),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(b.into())),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
    ]
}

fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0..100_000u64,
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(0)
    ]
}

fn arb_flow(exporters: Vec<IpAddr>) -> impl Strategy<Value = Flow> {
    (
        (
            0..6 * HOUR,
            proptest::sample::select(exporters),
            any::<u32>(),
            any::<u32>(),
            0..=1u8,
            any::<u8>(),
        ),
        (
            arb_ip(),
            arb_ip(),
            any::<u16>(),
            any::<u16>(),
            arb_u64(),
            arb_u64(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (dt, exporter, input_if, output_if, direction, protocol),
                (src_addr, dst_addr, src_port, dst_port, bytes, packets, tcp_flags),
            )| Flow {
                ts_micros: T0 + dt,
                exporter,
                input_if,
                output_if,
                direction,
                protocol,
                src_addr,
                dst_addr,
                src_port,
                dst_port,
                bytes,
                packets,
                tcp_flags,
                ..Flow::default()
            },
        )
}

fn round_trip_random_batches(s: &mut dyn Store) {
    // each case writes into its own 6-hour slot, so cases see only their own flows
    let slot = std::cell::Cell::new(0i64);
    let s = std::cell::RefCell::new(s);
    let strategy = proptest::collection::vec(arb_ip(), 1..4).prop_flat_map(|ex| {
        proptest::collection::vec(arb_flow(ex.clone()), 1..150).prop_map(move |f| (ex.clone(), f))
    });
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(exporters, flows)| {
            slot.set(slot.get() + 1);
            let shift = slot.get() * 24 * HOUR;
            let mut s = s.borrow_mut();
            let flows: Vec<Flow> = flows
                .into_iter()
                .map(|f| Flow {
                    ts_micros: f.ts_micros + shift,
                    ..f
                })
                .collect();
            s.write_flows(&flows)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = read(&mut **s, &exporters, T0 + shift - 1, T0 + shift + 6 * HOUR);
            prop_assert_eq!(back, sorted(flows.iter().map(as_stored).collect()));
            Ok(())
        })
        .unwrap();
}

fn window_is_after_exclusive_upto_inclusive(s: &mut dyn Store) {
    let (a, b) = ("192.0.2.1", "2001:db8::2");
    let flows: Vec<Flow> = (-1..=61)
        .flat_map(|sec| [flow(T0 + sec * 1_000_000, a), flow(T0 + sec * 1_000_000, b)])
        .collect();
    s.write_flows(&flows).unwrap();
    let (after, upto) = (T0, T0 + 60_000_000);
    let got = read(s, &[ip(a)], after, upto);
    assert_eq!(got.len(), 60);
    assert!(
        got.iter()
            .all(|f| f.exporter == ip(a) && f.ts_micros > after && f.ts_micros <= upto)
    );
    assert_eq!(read(s, &[ip(a), ip(b)], after, upto).len(), 120);
    assert_eq!(
        read(s, &[ip(a), ip(b), ip("192.0.2.200")], after, upto).len(),
        120
    );
    assert!(read(s, &[], after, upto).is_empty());
    assert!(read(s, &[ip(a)], upto, after).is_empty());
    assert!(read(s, &[ip(a)], upto, upto).is_empty());
    assert_eq!(read(s, &[ip(a)], upto - 1, upto).len(), 1);
}

fn window_spanning_many_hours_is_complete(s: &mut dyn Store) {
    // 4 flows an hour for 60 hours, in two batches that each span many hours
    let flows: Vec<Flow> = (0..240)
        .map(|i| flow(T0 + i * HOUR / 4, "192.0.2.1"))
        .collect();
    s.write_flows(&flows[..100]).unwrap();
    s.write_flows(&flows[100..]).unwrap();
    let got = read(s, &[ip("192.0.2.1")], T0 + 10 * HOUR - 1, T0 + 50 * HOUR);
    assert_eq!(got, sorted(flows[40..=200].to_vec()));
}

fn stream_stops_on_break(s: &mut dyn Store) {
    let flows: Vec<Flow> = (0..500).map(|i| flow(T0 + i, "192.0.2.1")).collect();
    s.write_flows(&flows).unwrap();
    let mut seen = 0;
    let n = s
        .for_each_flow(&[ip("192.0.2.1")], T0 - 1, T0 + 1000, &mut |_| {
            seen += 1;
            if seen == 10 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((n, seen), (10, 10));
    // the store is usable after an abandoned stream
    assert_eq!(read_all(s, &[ip("192.0.2.1")]).len(), 500);
}

fn max_ts_is_largest_ever_written(s: &mut dyn Store) {
    s.write_flows(&[
        flow(T0 + 5, "192.0.2.1"),
        flow(T0 + 9, "192.0.2.1"),
        flow(T0 + 7, "192.0.2.1"),
    ])
    .unwrap();
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 9));
    s.write_flows(&[flow(T0 + 1, "192.0.2.2")]).unwrap();
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 9));
    s.write_flows(&[flow(T0 + 2 * HOUR, "192.0.2.2")]).unwrap();
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 2 * HOUR));
    s.expire_before(T0 + 10 * HOUR).unwrap();
    assert!(read_all(s, &[ip("192.0.2.1"), ip("192.0.2.2")]).is_empty());
    assert_eq!(
        s.max_ts().unwrap(),
        Some(T0 + 2 * HOUR),
        "retention does not lower max_ts"
    );
}

fn retention_forgets_exactly_before_cutoff_hour(s: &mut dyn Store) {
    let day = 24 * HOUR;
    let start = T0 - T0.rem_euclid(HOUR); // an hour boundary
    // one flow every 20 minutes for 8 days, plus flows on both sides of each hour boundary
    let mut flows: Vec<Flow> = (0..8 * 72)
        .map(|i| flow(start + i * HOUR / 3, "192.0.2.1"))
        .collect();
    flows.extend((1..8 * 24).map(|h| flow(start + h * HOUR - 1, "192.0.2.1")));
    s.write_flows(&flows).unwrap();
    let now = start + 8 * day + HOUR / 2;
    let expired = s.expire(now).unwrap(); // default 5 days
    let cutoff = start + 3 * day;
    assert_eq!(expired.cutoff_micros, cutoff);
    let kept = read_all(s, &[ip("192.0.2.1")]);
    let expect: Vec<Flow> = flows
        .iter()
        .filter(|f| f.ts_micros >= cutoff)
        .copied()
        .collect();
    assert_eq!(kept, sorted(expect));
    // cutoff inside an hour keeps that whole hour
    let expired = s.expire_before(cutoff + day + HOUR / 2).unwrap();
    assert_eq!(expired.cutoff_micros, cutoff + day);
    assert!(
        read_all(s, &[ip("192.0.2.1")])
            .iter()
            .all(|f| f.ts_micros >= cutoff + day)
    );
    assert_eq!(
        read(s, &[ip("192.0.2.1")], cutoff + day - 1, cutoff + day).len(),
        1
    );
    // expiring again removes nothing more
    let before = read_all(s, &[ip("192.0.2.1")]).len();
    s.expire_before(cutoff + day).unwrap();
    assert_eq!(read_all(s, &[ip("192.0.2.1")]).len(), before);
}

fn exporters_upsert_adds_and_saturates(s: &mut dyn Store) {
    let e = |addr: &str, first: i64, last: i64, n: u64| Exporter {
        addr: ip(addr),
        first_seen_micros: first,
        last_seen_micros: last,
        packets: n,
        flows: 10 * n,
        lost_packets: 1,
        lost_flows: 0,
    };
    s.upsert_exporters(&[e("2001:db8::1", T0, T0 + 10, 5), e("192.0.2.9", T0, T0, 1)])
        .unwrap();
    s.upsert_exporters(&[e("192.0.2.9", T0 - 100, T0 + 50, 2)])
        .unwrap();
    s.upsert_exporters(&[]).unwrap();
    let list = s.exporters().unwrap();
    assert_eq!(
        list,
        vec![
            Exporter {
                lost_packets: 2,
                ..e("192.0.2.9", T0 - 100, T0 + 50, 3)
            },
            e("2001:db8::1", T0, T0 + 10, 5),
        ]
    );
    // counters saturate at i64::MAX rather than fail or wrap
    s.upsert_exporters(&[Exporter {
        packets: u64::MAX,
        ..e("192.0.2.9", T0, T0, 0)
    }])
    .unwrap();
    s.upsert_exporters(&[Exporter {
        packets: 7,
        ..e("192.0.2.9", T0, T0, 0)
    }])
    .unwrap();
    assert_eq!(s.exporters().unwrap()[0].packets, i64::MAX as u64);
}

fn job_window_ends(s: &mut dyn Store) {
    assert_eq!(
        netflow_store::jobs::window_end(s, "acc1/1min").unwrap(),
        None
    );
    netflow_store::jobs::set_window_end(s, "acc1/1min", T0).unwrap();
    netflow_store::jobs::set_window_end(s, "acc1/1h", T0 - HOUR).unwrap();
    netflow_store::jobs::set_window_end(s, "acc1/1min", T0 + 60_000_000).unwrap();
    assert_eq!(
        netflow_store::jobs::window_end(s, "acc1/1min").unwrap(),
        Some(T0 + 60_000_000)
    );
    assert_eq!(
        netflow_store::jobs::window_end(s, "acc1/1h").unwrap(),
        Some(T0 - HOUR)
    );
    assert!(matches!(
        netflow_store::jobs::set_window_end(s, "x", i64::MAX),
        Err(StoreError::TimestampOutOfRange { .. })
    ));
}

fn out_of_range_timestamp_rejects_whole_batch(s: &mut dyn Store) {
    let batch = [flow(T0, "192.0.2.1"), flow(i64::MAX, "192.0.2.1")];
    let err = s.write_flows(&batch).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TimestampOutOfRange {
                ts_micros: i64::MAX
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(read_all(s, &[ip("192.0.2.1")]).is_empty());
    assert_eq!(s.max_ts().unwrap(), None);
    let exporters: BTreeSet<_> = s.exporters().unwrap().into_iter().map(|e| e.addr).collect();
    assert!(exporters.is_empty());
}

/// One job run: the window's and the late flows, sorted, and the window; the mark recorded.
fn job_run(s: &mut dyn Store, job: &str, period: i64) -> (Vec<Flow>, Option<JobWindow>) {
    job_run_fields(s, job, period, Fields::All)
}

fn job_run_fields(
    s: &mut dyn Store,
    job: &str,
    period: i64,
    fields: Fields,
) -> (Vec<Flow>, Option<JobWindow>) {
    let mut out = Vec::new();
    let w =
        netflow_store::jobs::read_window(s, job, &[ip("192.0.2.1")], period, fields, &mut |f| {
            out.push(*f);
            ControlFlow::Continue(())
        })
        .unwrap();
    if let Some(w) = w {
        assert_eq!((w.flows + w.late_flows) as usize, out.len());
        s.set_job_mark(job, w.mark).unwrap();
    }
    (sorted(out), w)
}

fn with_bytes(ts: i64, exporter: &str, bytes: u64) -> Flow {
    Flow {
        bytes,
        ..flow(ts, exporter)
    }
}

fn late_flows_reach_each_job_once(s: &mut dyn Store) {
    let min = 60_000_000;
    assert_eq!(job_run(s, "a/1min", min), (vec![], None));
    // on time: ts order, one batch after the other
    let first = [
        with_bytes(T0, "192.0.2.1", 1),
        with_bytes(T0 + 10, "192.0.2.1", 2),
    ];
    assert_eq!(s.write_flows(&first).unwrap().late, 0);
    // job a reads (T0 + 10 - 1 min, T0 + 10]; job b is not run yet
    let (got, w) = job_run(s, "a/1min", min);
    assert_eq!(got, sorted(first.to_vec()));
    let w = w.unwrap();
    assert_eq!(
        (w.after, w.upto, w.flows, w.late_flows),
        (T0 + 10 - min, T0 + 10, 2, 0)
    );
    // jobs p and q read the same, all fields and the bot's projection
    job_run_fields(s, "p/1min", min, Fields::All);
    job_run_fields(s, "q/1min", min, Fields::Aggregation);

    // A batch with on-time flows, late ones (at or before max ts T0 + 10: T0 + 10 itself, T0 +
    // 5, and one before job a's window) and another exporter's late flow.
    let late = [
        with_bytes(T0 + 10, "192.0.2.1", 4),
        with_bytes(T0 + 5, "192.0.2.1", 8),
        with_bytes(T0 - 2 * min, "192.0.2.1", 16),
        with_bytes(T0 + 5, "192.0.2.2", 32),
    ];
    let on_time = with_bytes(T0 + 20, "192.0.2.1", 64);
    let mut batch = late.to_vec();
    batch.push(on_time);
    assert_eq!(s.write_flows(&batch).unwrap().late, 4);
    // A later batch entirely late, with a flow in job a's next window (T0 + 15).
    let late2 = [
        with_bytes(T0 + 15, "192.0.2.1", 128),
        with_bytes(T0 + 1, "192.0.2.1", 256),
    ];
    assert_eq!(s.write_flows(&late2).unwrap().late, 2);
    assert_eq!(s.max_ts().unwrap(), Some(T0 + 20));

    // The bot's projection: the same window and late flows, with ts, src_port, packets and
    // tcp_flags left out.
    let (all, w) = job_run_fields(s, "p/1min", min, Fields::All);
    assert_eq!(w.unwrap().late_flows, 4);
    let (agg, w) = job_run_fields(s, "q/1min", min, Fields::Aggregation);
    assert_eq!(w.unwrap().late_flows, 4);
    let projected: Vec<Flow> = all.iter().map(|f| Fields::Aggregation.project(f)).collect();
    assert_eq!(sorted(agg), sorted(projected));
    assert!(
        all.iter()
            .all(|f| f.packets != 0 && f.src_port != 0 && f.ts_micros != 0)
    );

    // Job a: its window (T0 + 10, T0 + 20] from the flows table, plus the late flows of its
    // exporter at or before T0 + 10 that it has not seen (all three of the first late batch
    // and T0 + 1 of the second); T0 + 15 only once, through the window.
    let (got, w) = job_run(s, "a/1min", min);
    let w = w.unwrap();
    assert_eq!(
        (w.after, w.upto, w.flows, w.late_flows),
        (T0 + 10, T0 + 20, 2, 4)
    );
    let want = sorted(vec![on_time, late2[0], late[0], late[1], late[2], late2[1]]);
    assert_eq!(got, want);
    // nothing twice: the next run sees nothing
    let (got, w) = job_run(s, "a/1min", min);
    assert_eq!((got, w.unwrap().late_flows), (vec![], 0));

    // Job b starts now: its first window is the last period, no late flows (they are in it).
    let (got, w) = job_run(s, "b/1min", min);
    assert_eq!(w.unwrap().late_flows, 0);
    assert_eq!(got.len(), 7, "{got:?}"); // all of 192.0.2.1 within (T0 + 20 - 1 min, T0 + 20]

    // A job recorded through set_job_window_end starts at the current late number.
    netflow_store::jobs::set_window_end(s, "c/1min", T0 + 20).unwrap();
    let late3 = [with_bytes(T0 + 3, "192.0.2.1", 512)];
    assert_eq!(s.write_flows(&late3).unwrap().late, 1);
    let (got, _) = job_run(s, "c/1min", min);
    assert_eq!(got, late3.to_vec());

    // Consumed late flows are forgotten once every recorded job has folded them in: a, b
    // and c have all seen the first two late batches; a and b not the third yet.
    assert_eq!(s.forget_consumed_late().unwrap(), 6);
    let (got, _) = job_run(s, "a/1min", min);
    assert_eq!(got, late3.to_vec());
    let (got, _) = job_run(s, "b/1min", min);
    assert_eq!(got, late3.to_vec());
    job_run(s, "p/1min", min);
    job_run(s, "q/1min", min);
    assert_eq!(s.forget_consumed_late().unwrap(), 1);
    assert_eq!(s.forget_consumed_late().unwrap(), 0);

    // Retention forgets late flows with their hour.
    let old = [with_bytes(T0 - 10 * HOUR, "192.0.2.1", 1)];
    assert_eq!(s.write_flows(&old).unwrap().late, 1);
    s.expire_before(T0 - HOUR).unwrap();
    for job in ["a/1min", "b/1min", "c/1min"] {
        let (got, w) = job_run(s, job, min);
        assert_eq!((got, w.unwrap().late_flows), (vec![], 0), "{job}");
    }
}
