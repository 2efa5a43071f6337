//! Faults while traffic flows: database connections killed, the PostgreSQL server stopped and
//! started again, the writer restarted, Grafolean answering 500. Each test says what may be
//! lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use grafolean_client::test_server::{BotKind, TestServer};
use grafolean_client::{Client, ClientConfig, Token};
use netflow_apps::bot::{Bot, BotConfig};
use netflow_apps::stats::Counters;
use netflow_store::test_support::PrivateServer;

fn generator(dir: &TempDir, port: u16, count: u64, rate: u32) -> Proc {
    Proc::start(
        "netflow-generate",
        dir.path(),
        &[],
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
            "--seed",
            "9",
        ],
    )
}

/// Killing the writer's database connections repeatedly loses nothing: the batch is retried.
#[test]
fn database_connection_loss_loses_nothing() {
    let dir = TempDir::new("pgkill");
    let db = PgDb::new("pgkill");
    let port = free_udp_port();
    let (writer, collector, _) = start_split(&dir, &db, port);
    let g = generator(&dir, port, 8000, 2000);
    let mut admin = postgres::Client::connect(PG, postgres::NoTls).expect("admin connection");
    let start = Instant::now();
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(400));
        let n = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .expect("terminate")
            .len();
        kills += n;
    }
    assert!(kills > 0, "no connection was killed");
    let (status, _) = g.wait(Duration::from_secs(60));
    assert!(status.success());
    wait_until(
        "every flow stored after the connection losses",
        Duration::from_secs(60),
        || db.count_flows() == 8000,
    );
    assert!(writer.stop().success());
    assert!(collector.stop().success());
}

/// The writer is stopped (SIGTERM) and restarted while flows arrive. It drains the named pipe
/// and flushes on exit, and reloads its templates; the collector keeps the pipe open while no
/// reader is attached (so the kernel keeps what sits in the pipe buffer for the next reader)
/// and buffers in its queue meanwhile. Nothing is lost: every flow sent is stored once.
/// (What still could be lost, and is counted: the collector's queue overflowing during a long
/// absence, the kernel dropping at the UDP socket, and a writer killed with SIGKILL losing the
/// flows it had read but not yet stored.)
#[test]
fn writer_restart_while_traffic_flows() {
    let dir = TempDir::new("wrestart");
    let db = PgDb::new("wrestart");
    let port = free_udp_port();
    let (writer, collector, env) = start_split(&dir, &db, port);
    let g = generator(&dir, port, 12_000, 3000);
    thread::sleep(Duration::from_millis(1500));
    assert!(writer.stop().success(), "writer exit status after SIGTERM");
    thread::sleep(Duration::from_millis(500));
    let writer = Proc::start("netflow-writer", dir.path(), &env, &["--state-dir", "."]);
    writer.wait_for("templates loaded", Duration::from_secs(30));
    let (status, _) = g.wait(Duration::from_secs(60));
    assert!(status.success());
    // Wait until the count stops growing.
    let mut last = -1;
    wait_until("the writer to settle", Duration::from_secs(60), || {
        thread::sleep(Duration::from_millis(1500));
        let n = db.count_flows();
        let settled = n == last;
        last = n;
        settled
    });
    let stored = db.count_flows();
    eprintln!(
        "writer restart: sent 12000 flows, stored {stored}, lost {}",
        12_000 - stored
    );
    assert_eq!(stored, 12_000, "flows lost across the writer restart");
    let writer_log = Arc::clone(&writer.lines);
    assert!(writer.stop().success());
    let collector_log = Arc::clone(&collector.lines);
    assert!(collector.stop().success());
    let logged = |log: &std::sync::Mutex<Vec<String>>, needle: &str| {
        log.lock().expect("lock").iter().any(|l| l.contains(needle))
    };
    assert!(logged(&writer_log, "named pipe drained"));
    assert!(logged(&collector_log, "named pipe reader gone"));
    assert!(
        !logged(&collector_log, "queue_drops="),
        "collector queue drops"
    );
    assert!(
        !logged(&collector_log, "socket_drops="),
        "kernel socket drops"
    );
}

/// What identifies a flow in the generator's output and in the flows table (the receive time
/// is the collector's, so it is not compared).
type FlowKey = (IpAddr, IpAddr, IpAddr, u16, u8, u64, u32, u32, u8);

/// How many times each flow is stored.
fn stored_flows(db: &PgDb) -> BTreeMap<FlowKey, usize> {
    let mut m = BTreeMap::new();
    let rows = db
        .client()
        .query(
            "SELECT exporter, src_addr, dst_addr, dst_port, protocol, bytes, input_if, output_if, \
             direction FROM netflow_flows",
            &[],
        )
        .expect("read flows");
    for r in rows {
        let k = (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get::<_, i32>(3) as u16,
            r.get::<_, i16>(4) as u8,
            r.get::<_, i64>(5) as u64,
            r.get::<_, i64>(6) as u32,
            r.get::<_, i64>(7) as u32,
            r.get::<_, i16>(8) as u8,
        );
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// PostgreSQL itself goes away for a few seconds (a server of this test's own, stopped and
/// started again; never the shared one) while flows arrive. The writer keeps its batches in
/// memory, and the oldest in the spool beyond `MAX_BUFFERED_FLOWS`, retries, and writes them
/// when the server is back: every flow sent is stored exactly once. (A batch cut in the middle
/// of its COPY or COMMIT by the shutdown is retried; the store's batch marks keep a retry of a
/// batch that did land from being stored twice.)
#[test]
fn postgres_restart_while_traffic_flows() {
    let server = PrivateServer::acquire();
    let dir = TempDir::new("pgrestart");
    let db = PgDb::on_port("pgrestart", server.port());
    let port = free_udp_port();
    let (writer, collector, _) = start_split_with(
        &dir,
        &db,
        port,
        &[("MAX_BUFFERED_FLOWS", "4000".to_owned())],
    );
    let sent = 40_000; // 16 s of traffic: the outage (about 7 s) falls well inside
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
    let printed = |g: &Proc| g.stdout.lock().expect("lock").len();
    wait_until("the first flows stored", Duration::from_secs(30), || {
        db.count_flows() > 0
    });
    let stored_before = db.count_flows();
    let down = Instant::now();
    server.stop();
    thread::sleep(Duration::from_secs(4));
    server.start();
    let outage = down.elapsed();
    let sent_before_up = printed(&g);
    assert!(
        g.child.try_wait().expect("wait").is_none(),
        "the generator finished during the outage; traffic must flow through the restart"
    );
    // Recovered: everything sent before the server was back is stored (the writer retries
    // at most 5 s apart). Not asserted here: the comparison below says what is missing.
    let up = Instant::now();
    let recovery = loop {
        if db.count_flows() >= sent_before_up as i64 {
            break format!("{:.1?}", up.elapsed());
        }
        if up.elapsed() > Duration::from_secs(20) {
            break "more than 20 s (or never)".to_owned();
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (status, out) = g.wait(Duration::from_secs(60));
    assert!(status.success());
    let generated = parse_flows(&out);
    assert_eq!(generated.len(), sent);
    let mut last = -1;
    wait_until("the writer to settle", Duration::from_secs(60), || {
        thread::sleep(Duration::from_millis(1500));
        let n = db.count_flows();
        let settled = n == last;
        last = n;
        settled
    });
    let (spooled, dropped, db_errors) = (
        writer.last_stat("flows_spooled"),
        writer.last_stat("flows_dropped"),
        writer.last_stat("db_errors"),
    );
    let (queue_drops, socket_drops) = (
        collector.last_stat("queue_drops"),
        collector.last_stat("socket_drops"),
    );

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
    let got = stored_flows(&db);
    let stored: usize = got.values().sum();
    let (mut missing, mut extra) = (0, 0);
    let keys: BTreeSet<&FlowKey> = want.keys().chain(got.keys()).collect();
    for k in keys {
        let (w, g) = (
            want.get(k).copied().unwrap_or(0),
            got.get(k).copied().unwrap_or(0),
        );
        missing += w.saturating_sub(g);
        extra += g.saturating_sub(w);
    }
    eprintln!(
        "postgres restart: sent {sent} flows, stored {stored} (missing {missing}, duplicated \
         {extra}); {stored_before} stored before the stop, stop to ready again {outage:.1?}, \
         {sent_before_up} sent by then and stored {recovery} later; \
         writer: db_errors={db_errors} flows_spooled={spooled} flows_dropped={dropped}; \
         collector: queue_drops={queue_drops} socket_drops={socket_drops}"
    );
    assert_eq!(
        (missing, extra, stored),
        (0, 0, sent),
        "flows lost or stored twice across the PostgreSQL restart"
    );
    assert!(
        writer.log_has("store unreachable; keeping flows and retrying"),
        "the writer never saw the server down"
    );
    assert!(
        spooled > 0,
        "the outage was meant to push batches beyond MAX_BUFFERED_FLOWS into the spool"
    );
    assert_eq!(
        dropped + queue_drops + socket_drops,
        0,
        "drops were counted"
    );
    assert!(writer.stop().success());
    assert!(collector.stop().success());
}

/// Grafolean unreachable at start: the bot waits for it (backing off), and SIGTERM during that
/// wait ends it at once with exit 0, not after the next poll (or never, as before).
#[test]
fn bot_stops_at_once_while_waiting_for_grafolean() {
    let dir = TempDir::new("botwait");
    let db = PgDb::new("botwait");
    // A port nothing listens on: every readiness poll fails to connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut env = db.env();
    env.push(("BACKEND_URL", format!("http://127.0.0.1:{closed}/api")));
    env.push((
        "BOT_TOKEN",
        "00000000-0000-0000-0000-000000000000".to_owned(),
    ));
    let bot = Proc::start("netflow-bot", dir.path(), &env, &[]);
    bot.wait_for("waiting for the Grafolean backend", Duration::from_secs(30));
    // Let the backoff grow past a second or two.
    thread::sleep(Duration::from_secs(3));
    let asked = Instant::now();
    let status = bot.stop();
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
}

/// Grafolean answers 500 for a while: the POST is retried with backoff and the values arrive;
/// when it keeps failing, the window is not advanced and the next run covers it.
#[test]
fn grafolean_500s_are_retried_and_nothing_is_skipped() {
    let dir = TempDir::new("g500");
    let db = PgDb::new("g500");
    let port = free_udp_port();
    let (writer, collector, _) = start_split(&dir, &db, port);
    let generate = Proc::start(
        "netflow-generate",
        dir.path(),
        &[],
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--count",
            "900",
            "--rate",
            "20000",
            "--print",
            "--seed",
            "5",
        ],
    );
    let (status, out) = generate.wait(Duration::from_secs(60));
    assert!(status.success());
    let flows = parse_flows(&out);
    wait_until("flows stored", Duration::from_secs(60), || {
        db.count_flows() == 900
    });

    let server = TestServer::start().expect("server");
    let account = server.add_account("a");
    let (_b, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    let eid = server.add_netflow_entity(account, "r", "127.0.0.1", cred, sensor, None);
    let entities = [(eid.0, "127.0.0.1".parse().expect("ip"))];
    // The bot in-process, so that the faults hit exactly its values POSTs.
    let client = Client::with_config(
        &server.url(),
        Token::new(&token).expect("token"),
        // the client alone retries a values POST after a 500 (all or nothing on the backend)
        ClientConfig::default()
            .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .with_retries(3, 4),
    )
    .expect("client");
    let store = netflow_store::open(
        &netflow_store::StoreConfig::postgres("127.0.0.1", &db.name, "postgres", None)
            .expect("cfg"),
    )
    .expect("store");
    let cfg = BotConfig {
        once: true,
        ..BotConfig::default()
    };
    let mut bot = Bot::new(client, store, cfg, Arc::new(Counters::default()));
    bot.refresh_jobs().expect("jobs");

    // Always failing: every job fails, no window end is recorded.
    server.fail_next(1_000_000);
    assert!(
        bot.run_all_once().is_err(),
        "posts failed, the bot must say so"
    );
    server.fail_next(0);
    assert!(received(&server, "1min").is_empty());

    // A few 500s: retried, then accepted; the values cover every flow (nothing skipped).
    server.fail_next(4);
    bot.run_all_once().expect("values accepted after retries");
    assert_eq!(
        received(&server, "1min"),
        expected(&flows, "1min", &entities)
    );
    assert_eq!(received(&server, "24h"), expected(&flows, "24h", &entities));
    assert!(writer.stop().success());
    assert!(collector.stop().success());
}

/// A window's values go out in several requests; the backend fails for good after the first
/// was accepted. The accepted request is not sent again: the next run sends only the rest of
/// that window, then records its end. Every path arrives exactly once.
#[test]
fn values_post_failing_part_way_is_resumed_not_resent() {
    let dir = TempDir::new("partial");
    let cfg = netflow_store::StoreConfig::new(netflow_store::Backend::Sqlite(
        dir.path().join("flows.db"),
    ));
    let mut store = netflow_store::open(&cfg).expect("store");
    store.write_flows(&window_flows()).expect("write");

    let server = TestServer::start().expect("server");
    let account = server.add_account("a");
    let (_b, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    let eid = server.add_netflow_entity(account, "r", "127.0.0.1", cred, sensor, None);
    let per_request = 10;
    let client = Client::with_config(
        &server.url(),
        Token::new(&token).expect("token"),
        ClientConfig::default()
            .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .with_max_values_per_request(per_request),
    )
    .expect("client");
    let cfg = BotConfig {
        once: true,
        ..BotConfig::default()
    };
    let jobs = client.job_config().expect("jobs");
    let acc = jobs.accounts.first().expect("account").clone();
    let mut bot = Bot::new(
        client,
        netflow_store::open(&cfg_store(&dir)).expect("store"),
        cfg,
        Arc::new(Counters::default()),
    );

    // Every request waits 300 ms; as soon as the first one is stored, the backend fails.
    server.hang_next(1_000_000, Duration::from_millis(300));
    let failing = thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while server.values().len() < per_request && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
            server.fail_next(1_000_000);
        });
        bot.run_job(&acc, netflow_apps::bot::Interval::M1)
    });
    assert!(
        failing.is_err(),
        "the POST failed part way; the job must say so"
    );
    assert_eq!(
        server.values().len(),
        per_request,
        "only the first request stored"
    );
    server.fail_next(0);
    server.hang_next(0, Duration::ZERO);

    let out = bot
        .run_job(&acc, netflow_apps::bot::Interval::M1)
        .expect("the rest is sent");
    let netflow_apps::bot::JobOutcome::Sent { values, .. } = out else {
        panic!("{out:?}");
    };
    let got = server.values();
    assert_eq!(got.len(), per_request + values);
    let mut paths: Vec<&str> = got.iter().map(|v| v.path.as_str()).collect();
    let n = paths.len();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), n, "a path was sent twice");
    assert!(
        n > 3 * per_request,
        "the window needs several requests ({n} values)"
    );
    let total = format!("netflow.1min.ingress.entity.{}", eid.0);
    assert!(paths.contains(&total.as_str()));
    // The window end is recorded: a third run covers no flow (it sends the zero totals).
    let third = bot
        .run_job(&acc, netflow_apps::bot::Interval::M1)
        .expect("third run");
    assert!(
        matches!(third, netflow_apps::bot::JobOutcome::Sent { flows: 0, .. }),
        "{third:?}"
    );
}

/// 200 flows of one exporter, 127.0.0.1, whose 1-minute window needs many values.
fn window_flows() -> Vec<netflow_store::Flow> {
    (0..200u32)
        .map(|i| netflow_store::Flow {
            ts_micros: 1_700_000_000_000_000 + i64::from(i),
            exporter: "127.0.0.1".parse().expect("ip"),
            input_if: i % 3 + 1,
            output_if: 9,
            protocol: [6, 17, 1][i as usize % 3],
            src_addr: std::net::IpAddr::from([10, 0, (i / 50) as u8, i as u8]),
            dst_addr: std::net::IpAddr::from([192, 0, 2, (i % 40) as u8]),
            src_port: 40_000,
            dst_port: [443, 80, 53, 22, 25, 123][i as usize % 6],
            bytes: u64::from(i) * 7 + 1,
            packets: 1,
            ..netflow_store::Flow::default()
        })
        .collect()
}

/// Issue 13: a values POST that the backend stored but answered after the client's values
/// timeout must not be sent again (Grafolean stamps each POST with its arrival time, so a
/// second POST is a second data point). The bot used to retry it up to three times.
#[test]
fn values_post_stored_but_answered_too_late_is_not_sent_again() {
    let dir = TempDir::new("late-answer");
    netflow_store::open(&cfg_store(&dir))
        .expect("store")
        .write_flows(&window_flows())
        .expect("write");
    let server = TestServer::start().expect("server");
    let account = server.add_account("a");
    let (_b, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    server.add_netflow_entity(account, "r", "127.0.0.1", cred, sensor, None);
    let mut ccfg = ClientConfig::default()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .with_max_values_per_request(50);
    ccfg.values_timeout = Duration::from_millis(300);
    let client = Client::with_config(&server.url(), Token::new(&token).expect("token"), ccfg)
        .expect("client");
    let jobs = client.job_config().expect("jobs");
    let acc = jobs.accounts.first().expect("account").clone();
    let counters = Arc::new(Counters::default());
    let mut bot = Bot::new(
        client,
        netflow_store::open(&cfg_store(&dir)).expect("store"),
        BotConfig {
            once: true,
            ..BotConfig::default()
        },
        counters.clone(),
    );

    // Every request is stored at once and answered after 1 s, past the 300 ms timeout.
    server.answer_late_next(1_000_000, Duration::from_secs(1));
    let out = bot.run_job(&acc, netflow_apps::bot::Interval::M1);
    server.answer_late_next(0, Duration::ZERO);
    let got = server.values();
    let mut paths: Vec<&str> = got.iter().map(|v| v.path.as_str()).collect();
    let n = paths.len();
    assert!(n > 50, "the window needs several requests ({n} values)");
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(
        paths.len(),
        n,
        "a value was stored twice: the POST was sent again"
    );
    let out = out.expect("the job goes on: an unknown outcome is not a failure to retry");
    assert!(
        matches!(out, netflow_apps::bot::JobOutcome::Sent { values: 0, .. }),
        "no POST was acknowledged: {out:?}"
    );
    let unknown = counters.values_outcome_unknown.load(Ordering::Relaxed);
    assert_eq!(
        unknown as usize, n,
        "every value's outcome is counted as unknown"
    );
    assert!(counters.posts_outcome_unknown.load(Ordering::Relaxed) >= 2);
    // The window end was recorded: the next run covers no flow.
    let next = bot
        .run_job(&acc, netflow_apps::bot::Interval::M1)
        .expect("next run");
    assert!(
        matches!(next, netflow_apps::bot::JobOutcome::Sent { flows: 0, .. }),
        "{next:?}"
    );
}

fn cfg_store(dir: &TempDir) -> netflow_store::StoreConfig {
    netflow_store::StoreConfig::new(netflow_store::Backend::Sqlite(dir.path().join("flows.db")))
}
