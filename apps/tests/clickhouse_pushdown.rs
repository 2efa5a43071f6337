//! The bot's aggregation pushed down to ClickHouse gives the values of the streaming path,
//! path for path and byte for byte (the JSON the bot would post), on the same flows: ties at
//! the N-th place, IPv4, IPv6, IPv4-mapped and IPv4-compatible IPv6 addresses, many
//! interfaces, zero-byte flows, and late flows folded into the next window.

use std::net::IpAddr;

use netflow_apps::bot::aggregate::TOP_N;
use netflow_apps::bot::{Interval, Window, aggregate_flows};
use netflow_store::test_support::clickhouse::{ClickHouseServer, TestDatabase};
use netflow_store::{Backend, ClickHouseConfig, Fields, Flow, Store, StoreConfig};

/// A small deterministic generator (no dependency, the same flows every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.next(xs.len() as u64) as usize]
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flows(rng: &mut Lcg, n: usize, ts0: i64, span: i64, exporters: &[IpAddr]) -> Vec<Flow> {
    let addrs: Vec<IpAddr> = [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.4",
        "10.0.0.5",
        "10.0.0.6",
        "10.0.0.7",
        "10.0.0.8",
        "10.0.0.9",
        "10.0.0.10",
        "10.0.0.11",
        "10.0.0.12",
        "192.0.2.1",
        "2001:db8::1",
        "2001:db8::2",
        "::ffff:10.0.0.1",
        "::10.0.0.1",
        "::1",
        "fe80::1",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    (0..n)
        .map(|_| Flow {
            ts_micros: ts0 + rng.next(span as u64) as i64,
            exporter: rng.pick(exporters),
            input_if: rng.pick(&[0, 1, 2, 3, u32::MAX]),
            output_if: rng.pick(&[0, 7, 8]),
            direction: rng.pick(&[0, 0, 1, 2]),
            protocol: rng.pick(&[1, 6, 6, 17, 47, 58, 0, 255, 41, 50, 51, 89, 132]),
            src_addr: rng.pick(&addrs),
            dst_addr: rng.pick(&addrs),
            src_port: 1,
            dst_port: rng.pick(&[53, 80, 443, 0, 22, 25, 110, 123, 143, 993, 8080, 65535]),
            // few distinct values: many ties at the N-th place
            bytes: rng.pick(&[0, 100, 100, 200, 300, 1500]),
            packets: 1,
            ..Flow::default()
        })
        .collect()
}

/// The JSON of every value, as the bot would post it, and the window read.
fn both_paths(s: &mut dyn Store, round: u32, entities: &[(i64, IpAddr)]) -> (String, String) {
    let exporters: Vec<IpAddr> = entities.iter().map(|e| e.1).collect();
    let period = 60_000_000;
    let mut read = None;
    let streamed = aggregate_flows(|f| {
        read = netflow_store::jobs::read_window(
            s,
            "stream/1min",
            &exporters,
            period,
            Fields::Aggregation,
            f,
        )?;
        Ok::<_, netflow_store::StoreError>(read.map_or(0, |r| r.flows + r.late_flows))
    })
    .unwrap();
    let read = read.expect("a window");
    let (pushed_read, sums) =
        netflow_store::jobs::read_window_sums(s, "push/1min", &exporters, period, TOP_N)
            .unwrap()
            .expect("ClickHouse pushes down");
    assert_eq!(read, pushed_read, "round {round}: the same window and mark");
    assert!(
        read.flows > 100,
        "round {round}: a real window ({} flows)",
        read.flows
    );
    s.set_job_mark("stream/1min", read.mark).unwrap();
    s.set_job_mark("push/1min", pushed_read.mark).unwrap();
    let label = Interval::M1.label();
    // each value as the POST body writes it: {"p": path, "v": number}, in path order
    let json = |w: &Window| {
        let batch = w.values(label, entities).unwrap();
        let items: Vec<serde_json::Value> = batch
            .iter()
            .map(|(p, v)| serde_json::json!({ "p": p.as_str(), "v": v }))
            .collect();
        serde_json::to_string(&items).unwrap()
    };
    let pushed = Window::from_sums(&sums);
    assert_eq!(streamed.flows(), pushed.flows());
    (json(&streamed), json(&pushed))
}

#[test]
fn pushdown_values_equal_streaming_values() {
    let server = ClickHouseServer::shared();
    let db = TestDatabase::new(&server, "pushdown");
    let c = ClickHouseConfig::new(&server.url(), &db.name, None, None).unwrap();
    let mut s = netflow_store::open(&StoreConfig::new(Backend::ClickHouse(c))).unwrap();
    let entities = [
        (1, ip("192.0.2.1")),
        (2, ip("2001:db8::1")),
        (3, ip("::ffff:192.0.2.1")),
        (4, ip("192.0.2.50")), // no flows
    ];
    let exporters = [
        ip("192.0.2.1"),
        ip("2001:db8::1"),
        ip("::ffff:192.0.2.1"),
        ip("192.0.2.9"),
    ];
    let mut rng = Lcg(7);
    let t0 = 1_700_000_000_000_000;
    s.write_flows(&flows(&mut rng, 3000, t0, 50_000_000, &exporters))
        .unwrap();
    s.write_flows(&flows(
        &mut rng,
        3000,
        t0 + 50_000_000,
        10_000_000,
        &exporters,
    ))
    .unwrap();
    let (a, b) = both_paths(&mut *s, 1, &entities);
    assert_eq!(a, b, "round 1: pushdown and streaming values differ");
    assert!(a.contains("topconn") && a.contains("topdstports") && a.contains(".if."));
    // the next window, with late flows (before the previous window end) mixed in
    let mut next = flows(&mut rng, 2000, t0 + 60_000_000, 30_000_000, &exporters);
    next.extend(flows(&mut rng, 500, t0, 60_000_000, &exporters));
    s.write_flows(&next).unwrap();
    let (a, b) = both_paths(&mut *s, 2, &entities);
    assert_eq!(a, b, "round 2: pushdown and streaming values differ");
    // CLICKHOUSE_AGGREGATION=bot: the server sums nothing, so the bot streams the window
    let mut c = ClickHouseConfig::new(&server.url(), &db.name, None, None).unwrap();
    c.aggregation = netflow_store::Aggregation::Bot;
    let mut rows = netflow_store::open(&StoreConfig::new(Backend::ClickHouse(c))).unwrap();
    let sums = netflow_store::jobs::read_window_sums(
        &mut *rows,
        "rows/1min",
        &exporters,
        60_000_000,
        TOP_N,
    )
    .unwrap();
    assert!(sums.is_none(), "aggregation=bot still summed in the server");
}
