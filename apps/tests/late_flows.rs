//! Late flows end to end: UDP -> collector -> named pipe -> writer -> PostgreSQL -> bot ->
//! stand-in Grafolean. A v9 data set arrives before its template; the bot sends the windows
//! of every interval without it; the template comes, the writer releases the set with its
//! original receive time (before those windows' ends); the bot's next run must fold exactly
//! those flows into each interval's next values, once, and the writer must count them.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use common::*;
use grafolean_client::test_server::{BotKind, TestServer};
use netflow_wire::emit::Message;
use netflow_wire::{FieldId, Flow, Header, template::FieldSpec};

const LABELS: [&str; 5] = ["1min", "15min", "1h", "4h", "24h"];

fn fields() -> [FieldSpec; 10] {
    [
        FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4),
        FieldSpec::new(FieldId::IPV4_DST_ADDR, 4),
        FieldSpec::new(FieldId::IN_BYTES, 4),
        FieldSpec::new(FieldId::IN_PKTS, 4),
        FieldSpec::new(FieldId::PROTOCOL, 1),
        FieldSpec::new(FieldId::L4_SRC_PORT, 2),
        FieldSpec::new(FieldId::L4_DST_PORT, 2),
        FieldSpec::new(FieldId::INPUT_SNMP, 2),
        FieldSpec::new(FieldId::OUTPUT_SNMP, 2),
        FieldSpec::new(FieldId::DIRECTION, 1),
    ]
}

/// `n` varied flows (both directions, several interfaces, protocols and ports), seeded.
fn flows(n: u32, seed: u32) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let k = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
            Flow {
                src_addr: IpAddr::from([10, 0, (k % 3) as u8, (k % 7) as u8 + 1]),
                dst_addr: IpAddr::from([192, 0, 2, (k % 5) as u8 + 1]),
                bytes: u64::from(100 + k % 1000),
                packets: 1 + u64::from(k % 4),
                protocol: [6, 17, 1][(k % 3) as usize],
                src_port: 1024 + (k % 100) as u16,
                dst_port: [443, 53, 80, 22][(k % 4) as usize],
                input_if: 1 + k % 3,
                output_if: 4 + k % 2,
                direction: u8::from(k % 4 == 0),
                ..Flow::default()
            }
        })
        .collect()
}

fn as_json(fs: &[Flow]) -> Vec<JFlow> {
    fs.iter()
        .map(|f| JFlow {
            exporter: "127.0.0.1".parse().expect("ip"),
            src: f.src_addr,
            dst: f.dst_addr,
            dst_port: f.dst_port,
            protocol: f.protocol,
            bytes: f.bytes,
            input_if: f.input_if,
            output_if: f.output_if,
            direction: f.direction,
        })
        .collect()
}

/// One v9 datagram: optionally the template of `id`, then optionally a data set of `id`.
fn packet(seq: u32, id: u16, template: bool, data: &[Flow]) -> Vec<u8> {
    let header = Header {
        version: 9,
        sys_uptime_ms: Some(10_000),
        export_secs: 1_700_000_000,
        sequence: seq,
        source_id: 7,
        ..Header::default()
    };
    let fields = fields();
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &header);
    if template {
        m.set(0).template(id, &fields);
    }
    if !data.is_empty() {
        m.set(id);
        for f in data {
            m.flow(&fields, f, &header);
        }
    }
    m.finish().expect("v9 message");
    buf
}

fn run_bot(dir: &TempDir, env: &[(&str, String)]) {
    let (status, _) =
        Proc::start("netflow-bot", dir.path(), env, &["--once"]).wait(Duration::from_secs(120));
    assert!(status.success(), "bot --once failed");
}

/// The values of `label` the server received from the `from`-th value on.
fn received_since(
    server: &TestServer,
    from: usize,
    label: &str,
) -> std::collections::BTreeMap<String, f64> {
    let prefix = format!("netflow.{label}.");
    server
        .values()
        .into_iter()
        .skip(from)
        .filter(|v| v.path.starts_with(&prefix))
        .map(|v| (v.path, v.value))
        .collect()
}

#[test]
fn late_flows_reach_grafolean_once_in_the_next_windows() {
    let dir = TempDir::new("late");
    let db = PgDb::new("late");
    let port = free_udp_port();
    let (writer, collector, _) = start_split(&dir, &db, port);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let target = format!("127.0.0.1:{port}");

    let late = flows(40, 1);
    let first = flows(60, 2);
    let second = flows(50, 3);
    // The late data set: template 300 is not known yet, so the writer keeps it pending.
    sock.send_to(&packet(1, 300, false, &late), &target)
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    sock.send_to(&packet(2, 256, true, &first), &target)
        .expect("send");
    wait_until("first flows stored", Duration::from_secs(60), || {
        db.count_flows() == first.len() as i64
    });

    let server = TestServer::start().expect("stand-in Grafolean");
    let account = server.add_account("NetFlow test account");
    let (_bot, token) = server.add_bot(BotKind::Systemwide);
    let cred = server.add_credential(account, "c");
    let sensor = server.add_sensor(account, "s", None);
    let eid = server.add_netflow_entity(account, "router", "127.0.0.1", cred, sensor, None);
    let entities = [(eid.0, "127.0.0.1".parse::<IpAddr>().expect("ip"))];
    let mut benv = db.env();
    benv.push(("BACKEND_URL", server.url()));
    benv.push(("BOT_TOKEN", token));

    // Every interval's first window: the on-time flows only.
    run_bot(&dir, &benv);
    for label in LABELS {
        let got = received_since(&server, 0, label);
        assert_eq!(got, expected(&as_json(&first), label, &entities), "{label}");
    }

    // The template arrives: the pending set is released with its receive time, which lies
    // before the windows just sent; then more on-time flows.
    let sent = server.values().len();
    sock.send_to(&packet(3, 300, true, &[]), &target)
        .expect("send");
    sock.send_to(&packet(4, 256, false, &second), &target)
        .expect("send");
    let all = (first.len() + late.len() + second.len()) as i64;
    wait_until(
        "late and second flows stored",
        Duration::from_secs(60),
        || db.count_flows() == all,
    );
    wait_until(
        "the writer counted the late flows",
        Duration::from_secs(30),
        || writer.last_stat("flows_late") == late.len() as u64,
    );
    let late_ts: Vec<i64> = db
        .client()
        .query(
            "SELECT (extract(epoch FROM ts) * 1e6)::bigint FROM netflow_late_flows",
            &[],
        )
        .expect("late_flows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(late_ts.len(), late.len(), "the late flows are logged");

    // Every interval's next values hold the late flows and the second ones, exactly.
    run_bot(&dir, &benv);
    let mut next: Vec<JFlow> = as_json(&second);
    next.extend(as_json(&late));
    for label in LABELS {
        let got = received_since(&server, sent, label);
        assert_eq!(got, expected(&next, label, &entities), "{label}");
    }
    // Every job folded them in: the log is emptied.
    let left: i64 = db
        .client()
        .query_one("SELECT count(*) FROM netflow_late_flows", &[])
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "consumed late flows are forgotten");

    // And only once: the run after that sends zero totals.
    let sent = server.values().len();
    run_bot(&dir, &benv);
    let again: Vec<_> = server.values().into_iter().skip(sent).collect();
    assert!(!again.is_empty());
    assert!(
        again.iter().all(|v| v.value == 0.0),
        "late flows sent twice: {again:?}"
    );

    assert!(collector.stop().success(), "collector exit status");
    assert!(writer.stop().success(), "writer exit status");
}
