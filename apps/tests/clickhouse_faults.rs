//! The split deployment on ClickHouse while the ClickHouse server is killed (SIGKILL) and
//! started again: every flow sent is stored exactly once. The server is the tests' own
//! restartable one (netflow-store's test-support), never the shared one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use netflow_store::test_support::clickhouse::{ClickHouseServer, TestDatabase};
use netflow_store::{Backend, ClickHouseConfig, StoreConfig};

type FlowKey = (IpAddr, IpAddr, IpAddr, u16, u8, u64, u32, u32, u8);

/// How many times each flow of `exporters` is stored.
fn stored_flows(config: &StoreConfig, exporters: &[IpAddr]) -> BTreeMap<FlowKey, usize> {
    let mut store = netflow_store::open(config).expect("open the ClickHouse store");
    let mut m = BTreeMap::new();
    store
        .for_each_flow(exporters, i64::MIN, i64::MAX, &mut |f| {
            let k = (
                f.exporter,
                f.src_addr,
                f.dst_addr,
                f.dst_port,
                f.protocol,
                f.bytes,
                f.input_if,
                f.output_if,
                f.direction,
            );
            *m.entry(k).or_insert(0) += 1;
            ControlFlow::Continue(())
        })
        .expect("read flows");
    m
}

fn count(config: &StoreConfig) -> usize {
    stored_flows(config, &["127.0.0.1".parse().unwrap()])
        .values()
        .sum()
}

#[test]
fn clickhouse_killed_while_traffic_flows() {
    let server = ClickHouseServer::private();
    let db = TestDatabase::new(&server, "apps_kill");
    let dir = TempDir::new("chkill");
    let port = free_udp_port();
    let pipe = dir.path().join("netflow.pipe").display().to_string();
    let env = vec![
        ("CLICKHOUSE_URL", server.url()),
        ("CLICKHOUSE_DATABASE", db.name.clone()),
        ("NAMED_PIPE_FILENAME", pipe.clone()),
        ("STATS_INTERVAL", "1".to_owned()),
        ("MAX_BUFFERED_FLOWS", "4000".to_owned()),
    ];
    let writer = Proc::start("netflow-writer", dir.path(), &env, &["--state-dir", "."]);
    writer.wait_for("store open", Duration::from_secs(60));
    let collector = Proc::start(
        "netflow-collector",
        dir.path(),
        &[
            ("NAMED_PIPE_FILENAME", pipe),
            ("NETFLOW_PORT", port.to_string()),
            ("STATS_INTERVAL", "1".to_owned()),
        ],
        &[],
    );
    collector.wait_for("listening for NetFlow", Duration::from_secs(30));
    collector.wait_for("named pipe connected", Duration::from_secs(30));
    let config = StoreConfig::new(Backend::ClickHouse(
        ClickHouseConfig::new(&server.url(), &db.name, None, None).unwrap(),
    ));

    let sent = 25_000; // 10 s of traffic: the outage (about 3 s) falls well inside
    let mut g = Proc::start(
        "netflow-generate",
        dir.path(),
        &[],
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--count",
            &sent.to_string(),
            "--rate",
            "2500",
            "--print",
            "--seed",
            "13",
        ],
    );
    wait_until("the first flows stored", Duration::from_secs(30), || {
        count(&config) > 0
    });
    let down = Instant::now();
    server.stop();
    thread::sleep(Duration::from_secs(3));
    server.start();
    let outage = down.elapsed();
    assert!(
        g.child.try_wait().expect("wait").is_none(),
        "the generator finished during the outage; traffic must flow through the restart"
    );
    let (status, out) = g.wait(Duration::from_secs(60));
    assert!(status.success());
    let generated = parse_flows(&out);
    assert_eq!(generated.len(), sent);
    let mut last = usize::MAX;
    wait_until("the writer to settle", Duration::from_secs(60), || {
        thread::sleep(Duration::from_millis(1500));
        let n = count(&config);
        let settled = n == last;
        last = n;
        settled
    });

    let mut want: BTreeMap<FlowKey, usize> = BTreeMap::new();
    for f in &generated {
        let k = (
            f.exporter,
            f.src,
            f.dst,
            f.dst_port,
            f.protocol,
            f.bytes,
            f.input_if,
            f.output_if,
            f.direction,
        );
        *want.entry(k).or_insert(0) += 1;
    }
    let exporters: Vec<IpAddr> = want
        .keys()
        .map(|k| k.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let got = stored_flows(&config, &exporters);
    let stored: usize = got.values().sum();
    let (mut missing, mut extra) = (0, 0);
    for k in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        let (w, g) = (
            want.get(k).copied().unwrap_or(0),
            got.get(k).copied().unwrap_or(0),
        );
        missing += w.saturating_sub(g);
        extra += g.saturating_sub(w);
    }
    let (spooled, dropped, db_errors) = (
        writer.last_stat("flows_spooled"),
        writer.last_stat("flows_dropped"),
        writer.last_stat("db_errors"),
    );
    eprintln!(
        "clickhouse kill: sent {sent} flows, stored {stored} (missing {missing}, duplicated \
         {extra}); kill to up again {outage:.1?}; writer: db_errors={db_errors} \
         flows_spooled={spooled} flows_dropped={dropped}"
    );
    assert_eq!(
        (missing, extra, stored),
        (0, 0, sent),
        "flows lost or stored twice across the ClickHouse kill"
    );
    assert!(
        writer.log_has("store unreachable; keeping flows and retrying"),
        "the writer never saw the server down"
    );
    assert_eq!(dropped, 0, "drops were counted");
    assert!(writer.stop().success());
    assert!(collector.stop().success());
}
