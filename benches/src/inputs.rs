//! Benchmark packets, built with netflow-wire's encoder from deterministic pseudo-random flows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netflow_wire::emit::{self, Message};
use netflow_wire::{FieldId, Flow, Header, template::FieldSpec};

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

/// Distinct data datagrams per case of the realistic workload, cycled as a collector sees them.
pub const DISTINCT: usize = 16;

/// IPFIX IPv6 records per datagram (18 of 66 bytes fit a 1,400-byte datagram with room).
pub const IPV6_RECORDS: usize = 18;

/// The 14-field template of the realistic workload (issue 11): what most v9 exporters send.
pub fn realistic_v9_template() -> Vec<FieldSpec> {
    use FieldId as F;
    [
        (F::IPV4_SRC_ADDR, 4),
        (F::IPV4_DST_ADDR, 4),
        (F::IN_BYTES, 4),
        (F::IN_PKTS, 4),
        (F::FIRST_SWITCHED, 4),
        (F::LAST_SWITCHED, 4),
        (F::L4_SRC_PORT, 2),
        (F::L4_DST_PORT, 2),
        (F::TCP_FLAGS, 1),
        (F::PROTOCOL, 1),
        (F::SRC_TOS, 1),
        (F::INPUT_SNMP, 2),
        (F::OUTPUT_SNMP, 2),
        (F::DIRECTION, 1),
    ]
    .into_iter()
    .map(|(id, len)| FieldSpec::new(id, len))
    .collect()
}

/// The same information elements in IPFIX, reduced-size encoded (RFC 7011 §6.2: 4-byte
/// octet/packet counters, 2-byte interfaces), times as flowStart/EndSeconds.
pub fn realistic_ipfix_v4_template() -> Vec<FieldSpec> {
    use FieldId as F;
    [
        (F::IPV4_SRC_ADDR, 4),
        (F::IPV4_DST_ADDR, 4),
        (F::IN_BYTES, 4),
        (F::IN_PKTS, 4),
        (F::FLOW_START_SECONDS, 4),
        (F::FLOW_END_SECONDS, 4),
        (F::L4_SRC_PORT, 2),
        (F::L4_DST_PORT, 2),
        (F::TCP_FLAGS, 1),
        (F::PROTOCOL, 1),
        (F::SRC_TOS, 1),
        (F::INPUT_SNMP, 2),
        (F::OUTPUT_SNMP, 2),
        (F::DIRECTION, 1),
    ]
    .into_iter()
    .map(|(id, len)| FieldSpec::new(id, len))
    .collect()
}

/// IPFIX IPv6 with flowStart/EndMilliseconds and 8-byte counters (66-byte records).
pub fn realistic_ipfix_v6_template() -> Vec<FieldSpec> {
    use FieldId as F;
    [
        (F::IPV6_SRC_ADDR, 16),
        (F::IPV6_DST_ADDR, 16),
        (F::IN_BYTES, 8),
        (F::IN_PKTS, 8),
        (F::FLOW_START_MILLISECONDS, 8),
        (F::FLOW_END_MILLISECONDS, 8),
        (F::L4_SRC_PORT, 2),
        (F::L4_DST_PORT, 2),
        (F::TCP_FLAGS, 1),
        (F::PROTOCOL, 1),
        (F::SRC_TOS, 1),
        (F::INPUT_SNMP, 4),
        (F::OUTPUT_SNMP, 4),
        (F::DIRECTION, 1),
    ]
    .into_iter()
    .map(|(id, len)| FieldSpec::new(id, len))
    .collect()
}

/// Traffic as a collector sees it: about 70 % TCP, 25 % UDP, 5 % ICMP; packet counts
/// heavy-tailed (Pareto, alpha about 1.2: most flows 1-3 packets, a few hundreds of thousands),
/// bytes per packet from 40 to 1,500; ports by protocol; times within the last minute.
pub fn realistic_flows(n: usize, v6: bool, seed: u64) -> Vec<Flow> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
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
                    IpAddr::V6(Ipv6Addr::from(p | u128::from(a) << 16 | 1)),
                    IpAddr::V6(Ipv6Addr::from(p | u128::from(b) << 40 | 2)),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | a >> 8)),
                    IpAddr::V4(Ipv4Addr::from(0xc000_0000 | b >> 10)),
                )
            };
            let u = (next() % 1_000_000 + 1) as f64 / 1_000_000.0;
            let packets = (u.powf(-1.0 / 1.2) as u64).clamp(1, 4_000_000);
            let per_packet = 40 + next() % 1461;
            let pick = next() % 100;
            let (protocol, src_port, dst_port, tcp_flags) = match pick {
                0..70 => (
                    6,
                    1024 + (next() % 64_000) as u16,
                    [443, 80, 22, 25, 993][(next() % 5) as usize],
                    [0x02, 0x12, 0x18, 0x1b, 0x11, 0x10][(next() % 6) as usize],
                ),
                70..95 => (
                    17,
                    1024 + (next() % 64_000) as u16,
                    [53, 123, 443, 514][(next() % 4) as usize],
                    0,
                ),
                // ICMP: type and code in the destination port, as exporters do.
                _ => (1, 0, [0x0800, 0x0000, 0x0303][(next() % 3) as usize], 0),
            };
            let end = 1_700_000_000_000 - next() % 60_000;
            Flow {
                src_addr: src,
                dst_addr: dst,
                src_port,
                dst_port,
                protocol,
                bytes: packets * per_packet,
                packets,
                input_if: 1 + (next() % 48) as u32,
                output_if: 1 + (next() % 48) as u32,
                tcp_flags,
                direction: (next() % 2) as u8,
                start_ms: end - next() % 120_000,
                end_ms: end,
                ..Flow::default()
            }
        })
        .collect()
}

/// One case of the realistic workload: a template datagram (empty for v5) and
/// [`DISTINCT`] data datagrams with different flows.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Name in tables.
    pub name: &'static str,
    /// 5, 9 or 10.
    pub version: u16,
    /// The template datagram (empty for v5).
    pub template: Vec<u8>,
    /// The data datagrams.
    pub data: Vec<Vec<u8>>,
    /// Records per data datagram.
    pub records: usize,
}

/// The four cases of issue 11: v5, v9 IPv4 and IPFIX IPv4 (14 fields, 30 records), IPFIX IPv6
/// (ms times, 8-byte counters, 18 records).
pub fn realistic() -> Vec<Workload> {
    let mut out = Vec::new();
    let v5 = (0..DISTINCT)
        .map(|i| {
            let mut h = header(5);
            h.sequence = (i * RECORDS) as u32;
            let fl: Vec<Flow> = realistic_flows(RECORDS, false, 500 + i as u64)
                .into_iter()
                // v5 counters are 32-bit and it has no direction.
                .map(|f| Flow {
                    direction: 0,
                    packets: f.packets.min(u64::from(u32::MAX / 1500)),
                    bytes: f.bytes.min(u64::from(u32::MAX)),
                    ..f
                })
                .collect();
            let mut p = Vec::new();
            if emit::v5(&mut p, &h, &fl).is_err() {
                unreachable!("30 IPv4 flows fit a v5 packet");
            }
            p
        })
        .collect();
    out.push(Workload {
        name: "v5",
        version: 5,
        template: Vec::new(),
        data: v5,
        records: RECORDS,
    });
    let cases: [(&'static str, u16, Vec<FieldSpec>, bool, usize); 3] = [
        ("v9 IPv4", 9, realistic_v9_template(), false, RECORDS),
        (
            "IPFIX IPv4",
            10,
            realistic_ipfix_v4_template(),
            false,
            RECORDS,
        ),
        (
            "IPFIX IPv6",
            10,
            realistic_ipfix_v6_template(),
            true,
            IPV6_RECORDS,
        ),
    ];
    for (name, version, fields, v6, records) in cases {
        let h = header(version);
        let mut template = Vec::new();
        let mut m = Message::new(&mut template, &h);
        m.set(if version == 9 { 0 } else { 2 })
            .template(256, &fields);
        let _ = m.finish();
        let data = (0..DISTINCT)
            .map(|i| {
                let mut h = header(version);
                h.sequence = i as u32;
                let mut p = Vec::new();
                let mut m = Message::new(&mut p, &h);
                m.set(256);
                for f in realistic_flows(records, v6, u64::from(version) * 100 + i as u64) {
                    // 4-byte counters in the reduced-size templates.
                    let f = if fields
                        .iter()
                        .any(|s| s.id == FieldId::IN_BYTES && s.len == 4)
                    {
                        Flow {
                            bytes: f.bytes.min(u64::from(u32::MAX)),
                            ..f
                        }
                    } else {
                        f
                    };
                    m.flow(&fields, &f, &h);
                }
                let _ = m.finish();
                p
            })
            .collect();
        out.push(Workload {
            name,
            version,
            template,
            data,
            records,
        });
    }
    out
}
