//! Biflows (RFC 5103) from a real exporter: softflowd (Debian package `softflowd`) replays
//! input-traffic.pcap with `-b`, one IPFIX record per conversation whose reverse direction's
//! counters are enterprise 29305 reverse IEs (reverse octets, packets, TOS and TCP flags).
//! Both halves must become flows: the totals equal the traffic every exporter agrees on
//! (captures/README.md), and the flows equal those of softflowd's own uniflow export of the
//! same traffic.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use netflow_wire::sequence::SequenceTracker;
use netflow_wire::{Decoder, Flow, Limits};

/// What input-traffic.pcap carried (captures/README.md): (bytes, packets) for IPv4 and IPv6.
const TRUE_V4: (u64, u64) = (3_315_918, 8_724);
const TRUE_V6: (u64, u64) = (1_906_811, 5_005);

/// softflowd's IPFIX export of the traffic, biflows (`-b`) or not.
fn export(biflow: bool) -> Vec<Vec<u8>> {
    let args: &[&str] = if biflow {
        &["-v", "10", "-b"]
    } else {
        &["-v", "10"]
    };
    common::softflowd(args)
        .into_iter()
        .map(|d| d.payload)
        .collect()
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
