//! ClickHouse backend specifics, on the tests' own server (netflow-store's test-support):
//! the RowBinary encoding as the server reads it, exactly-once batches when replies are lost
//! (a proxy that swallows one reply after the server executed the request) and when the
//! server is killed mid-run.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ClickHouseDb, HOUR, T0, as_stored, flow, ip, read_all, sorted};
use netflow_store::test_support::clickhouse::ClickHouseServer;
use netflow_store::{Backend, ClickHouseConfig, Flow, Store, StoreConfig, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(b.into())),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(b.into())),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
    ]
}

fn arb_flow() -> impl Strategy<Value = Flow> {
    (
        (
            -62_135_596_800_000_000..253_402_300_800_000_000i64,
            arb_ip(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u8>(),
        ),
        (
            arb_ip(),
            arb_ip(),
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (ts_micros, exporter, input_if, output_if, direction, protocol),
                (src_addr, dst_addr, src_port, dst_port, bytes, packets, tcp_flags),
            )| Flow {
                ts_micros,
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

/// How the server prints an address it holds as `FixedString(16)` (`IPv6NumToString`).
fn server_text(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => format!("::ffff:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("::ffff:{v4}"),
            None => v6.to_string(),
        },
    }
}

/// The server's own reading of the rows the store encoded: every column printed by the server
/// as text, compared with what the flow says.
#[test]
fn rowbinary_as_the_server_reads_it() {
    let server = ClickHouseServer::shared();
    let db = ClickHouseDb::on(&server);
    let mut store = netflow_store::open(&db.config).unwrap();
    let cell = std::cell::RefCell::new(&mut store);
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let round = std::cell::Cell::new(0u64);
    runner
        .run(&proptest::collection::vec(arb_flow(), 1..60), |flows| {
            round.set(round.get() + 1);
            // a port of its own marks this case's rows
            let flows: Vec<Flow> = flows
                .into_iter()
                .enumerate()
                .map(|(i, f)| Flow {
                    src_port: i as u16,
                    ..f
                })
                .collect();
            cell.borrow_mut()
                .write_flows(&flows)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let text = server
                .query(&format!(
                    "SELECT src_port, ts, IPv6NumToString(exporter), input_if, output_if, \
                     direction, protocol, IPv6NumToString(src_addr), IPv6NumToString(dst_addr), \
                     dst_port, bytes, packets, tcp_flags FROM {}.netflow_flows \
                     WHERE seq = (SELECT max(seq) FROM {}.netflow_batches) \
                     ORDER BY src_port FORMAT TabSeparated",
                    db.db.name, db.db.name
                ))
                .map_err(TestCaseError::fail)?;
            let want: String = flows
                .iter()
                .map(|f| {
                    let s = as_stored(f);
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        s.src_port,
                        s.ts_micros,
                        server_text(s.exporter),
                        s.input_if,
                        s.output_if,
                        s.direction,
                        s.protocol,
                        server_text(s.src_addr),
                        server_text(s.dst_addr),
                        s.dst_port,
                        s.bytes,
                        s.packets,
                        s.tcp_flags
                    )
                })
                .collect();
            prop_assert_eq!(text, want);
            Ok(())
        })
        .unwrap();
}

/// A TCP proxy in front of the server that makes every request a connection of its own and
/// can swallow the reply of connection number `cut` (the server has executed the request).
struct CuttingProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn new(upstream: u16) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(usize::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, s) = (accepted.clone(), cut.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let n = a.fetch_add(1, Ordering::SeqCst);
                let swallow = c.load(Ordering::SeqCst) == n;
                std::thread::spawn(move || relay(client, upstream, swallow));
            }
        });
        CuttingProxy {
            port,
            accepted,
            cut,
            stop,
        }
    }

    /// Swallows the reply of the `k`-th request from now.
    fn cut_in(&self, k: usize) {
        self.cut
            .store(self.accepted.load(Ordering::SeqCst) + k, Ordering::SeqCst);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// One request: its head gets `Connection: close` (so the server ends the reply by closing),
/// then bytes flow both ways; with `swallow`, the reply is read and dropped and the client's
/// connection closed.
fn relay(mut client: TcpStream, upstream: u16, swallow: bool) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    // request line, then our header
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if client.read(&mut b).unwrap_or(0) == 0 {
            return;
        }
        line.push(b[0]);
    }
    line.extend_from_slice(b"Connection: close\r\n");
    if server.write_all(&line).is_err() {
        return;
    }
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    if swallow {
        let _ = std::io::copy(&mut server, &mut std::io::sink());
        let _ = client.shutdown(std::net::Shutdown::Both);
    } else {
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(std::net::Shutdown::Both);
    }
    let _ = up.join();
}

fn store_via(port: u16, database: &str) -> Box<dyn Store> {
    let c =
        ClickHouseConfig::new(&format!("http://127.0.0.1:{port}"), database, None, None).unwrap();
    netflow_store::open(&StoreConfig::new(Backend::ClickHouse(c))).unwrap()
}

/// Writes `batch` as the writer does: again after every retryable error, until it lands.
fn write_until_done(s: &mut dyn Store, batch: &[Flow]) -> (u64, u32) {
    for attempt in 0..50 {
        match s.write_flows(batch) {
            Ok(w) => return (w.late, attempt),
            Err(e) if e.is_retryable() => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("not retryable: {e}"),
        }
    }
    panic!("batch not written in 50 attempts");
}

/// Every request of a batch write (the insert of each hour's rows, the commit record) in turn
/// has its reply lost after the server executed it: the retry (which waits for the batch's
/// inserts to finish, looks for the commit record, counts each hour's rows) stores the batch
/// exactly once, with the same late count.
#[test]
fn lost_reply_at_every_step_stores_once() {
    let server = ClickHouseServer::shared();
    let proxy = CuttingProxy::new(server.instance().http);
    let mut k = 0;
    loop {
        let db = ClickHouseDb::on(&server);
        let mut s = store_via(proxy.port, &db.db.name);
        let h = T0 - T0.rem_euclid(HOUR) + 3 * HOUR; // an hour boundary
        let first: Vec<Flow> = (0..50).map(|i| flow(h + i, "192.0.2.1")).collect();
        s.write_flows(&first).unwrap();
        // spans two partitions; 75 of its flows are at or before the max ts (late)
        let batch: Vec<Flow> = (0..100).map(|i| flow(h - 25 + i, "192.0.2.1")).collect();
        proxy.cut_in(k);
        let (late, attempts) = write_until_done(&mut *s, &batch);
        proxy.cut_in(usize::MAX / 2);
        assert_eq!(late, 75, "cut at request {k}");
        let mut want: Vec<Flow> = first.clone();
        want.extend(&batch);
        assert_eq!(
            read_all(&mut *s, &[ip("192.0.2.1")]),
            sorted(want),
            "cut at request {k}"
        );
        // a fresh store (no memory of the doubt) agrees
        let mut fresh = store_via(server.instance().http, &db.db.name);
        assert_eq!(read_all(&mut *fresh, &[ip("192.0.2.1")]).len(), 150);
        if attempts == 0 {
            // the cut fell after the last request of the batch: every step was covered
            assert!(k >= 2, "a batch write takes at least 3 requests (cut {k})");
            break;
        }
        k += 1;
    }
}

/// The server is killed (SIGKILL) twice and started again while a writer streams 40 batches of
/// 4,000 flows: every flow is stored exactly once.
#[test]
fn server_killed_mid_run_every_flow_once() {
    let server = ClickHouseServer::private();
    let db = netflow_store::test_support::clickhouse::TestDatabase::new(&server, "kill");
    let c = ClickHouseConfig::new(&server.url(), &db.name, None, None).unwrap();
    let config = StoreConfig::new(Backend::ClickHouse(c));
    let mut s = netflow_store::open(&config).unwrap();
    let batches = 40;
    let per = 4_000;
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let writer = std::thread::spawn(move || {
        let mut retries = 0;
        for b in 0..batches {
            let batch: Vec<Flow> = (0..per)
                .map(|i| Flow {
                    src_port: (i % 60_000) as u16,
                    ..flow(T0 + (b * per + i) as i64 * 1_000, "192.0.2.1")
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match s.write_flows(&batch) {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && Instant::now() < deadline => {
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("batch {b}: {e}"),
                }
            }
            d.fetch_add(1, Ordering::SeqCst);
        }
        (s, retries)
    });
    for at in [8, 24] {
        while done.load(Ordering::SeqCst) < at {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.stop();
        std::thread::sleep(Duration::from_millis(300));
        server.start();
    }
    let (mut s, retries) = writer.join().unwrap();
    assert!(retries > 0, "the kills were not noticed");
    let got = read_all(&mut *s, &[ip("192.0.2.1")]);
    assert_eq!(got.len(), batches * per);
    let mut ts: Vec<i64> = got.iter().map(|f| f.ts_micros).collect();
    ts.dedup();
    assert_eq!(ts.len(), batches * per, "a flow stored twice");
    assert_eq!(
        s.max_ts().unwrap(),
        Some(T0 + (batches * per - 1) as i64 * 1_000)
    );
}

/// Settings errors are one line naming the setting; an unreachable server is retryable.
#[test]
fn unreachable_server_is_retryable() {
    let c = ClickHouseConfig::new("http://127.0.0.1:9", "netflow", None, None).unwrap();
    let err = netflow_store::open(&StoreConfig::new(Backend::ClickHouse(c))).unwrap_err();
    assert!(matches!(err, StoreError::ClickHouseUnreachable(_)), "{err}");
    assert!(err.is_retryable());
}
