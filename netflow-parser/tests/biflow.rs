//! Biflows (RFC 5103) from a real exporter: softflowd (Debian package `softflowd`) replays
//! input-traffic.pcap with `-b`, one IPFIX record per conversation whose reverse direction's
//! counters are enterprise 29305 reverse IEs (reverse octets, packets, TOS and TCP flags).
//! Both halves must become flows: the totals equal the traffic every exporter agrees on
//! (captures/README.md), and the flows equal those of softflowd's own uniflow export of the
//! same traffic.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use netflow_wire::sequence::SequenceTracker;
use netflow_wire::{Decoder, Flow, Limits};

/// What input-traffic.pcap carried (captures/README.md): (bytes, packets) for IPv4 and IPv6.
const TRUE_V4: (u64, u64) = (3_315_918, 8_724);
const TRUE_V6: (u64, u64) = (1_906_811, 5_005);

/// Runs softflowd on input-traffic.pcap as IPFIX (`-b`: biflows) into a local socket; returns
/// the datagrams.
fn export(biflow: bool) -> Vec<Vec<u8>> {
    let sf = std::path::Path::new("/usr/sbin/softflowd");
    assert!(
        sf.exists(),
        "softflowd is missing: apt-get install -y softflowd (Debian package softflowd)"
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    // 50-66 datagrams of up to 1.5 kB arrive in a burst: room for all of them.
    let port = sock.local_addr().unwrap().port();
    let mut cmd = Command::new(sf);
    cmd.args(["-a", "-d"]);
    if biflow {
        cmd.arg("-b");
    }
    let status = cmd
        .arg("-r")
        .arg(common::captures_dir().join("input-traffic.pcap"))
        .args(["-v", "10", "-n", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run softflowd");
    assert!(status.success(), "softflowd (biflow {biflow}) failed");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    assert!(!out.is_empty(), "softflowd (biflow {biflow}) sent nothing");
    out
}

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every flow of an export, in order, read by `next` and by `for_each` (which must agree);
/// and the sequence tracker that saw the datagrams.
fn decode(datagrams: &[Vec<u8>]) -> (Vec<Flow>, SequenceTracker, u64) {
    let mut decoder = Decoder::new(Limits::default());
    let mut seq = SequenceTracker::default();
    let mut flows = Vec::new();
    let mut records = 0u64;
    for d in datagrams {
        let decoded = decoder.decode(EXPORTER, 0, d).unwrap();
        assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
        assert_eq!(decoded.waiting_count(), 0);
        records += u64::from(decoded.data_records());
        flows.extend(common::flows_checked(&decoded));
        seq.observe_decoded(&decoded);
    }
    (flows, seq, records)
}

fn totals(flows: &[Flow]) -> BTreeMap<&'static str, (u64, u64)> {
    let mut t = BTreeMap::new();
    for f in flows {
        let v = if f.src_addr.is_ipv4() { "v4" } else { "v6" };
        let e = t.entry(v).or_insert((0, 0));
        e.0 += f.renormalized().bytes;
        e.1 += f.renormalized().packets;
    }
    t
}

#[test]
fn softflowd_biflow_totals_equal_the_traffic() {
    let (flows, seq, records) = decode(&export(true));
    let t = totals(&flows);
    assert_eq!(
        (t.get("v4").copied(), t.get("v6").copied()),
        (Some(TRUE_V4), Some(TRUE_V6)),
        "{} flows from {records} biflow records",
        flows.len()
    );
    // 1057 conversations; 597 with traffic both ways, 310 forward only, 150 reverse only: a
    // half without traffic is not a flow.
    assert_eq!(records, 1057);
    assert_eq!(flows.len(), 1654);
    assert!(flows.iter().all(|f| f.bytes > 0 && f.packets > 0));
    // The sequence number counts records (a biflow record once), not flows: nothing lost.
    let stats: Vec<_> = seq.iter().map(|(_, s)| *s).collect();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].lost, stats[0].late, stats[0].resets),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// The flow without what differs between two runs of the exporter (receive time, times that
/// depend on the wall clock at export): what a flow says about the traffic.
fn traffic(f: &Flow) -> String {
    format!(
        "{} {}:{} -> {}:{} p{} if {}->{} dir {} {}B {}P flags {:#x} dur {}",
        f.exporter,
        f.src_addr,
        f.src_port,
        f.dst_addr,
        f.dst_port,
        f.protocol,
        f.input_if,
        f.output_if,
        f.direction,
        f.bytes,
        f.packets,
        f.tcp_flags,
        f.end_ms.saturating_sub(f.start_ms)
    )
}

#[test]
fn softflowd_biflow_flows_equal_its_uniflow_export() {
    let (bi, _, _) = decode(&export(true));
    let (uni, _, _) = decode(&export(false));
    let sorted = |flows: &[Flow]| {
        let mut v: Vec<String> = flows.iter().map(traffic).collect();
        v.sort();
        v
    };
    let (bi, uni) = (sorted(&bi), sorted(&uni));
    assert_eq!(uni.len(), 1654);
    let only_bi: Vec<_> = bi.iter().filter(|f| !uni.contains(f)).take(5).collect();
    let only_uni: Vec<_> = uni.iter().filter(|f| !bi.contains(f)).take(5).collect();
    assert!(
        bi == uni,
        "{} biflow-mode flows vs {} uniflow; only in biflow mode: {only_bi:#?}, only in uniflow mode: {only_uni:#?}",
        bi.len(),
        uni.len()
    );
}
