//! Benchmark packets, built with netflow-wire's encoder from deterministic pseudo-random flows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netflow_wire::emit::{self, Message};
use netflow_wire::{FieldId, FieldSpec, Flow, Header};

/// Records per data packet, as in the issue: 30 (the v5 maximum).
pub const RECORDS: usize = 30;

/// A typical Cisco IOS IPv4 v9 template (19 fields, 50-byte records).
pub fn ipv4_template() -> Vec<FieldSpec> {
    use FieldId as F;
    [
        (F::IN_BYTES, 4),
        (F::IN_PKTS, 4),
        (F::PROTOCOL, 1),
        (F::SRC_TOS, 1),
        (F::TCP_FLAGS, 1),
        (F::L4_SRC_PORT, 2),
        (F::IPV4_SRC_ADDR, 4),
        (F::SRC_MASK, 1),
        (F::INPUT_SNMP, 2),
        (F::L4_DST_PORT, 2),
        (F::IPV4_DST_ADDR, 4),
        (F::DST_MASK, 1),
        (F::OUTPUT_SNMP, 2),
        (F::IPV4_NEXT_HOP, 4),
        (F::SRC_AS, 2),
        (F::DST_AS, 2),
        (F::LAST_SWITCHED, 4),
        (F::FIRST_SWITCHED, 4),
        (F::DIRECTION, 1),
    ]
    .into_iter()
    .map(|(id, len)| FieldSpec::new(id, len))
    .collect()
}

/// The IPv6 counterpart (16-byte addresses and next hop, 4-byte interfaces; 83-byte records).
pub fn ipv6_template() -> Vec<FieldSpec> {
    use FieldId as F;
    [
        (F::IN_BYTES, 4),
        (F::IN_PKTS, 4),
        (F::PROTOCOL, 1),
        (F::SRC_TOS, 1),
        (F::TCP_FLAGS, 1),
        (F::L4_SRC_PORT, 2),
        (F::IPV6_SRC_ADDR, 16),
        (F::IPV6_SRC_MASK, 1),
        (F::INPUT_SNMP, 4),
        (F::L4_DST_PORT, 2),
        (F::IPV6_DST_ADDR, 16),
        (F::IPV6_DST_MASK, 1),
        (F::OUTPUT_SNMP, 4),
        (F::IPV6_NEXT_HOP, 16),
        (F::LAST_SWITCHED, 4),
        (F::FIRST_SWITCHED, 4),
        (F::DIRECTION, 1),
    ]
    .into_iter()
    .map(|(id, len)| FieldSpec::new(id, len))
    .collect()
}

/// Deterministic flows (a small LCG, no dependency on a random crate).
pub fn flows(n: usize, v6: bool, seed: u64) -> Vec<Flow> {
    let mut s = seed | 1;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    (0..n)
        .map(|_| {
            let (a, b) = (next() as u32, next() as u32);
            let (src, dst) = if v6 {
                let p = 0x2001_0db8u128 << 96;
                (
                    IpAddr::V6(Ipv6Addr::from(p | u128::from(a))),
                    IpAddr::V6(Ipv6Addr::from(p | u128::from(b) << 8)),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | a >> 8)),
                    IpAddr::V4(Ipv4Addr::from(0xc000_0200 | (b & 0xff))),
                )
            };
            let packets = 1 + next() % 100;
            Flow {
                src_addr: src,
                dst_addr: dst,
                src_port: next() as u16,
                dst_port: [80, 443, 53, 22][(next() % 4) as usize],
                protocol: [6, 17, 6, 1][(next() % 4) as usize],
                bytes: packets * (40 + next() % 1400),
                packets,
                input_if: 1 + (next() % 8) as u32,
                output_if: 1 + (next() % 8) as u32,
                tcp_flags: (next() % 64) as u8,
                direction: (next() % 2) as u8,
                start_ms: 1_700_000_000_000 - 30_000,
                end_ms: 1_700_000_000_000 - 1_000,
                ..Flow::default()
            }
        })
        .collect()
}

fn header(version: u16) -> Header {
    Header {
        version,
        sys_uptime_ms: Some(3_600_000),
        export_secs: 1_700_000_000,
        sequence: 1,
        ..Header::default()
    }
}

/// A v5 packet of 30 records.
pub fn v5_packet() -> Vec<u8> {
    let mut out = Vec::new();
    let fl: Vec<Flow> = flows(RECORDS, false, 5)
        .into_iter()
        .map(|f| Flow { direction: 0, ..f })
        .collect();
    if emit::v5(&mut out, &header(5), &fl).is_err() {
        unreachable!("30 IPv4 flows fit a v5 packet");
    }
    out
}

/// (template packet, data packet of 30 records) for v9 (9) or IPFIX (10), IPv4 or IPv6.
pub fn templated_packets(version: u16, v6: bool) -> (Vec<u8>, Vec<u8>) {
    let fields = if v6 { ipv6_template() } else { ipv4_template() };
    let h = header(version);
    let mut tpl = Vec::new();
    let mut m = Message::new(&mut tpl, &h);
    m.set(if version == 9 { 0 } else { 2 })
        .template(256, &fields);
    let _ = m.finish();
    let mut data = Vec::new();
    let mut m = Message::new(&mut data, &h);
    m.set(256);
    for f in flows(RECORDS, v6, u64::from(version) * 2 + u64::from(v6)) {
        m.flow(&fields, &f, &h);
    }
    let _ = m.finish();
    (tpl, data)
}
