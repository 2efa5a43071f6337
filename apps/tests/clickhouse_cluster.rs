//! A real two-shard ClickHouse cluster on this machine: two servers (the tests' shared one and
//! a second, netflow-store's test-support), each with a database of the same name written by a
//! writer of its own (collector + writer per shard, exporters split between them), and the
//! bot's database on the first server, whose flow, commit-record and exporter tables are
//! `Distributed` over both shards. The bot's values (pushed down and streamed) equal the values
//! of the flows the generators sent: every flow counted once.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use netflow_apps::bot::{Interval, Window, aggregate_flows, aggregate_window};
use netflow_store::test_support::clickhouse::{CLUSTER, ClickHouseServer, TestDatabase};
use netflow_store::{Backend, ClickHouseConfig, Fields, Flow, StoreConfig};

fn config(server: &ClickHouseServer, db: &str) -> StoreConfig {
    StoreConfig::new(Backend::ClickHouse(
        ClickHouseConfig::new(&server.url(), db, None, None).unwrap(),
    ))
}

/// A collector and writer for one shard, and a generator sending from `exporters`.
fn shard_pipeline(
    dir: &TempDir,
    server: &ClickHouseServer,
    db: &str,
    exporters: &str,
    seed: &str,
    count: usize,
) -> (Proc, Proc, Proc) {
    let port = free_udp_port();
    let pipe = dir.path().join("netflow.pipe").display().to_string();
    let env = vec![
        ("CLICKHOUSE_URL", server.url()),
        ("CLICKHOUSE_DATABASE", db.to_owned()),
        ("NAMED_PIPE_FILENAME", pipe.clone()),
        ("STATS_INTERVAL", "1".to_owned()),
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
    collector.wait_for("named pipe connected", Duration::from_secs(30));
    let generator = Proc::start(
        "netflow-generate",
        dir.path(),
        &[],
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--exporters",
            exporters,
            "--count",
            &count.to_string(),
            "--rate",
            "5000",
            "--print",
            "--seed",
            seed,
        ],
    );
    (writer, collector, generator)
}

#[test]
fn two_shards_two_writers_every_flow_counted_once() {
    let shard1 = ClickHouseServer::shared();
    let shard2 = ClickHouseServer::second_shard();
    // the same database name on both shards (Distributed addresses the shards' tables by name)
    let local = TestDatabase::new(&shard1, "shard");
    let local2 = TestDatabase::on_server(&shard2, &local.name);
    let bot_db = TestDatabase::new(&shard1, "cluster");
    let (dir1, dir2) = (TempDir::new("chshard1"), TempDir::new("chshard2"));
    let count = 6000;
    let (w1, c1, g1) = shard_pipeline(
        &dir1,
        &shard1,
        &local.name,
        "127.0.0.2,127.0.0.3",
        "21",
        count,
    );
    let (w2, c2, g2) = shard_pipeline(&dir2, &shard2, &local2.name, "127.0.0.4", "22", count);

    // the bot's database: the flows, commit records and exporters of both shards
    shard1
        .query(&format!("CREATE DATABASE {}", bot_db.name))
        .unwrap();
    for table in ["netflow_flows", "netflow_batches", "netflow_exporters"] {
        shard1
            .query(&format!(
                "CREATE TABLE {b}.{table} AS {l}.{table} ENGINE = Distributed({CLUSTER}, {l}, {table})",
                b = bot_db.name,
                l = local.name
            ))
            .unwrap();
    }

    let mut generated = Vec::new();
    for g in [g1, g2] {
        let (status, out) = g.wait(Duration::from_secs(60));
        assert!(status.success());
        generated.extend(parse_flows(&out));
    }
    assert_eq!(generated.len(), 2 * count);
    let mut bot = netflow_store::open(&config(&shard1, &bot_db.name)).unwrap();
    let exporters: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut last = 0;
    wait_until(
        "both writers to store every flow",
        Duration::from_secs(60),
        || {
            std::thread::sleep(Duration::from_millis(500));
            last = bot
                .for_each_flow(&exporters, i64::MIN, i64::MAX, &mut |_| {
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            last as usize >= generated.len()
        },
    );
    assert_eq!(last as usize, generated.len(), "flows stored twice");

    // what the flows sent add up to
    let mut want = Window::new();
    for f in &generated {
        want.add(&Flow {
            exporter: f.exporter,
            src_addr: f.src,
            dst_addr: f.dst,
            dst_port: f.dst_port,
            protocol: f.protocol,
            bytes: f.bytes,
            input_if: f.input_if,
            output_if: f.output_if,
            direction: f.direction,
            ..Flow::default()
        });
    }
    let entities: Vec<(i64, IpAddr)> = exporters
        .iter()
        .enumerate()
        .map(|(i, &a)| (i as i64 + 1, a))
        .collect();
    let values = |w: &Window| {
        let batch = w.values(Interval::H24.label(), &entities).unwrap();
        batch
            .iter()
            .map(|(p, v)| format!("{} {}\n", p.as_str(), serde_json::json!(v)))
            .collect::<String>()
    };
    // the bot's path on ClickHouse: pushdown. A reader sees a shard's batches once every
    // active shard has committed past them: the writer that finished first catches up with a
    // heartbeat within about 30 s (idle 10 s, maintenance every 20 s)
    let mut pushed = None;
    wait_until(
        "the snapshot to reach both shards' last batches",
        Duration::from_secs(60),
        || {
            let (w, read) = aggregate_window(&mut *bot, "acc/24h", Interval::H24, &exporters)
                .unwrap()
                .expect("a window");
            let complete = read.flows as usize == generated.len();
            if !complete {
                assert!(
                    (read.flows as usize) < generated.len(),
                    "flows counted twice"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            pushed = Some(w);
            complete
        },
    );
    let pushed = pushed.expect("a window");
    // and the streaming path over the same Distributed tables
    let mut n = None;
    let streamed = aggregate_flows(|f| {
        n = netflow_store::jobs::read_window(
            &mut *bot,
            "stream/24h",
            &exporters,
            86_400_000_000,
            Fields::Aggregation,
            f,
        )?;
        Ok::<_, netflow_store::StoreError>(n.map_or(0, |r| r.flows))
    })
    .unwrap();
    let expected = values(&want);
    assert!(expected.contains("127%2e0%2e0%2e4") || expected.contains("entity.3"));
    assert_eq!(
        values(&pushed),
        expected,
        "pushdown values differ from the flows sent"
    );
    assert_eq!(
        values(&streamed),
        expected,
        "streamed values differ from the flows sent"
    );
    // both shards hold flows: the exporters went to their own writer
    for (server, db) in [(&shard1, &local.name), (&shard2, &local2.name)] {
        let n = server
            .query(&format!("SELECT count() FROM {db}.netflow_flows"))
            .unwrap();
        assert!(
            n.trim().parse::<u64>().unwrap() > 0,
            "a shard without flows"
        );
    }
    forensic_queries_over_the_shards(&mut *bot, &generated, &bot_db.name, &shard1);
    for p in [w1, c1, w2, c2] {
        assert!(p.stop().success());
    }
}

/// `netflow-query`'s queries on the bot's `Distributed` tables: grouped in the shards, merged
/// and ranked in the first; each group's flows and bytes equal those of the flows sent.
fn forensic_queries_over_the_shards(
    bot: &mut dyn netflow_store::Store,
    generated: &[JFlow],
    bot_db: &str,
    server: &ClickHouseServer,
) {
    use netflow_store::query::{Either, Expr, Field, Key, Order, Output, Pred, Query, QueryRow};
    use std::collections::BTreeMap;
    type Rows = Vec<(Vec<String>, u64, u64)>;
    let run = |bot: &mut dyn netflow_store::Store, filter: Option<Expr>, output| {
        let q = Query {
            from_micros: i64::MIN,
            to_micros: i64::MAX,
            filter,
            output,
        };
        let mut rows: Rows = Vec::new();
        let t = bot
            .query(&q, &mut |r| {
                if let QueryRow::Group(g) = r {
                    let keys = g.keys.iter().map(|k| k.to_string()).collect();
                    rows.push((keys, g.flows, g.bytes));
                }
                std::ops::ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("{q:?}: {e}"));
        (rows, t)
    };
    // the reference: flows and bytes per key, ordered by `metric` descending, then key
    let reference = |keys: &dyn Fn(&JFlow) -> Vec<IpAddr>, by_bytes: bool, n: usize| {
        let mut m: BTreeMap<IpAddr, (u64, u64)> = BTreeMap::new();
        for f in generated {
            for k in keys(f) {
                let e = m.entry(k).or_default();
                *e = (e.0 + 1, e.1 + f.bytes);
            }
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| {
            let m = |x: &(u64, u64)| if by_bytes { x.1 } else { x.0 };
            m(&b.1).cmp(&m(&a.1)).then(a.0.cmp(&b.0))
        });
        v.truncate(n);
        v.into_iter()
            .map(|(a, (fl, by))| (vec![a.to_string()], fl, by))
            .collect::<Rows>()
    };
    let groups = |keys: Vec<Key>, either, order, limit| Output::Groups {
        keys,
        either,
        order,
        limit,
    };
    // every source address, by bytes
    let (rows, t) = run(
        bot,
        None,
        groups(vec![Key::SRC_ADDR], None, Order::Bytes, None),
    );
    assert_eq!(t.flows as usize, generated.len(), "totals over the shards");
    assert_eq!(
        t.bytes,
        generated.iter().map(|f| f.bytes).sum::<u64>(),
        "bytes over the shards"
    );
    assert_eq!(rows, reference(&|f| vec![f.src], true, usize::MAX));
    // the top 10 addresses of either side, by flows, of one protocol
    let (rows, _) = run(
        bot,
        Some(Expr::Pred(Pred::Protocol(6))),
        groups(vec![], Some(Either::Addr), Order::Flows, Some(10)),
    );
    let want = reference(
        &|f| {
            if f.protocol == 6 {
                vec![f.src, f.dst]
            } else {
                vec![]
            }
        },
        false,
        10,
    );
    assert!(!want.is_empty());
    assert_eq!(rows, want, "top 10 ip of TCP flows");
    // flows per exporter: each shard's exporters, once
    let (rows, _) = run(
        bot,
        None,
        groups(vec![Key::of(Field::Exporter)], None, Order::Flows, None),
    );
    assert_eq!(rows, reference(&|f| vec![f.exporter], false, usize::MAX));
    assert_eq!(rows.len(), 3, "exporters of both shards");
    // and the command line on the same database
    let out = std::process::Command::new(bin("netflow-query"))
        .env("CLICKHOUSE_URL", server.url())
        .env("CLICKHOUSE_DATABASE", bot_db)
        .env_remove("DB_HOST")
        .args(["-t", "2000/01/01.00:00:00", "-s", "exporter", "-o", "csv"])
        .output()
        .expect("run netflow-query");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{} flows", generated.len())),
        "netflow-query over the shards: {err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
}
