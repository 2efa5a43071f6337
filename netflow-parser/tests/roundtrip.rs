//! Property tests: random templates and flows, encoded with `emit` and decoded back, give exactly
//! what was encoded (biflow records too: both halves); arbitrary and mutated bytes never panic.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netflow_wire::emit::{self, Message};
use netflow_wire::{Decoder, FieldId, Flow, Header, Limits, template::FieldSpec};
use proptest::prelude::*;

/// One field of a random template, and what the decoder must read from it.
#[derive(Debug, Clone, Copy)]
struct Pick {
    spec: FieldSpec,
}

fn mask(len: u16) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// Fields with random lengths in random order; always a v4 or v6 address pair.
fn template(v6: bool) -> impl Strategy<Value = Vec<Pick>> {
    let counter = |id| (1u16..=8).prop_map(move |len| FieldSpec::new(id, len));
    let optional = prop::collection::vec(
        prop_oneof![
            counter(FieldId::IN_BYTES),
            counter(FieldId::IN_PKTS),
            // The fallbacks when the delta counts are absent (totals, ASA NSEL, egress-only).
            counter(FieldId::IN_PERMANENT_BYTES),
            counter(FieldId::INITIATOR_OCTETS),
            counter(FieldId::OUT_BYTES),
            counter(FieldId::IN_PERMANENT_PKTS),
            counter(FieldId::INITIATOR_PACKETS),
            counter(FieldId::OUT_PKTS),
            (1u16..=2).prop_map(|l| FieldSpec::new(FieldId::L4_SRC_PORT, l)),
            Just(FieldSpec::new(FieldId::L4_DST_PORT, 2)),
            Just(FieldSpec::new(FieldId::PROTOCOL, 1)),
            prop_oneof![Just(2u16), Just(4)].prop_map(|l| FieldSpec::new(FieldId::INPUT_SNMP, l)),
            prop_oneof![Just(2u16), Just(4)].prop_map(|l| FieldSpec::new(FieldId::OUTPUT_SNMP, l)),
            Just(FieldSpec::new(FieldId::DIRECTION, 1)),
            Just(FieldSpec::new(FieldId::TCP_FLAGS, 1)),
            Just(FieldSpec::new(FieldId::FLOW_START_MILLISECONDS, 8)),
            Just(FieldSpec::new(FieldId::FLOW_END_MILLISECONDS, 8)),
            // Unknown and vendor ids, any length: skipped by length.
            (200u16..30000, 1u16..=24)
                .prop_filter("an id the decoder reads", |(id, _)| FieldId(*id)
                    .name()
                    .is_none())
                .prop_map(|(id, len)| FieldSpec::new(FieldId(id), len)),
            // Variable-length fields (IPFIX; some v9 exporters such as H3C too).
            (200u16..30000)
                .prop_filter("an id the decoder reads", |id| FieldId(*id)
                    .name()
                    .is_none())
                .prop_map(|id| FieldSpec::new(FieldId(id), FieldSpec::VARIABLE)),
            // Enterprise-specific fields, fixed or variable, ids that may equal IANA ones.
            (
                1u32..,
                1u16..0x7fff,
                prop_oneof![1u16..=16, Just(FieldSpec::VARIABLE)]
            )
                .prop_map(|(enterprise, id, len)| FieldSpec {
                    id: FieldId(id),
                    len,
                    enterprise
                }),
        ],
        0..12,
    );
    (optional, any::<prop::sample::Index>()).prop_map(move |(mut fields, at)| {
        // First occurrence wins in the decoder; keep one of each id so expectations are simple.
        let mut seen = std::collections::HashSet::new();
        fields.retain(|f| seen.insert((f.id, f.enterprise)));
        let (src, dst, len) = if v6 {
            (FieldId::IPV6_SRC_ADDR, FieldId::IPV6_DST_ADDR, 16)
        } else {
            (FieldId::IPV4_SRC_ADDR, FieldId::IPV4_DST_ADDR, 4)
        };
        let i = at.index(fields.len() + 1);
        fields.insert(i, FieldSpec::new(src, len));
        fields.insert(0, FieldSpec::new(dst, len));
        fields.into_iter().map(|spec| Pick { spec }).collect()
    })
}

fn flow(v6: bool) -> impl Strategy<Value = Flow> {
    let addr = move || {
        if v6 {
            any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed()
        }
    };
    (
        addr(),
        addr(),
        any::<(u64, u64, u16, u16, u8, u32, u32, u8, u8)>(),
        any::<(u64, u64)>(),
    )
        .prop_map(
            |(src, dst, (bytes, packets, sp, dp, proto, i, o, dir, flags), (start, end))| Flow {
                src_addr: src,
                dst_addr: dst,
                bytes,
                packets,
                src_port: sp,
                dst_port: dp,
                protocol: proto,
                input_if: i,
                output_if: o,
                direction: dir,
                tcp_flags: flags,
                start_ms: start,
                end_ms: end,
                ..Flow::default()
            },
        )
}

/// What the decoder must give back for `f` written with this template.
fn expected(f: &Flow, fields: &[Pick], exporter: IpAddr, ts: i64) -> Flow {
    let has = |id| {
        fields
            .iter()
            .find(|p| p.spec.id == id && p.spec.enterprise == 0 && !p.spec.is_variable())
            .map(|p| p.spec.len)
    };
    let cut = |id, v: u64| has(id).map_or(0, |len| v & mask(len));
    // Counters: the first field of the priority list the template has.
    let first = |ids: &[FieldId], v: u64| {
        ids.iter()
            .find_map(|&id| has(id))
            .map_or(0, |len| v & mask(len))
    };
    Flow {
        ts_micros: ts,
        exporter,
        src_addr: f.src_addr,
        dst_addr: f.dst_addr,
        bytes: first(
            &[
                FieldId::IN_BYTES,
                FieldId::IN_PERMANENT_BYTES,
                FieldId::INITIATOR_OCTETS,
                FieldId::OUT_BYTES,
            ],
            f.bytes,
        ),
        packets: first(
            &[
                FieldId::IN_PKTS,
                FieldId::IN_PERMANENT_PKTS,
                FieldId::INITIATOR_PACKETS,
                FieldId::OUT_PKTS,
            ],
            f.packets,
        ),
        src_port: cut(FieldId::L4_SRC_PORT, u64::from(f.src_port)) as u16,
        dst_port: cut(FieldId::L4_DST_PORT, u64::from(f.dst_port)) as u16,
        protocol: cut(FieldId::PROTOCOL, u64::from(f.protocol)) as u8,
        input_if: cut(FieldId::INPUT_SNMP, u64::from(f.input_if)) as u32,
        output_if: cut(FieldId::OUTPUT_SNMP, u64::from(f.output_if)) as u32,
        direction: cut(FieldId::DIRECTION, u64::from(f.direction)) as u8,
        tcp_flags: cut(FieldId::TCP_FLAGS, u64::from(f.tcp_flags)) as u8,
        start_ms: cut(FieldId::FLOW_START_MILLISECONDS, f.start_ms),
        end_ms: cut(FieldId::FLOW_END_MILLISECONDS, f.end_ms),
        sampling_interval: 1,
    }
}

/// A random packet: one or two templates (v4 and/or v6) and their data sets, random padding.
/// (version, [(template, flows, padding)], sequence, domain)
type Packet = (u16, Vec<(Vec<Pick>, Vec<Flow>, usize)>, u32, u32);

fn packet() -> impl Strategy<Value = Packet> {
    let set = |v6: bool| {
        (
            template(v6),
            prop::collection::vec(flow(v6), 0..30),
            0usize..4,
        )
            .prop_map(|(t, f, pad)| (t, f, pad))
    };
    (
        prop_oneof![Just(9u16), Just(10)],
        prop::collection::vec(any::<bool>().prop_flat_map(set), 1..3),
        any::<u32>(),
        any::<u32>(),
    )
}

/// A random biflow template: a forward one from [`template`] with reverse IEs (RFC 5103,
/// enterprise 29305) of counters (delta counts and totals, 1..=8 bytes), TCP flags,
/// interfaces, direction and millisecond times inserted at random places.
fn biflow_template(v6: bool) -> impl Strategy<Value = Vec<Pick>> {
    let counter = |id| (1u16..=8).prop_map(move |len| FieldSpec::reverse(id, len));
    let reverse = prop::collection::vec(
        (
            prop_oneof![
                counter(FieldId::IN_BYTES),
                counter(FieldId::IN_PKTS),
                counter(FieldId::IN_PERMANENT_BYTES),
                counter(FieldId::IN_PERMANENT_PKTS),
                Just(FieldSpec::reverse(FieldId::TCP_FLAGS, 1)),
                prop_oneof![Just(2u16), Just(4)]
                    .prop_map(|l| FieldSpec::reverse(FieldId::INPUT_SNMP, l)),
                prop_oneof![Just(2u16), Just(4)]
                    .prop_map(|l| FieldSpec::reverse(FieldId::OUTPUT_SNMP, l)),
                Just(FieldSpec::reverse(FieldId::DIRECTION, 1)),
                Just(FieldSpec::reverse(FieldId::FLOW_START_MILLISECONDS, 8)),
                Just(FieldSpec::reverse(FieldId::FLOW_END_MILLISECONDS, 8)),
            ],
            any::<prop::sample::Index>(),
        ),
        1..8,
    );
    (template(v6), reverse).prop_map(|(mut fields, reverse)| {
        // Enterprise 29305 fields of the forward strategy would be reverse IEs too.
        fields.retain(|p| !p.spec.is_reverse());
        let mut seen = std::collections::HashSet::new();
        for (spec, at) in reverse {
            if seen.insert(spec.id) {
                let i = at.index(fields.len() + 1);
                fields.insert(i, Pick { spec });
            }
        }
        fields
    })
}

/// What the decoder must give back for the biflow record (`f`, `r`) written with this
/// template: the forward flow, and the reverse one (key and interfaces swapped, the other
/// direction, reverse counters and flags; what the template carries reverse IEs of, from
/// them), each when it carries traffic; the forward one alone when neither does.
fn expected_halves(f: &Flow, r: &Flow, fields: &[Pick], exporter: IpAddr, ts: i64) -> Vec<Flow> {
    let forward = expected(f, fields, exporter, ts);
    let has = |id| {
        fields
            .iter()
            .find(|p| p.spec.id == id && p.spec.is_reverse())
            .map(|p| p.spec.len)
    };
    let first =
        |ids: &[FieldId], v: u64| ids.iter().find_map(|&id| has(id)).map(|len| v & mask(len));
    let bytes = first(&[FieldId::IN_BYTES, FieldId::IN_PERMANENT_BYTES], r.bytes);
    let packets = first(&[FieldId::IN_PKTS, FieldId::IN_PERMANENT_PKTS], r.packets);
    if bytes.is_none() && packets.is_none() {
        return vec![forward];
    }
    let (bytes, packets) = (bytes.unwrap_or(0), packets.unwrap_or(0));
    if bytes == 0 && packets == 0 {
        return vec![forward];
    }
    let or = |id, v: u64, otherwise: u64| has(id).map_or(otherwise, |len| v & mask(len));
    let reverse = Flow {
        src_addr: forward.dst_addr,
        dst_addr: forward.src_addr,
        src_port: forward.dst_port,
        dst_port: forward.src_port,
        input_if: or(
            FieldId::INPUT_SNMP,
            u64::from(r.input_if),
            u64::from(forward.output_if),
        ) as u32,
        output_if: or(
            FieldId::OUTPUT_SNMP,
            u64::from(r.output_if),
            u64::from(forward.input_if),
        ) as u32,
        direction: or(
            FieldId::DIRECTION,
            u64::from(r.direction),
            u64::from(forward.direction != 1),
        ) as u8,
        bytes,
        packets,
        tcp_flags: or(FieldId::TCP_FLAGS, u64::from(r.tcp_flags), 0) as u8,
        start_ms: or(
            FieldId::FLOW_START_MILLISECONDS,
            r.start_ms,
            forward.start_ms,
        ),
        end_ms: or(FieldId::FLOW_END_MILLISECONDS, r.end_ms, forward.end_ms),
        ..forward
    };
    if forward.bytes == 0 && forward.packets == 0 {
        vec![reverse]
    } else {
        vec![forward, reverse]
    }
}

/// A message of `header` with template 300 of `fields` and one data set of `flows`; `None` when
/// the set cannot be expressed (over 64 KiB).
fn one_set_message(header: &Header, fields: &[FieldSpec], flows: &[Flow]) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, header);
    m.set(if header.version == 10 { 2 } else { 0 })
        .template(300, fields);
    m.set(300);
    for f in flows {
        m.flow(fields, f, header);
    }
    m.finish().ok()?;
    Some(buf)
}

/// `fields` with flowStart/EndMilliseconds at the given places unless it has them: one clock
/// for both times, so that the set reader's windows (`record/fixed.rs`) read its sets.
fn with_millis(mut fields: Vec<FieldSpec>, at: [prop::sample::Index; 2]) -> Vec<FieldSpec> {
    for (id, at) in [
        FieldId::FLOW_START_MILLISECONDS,
        FieldId::FLOW_END_MILLISECONDS,
    ]
    .into_iter()
    .zip(at)
    {
        if !fields.iter().any(|f| f.id == id && f.enterprise == 0) {
            fields.insert(at.index(fields.len() + 1), FieldSpec::new(id, 8));
        }
    }
    fields
}

/// The fixed-length fields of `picks` (v9: IANA ones only), unknown fields of the `fillers`'
/// lengths at their places, and both times in ms ([`with_millis`]); with the header of a v9 or
/// IPFIX message for them.
fn fixed_fields(
    picks: &[Pick],
    fillers: &[(prop::sample::Index, u16)],
    ipfix: bool,
    times: [prop::sample::Index; 2],
) -> (Vec<FieldSpec>, Header) {
    let mut fields: Vec<FieldSpec> = picks
        .iter()
        .map(|p| p.spec)
        .filter(|f| !f.is_variable() && (ipfix || f.enterprise == 0))
        .collect();
    for (k, (at, len)) in fillers.iter().enumerate() {
        let filler = FieldSpec::new(FieldId(29_000 + k as u16), *len);
        fields.insert(at.index(fields.len() + 1), filler);
    }
    let header = Header {
        version: if ipfix { 10 } else { 9 },
        sys_uptime_ms: Some(5000),
        export_secs: 1_700_000_000,
        ..Header::default()
    };
    (with_millis(fields, times), header)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn v9_and_ipfix_round_trip((version, sets, seq, domain) in packet()) {
        // v9 has no enterprise bit: enterprise fields only in IPFIX.
        let sets: Vec<_> = sets.into_iter().map(|(mut fields, flows, pad)| {
            if version == 9 {
                fields.retain(|p: &Pick| p.spec.enterprise == 0);
            }
            (fields, flows, pad)
        }).collect();
        let header = Header { version, sequence: seq, source_id: domain, sys_uptime_ms: Some(5000), export_secs: 1_700_000_000, ..Header::default() };
        let mut buf = Vec::new();
        let mut m = Message::new(&mut buf, &header);
        m.set(if version == 9 { 0 } else { 2 });
        for (i, (fields, _, _)) in sets.iter().enumerate() {
            let specs: Vec<FieldSpec> = fields.iter().map(|p| p.spec).collect();
            m.template(256 + i as u16, &specs);
        }
        for (i, (fields, flows, pad)) in sets.iter().enumerate() {
            let specs: Vec<FieldSpec> = fields.iter().map(|p| p.spec).collect();
            m.set(256 + i as u16);
            for f in flows {
                m.flow(&specs, f, &header);
            }
            m.pad(*pad);
        }
        let len = m.finish();
        prop_assume!(len.is_ok()); // sets over 64 KiB cannot be expressed
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let mut d = Decoder::new(Limits::default());
        let decoded = d.decode(exporter, 77, &buf).unwrap();
        prop_assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
        let h = decoded.header();
        prop_assert_eq!((h.version, h.sequence, h.source_id), (version, seq, domain));
        let got: Vec<Flow> = common::flows_checked(&decoded);
        let want: Vec<Flow> = sets.iter().flat_map(|(fields, flows, _)| flows.iter().map(|f| expected(f, fields, exporter, 77))).collect();
        prop_assert_eq!(got, want);
        // Every field, enterprise and variable-length ones included, is reachable by its key
        // with the length it was written with.
        for set in decoded.data_sets() {
            for r in set.records() {
                for f in set.template().fields() {
                    let b = r.get_enterprise(f.enterprise, f.id);
                    prop_assert!(b.is_some(), "{:?}", f);
                    if !f.is_variable() {
                        prop_assert_eq!(b.map(<[u8]>::len), Some(usize::from(f.len)));
                    }
                }
                prop_assert_eq!(r.fields().count(), set.template().fields().len());
            }
        }
    }

    #[test]
    fn long_records_read_the_same_by_each_reader(
        (fields, flows) in any::<bool>().prop_flat_map(|v6| (template(v6), prop::collection::vec(flow(v6), 1..40))),
        fillers in prop::collection::vec((any::<prop::sample::Index>(), 60u16..=120), 1..4),
        ipfix in any::<bool>(),
        times in any::<[prop::sample::Index; 2]>(),
    ) {
        // Fields far into long records: the set reader's windows with slots up to byte 248
        // and records longer than a window, their first and last records (the last ones
        // through the tail copy), and the fallback for slots past byte 248.
        let (fields, header) = fixed_fields(&fields, &fillers, ipfix, times);
        let buf = one_set_message(&header, &fields, &flows);
        prop_assume!(buf.is_some());
        let buf = buf.unwrap();
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let mut d = Decoder::default();
        let decoded = d.decode(exporter, 77, &buf).unwrap();
        prop_assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
        let picks: Vec<Pick> = fields.iter().map(|&spec| Pick { spec }).collect();
        let want: Vec<Flow> = flows.iter().map(|f| expected(f, &picks, exporter, 77)).collect();
        prop_assert_eq!(common::flows_checked(&decoded), want);
    }

    #[test]
    fn pending_sets_read_the_same_as_sets_in_place(
        (fields, flows) in any::<bool>().prop_flat_map(|v6| (template(v6), prop::collection::vec(flow(v6), 1..40))),
        fillers in prop::collection::vec((any::<prop::sample::Index>(), 1u16..=120), 0..3),
        ipfix in any::<bool>(),
        times in any::<[prop::sample::Index; 2]>(),
    ) {
        // Data before its template (after a restart): the set waits in the pending buffer,
        // which keeps its body without the bytes around it, and is read when the template
        // comes. Its first records have no bytes before them and all lie in the last bytes
        // of what the set reader sees: the same flows as when read in place.
        let (fields, header) = fixed_fields(&fields, &fillers, ipfix, times);
        let (mut data, mut tmpl) = (Vec::new(), Vec::new());
        let mut m = Message::new(&mut data, &header);
        m.set(300);
        for f in &flows {
            m.flow(&fields, f, &header);
        }
        prop_assume!(m.finish().is_ok());
        let mut m = Message::new(&mut tmpl, &header);
        m.set(if ipfix { 2 } else { 0 }).template(300, &fields);
        m.finish().unwrap();
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let mut d = Decoder::default();
        let first = d.decode(exporter, 77, &data).unwrap();
        prop_assert_eq!(first.waiting_count(), 1);
        prop_assert_eq!(first.flows().count(), 0);
        let released = d.decode(exporter, 78, &tmpl).unwrap();
        prop_assert!(released.issues().is_empty(), "{:?}", released.issues());
        let picks: Vec<Pick> = fields.iter().map(|&spec| Pick { spec }).collect();
        let want: Vec<Flow> = flows.iter().map(|f| expected(f, &picks, exporter, 77)).collect();
        prop_assert_eq!(common::flows_checked(&released), want);
    }

    #[test]
    fn ipfix_biflow_round_trip(
        (fields, pairs) in any::<bool>().prop_flat_map(|v6| (
            biflow_template(v6),
            prop::collection::vec((flow(v6), flow(v6), any::<u8>()), 0..20),
        )),
    ) {
        // Random biflow templates and records, some halves silent: emitted with
        // `Message::biflow`, decoded back half by half, a biflow record counted once.
        let header = Header { version: 10, export_secs: 1_700_000_000, ..Header::default() };
        let specs: Vec<FieldSpec> = fields.iter().map(|p| p.spec).collect();
        let silence = |x: Flow, s: bool| if s { Flow { bytes: 0, packets: 0, ..x } } else { x };
        let pairs: Vec<(Flow, Flow)> = pairs
            .into_iter()
            .map(|(f, r, quiet)| (silence(f, quiet & 1 != 0), silence(r, quiet & 2 != 0)))
            .collect();
        let mut buf = Vec::new();
        let mut m = Message::new(&mut buf, &header);
        m.set(2).template(256, &specs);
        m.set(256);
        for (f, r) in &pairs {
            m.biflow(&specs, f, r, &header);
        }
        let len = m.finish();
        prop_assume!(len.is_ok());
        let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        let mut d = Decoder::new(Limits::default());
        let decoded = d.decode(exporter, 77, &buf).unwrap();
        prop_assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
        prop_assert_eq!(decoded.data_records() as usize, pairs.len());
        let got = common::flows_checked(&decoded);
        let want: Vec<Flow> = pairs
            .iter()
            .flat_map(|(f, r)| expected_halves(f, r, &fields, exporter, 77))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn v5_round_trip(flows in prop::collection::vec(flow(false), 0..=30), seq in any::<u32>(), uptime in any::<u32>()) {
        let header = Header { version: 5, sequence: seq, sys_uptime_ms: Some(uptime), export_secs: 1_700_000_000, export_nanos: 5_000_000, source_id: 0x0102, sampling: 0x4005, ..Header::default() };
        // v5 fields are 32-bit counters, 16-bit interfaces; times are uptime-relative (within 24 days).
        let export_ms = header.export_ms();
        let flows: Vec<Flow> = flows.into_iter().map(|f| Flow {
            bytes: f.bytes & 0xffff_ffff,
            packets: f.packets & 0xffff_ffff,
            input_if: f.input_if & 0xffff,
            output_if: f.output_if & 0xffff,
            direction: 0,
            start_ms: export_ms - f.start_ms % 2_000_000_000,
            end_ms: export_ms - f.end_ms % 2_000_000_000,
            ..f
        }).collect();
        let mut buf = Vec::new();
        emit::v5(&mut buf, &header, &flows).unwrap();
        let mut d = Decoder::default();
        let exporter = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let decoded = d.decode(exporter, 5, &buf).unwrap();
        let mut h = decoded.header();
        h.count = 0;
        prop_assert_eq!(h, Header { count: 0, ..header });
        let got: Vec<Flow> = common::flows_checked(&decoded);
        let want: Vec<Flow> = flows.iter().map(|f| Flow { ts_micros: 5, exporter, sampling_interval: 5, ..*f }).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn ipfix_relative_times_round_trip(
        ago_start in 0u64..4_000_000, len in 0u64..300_000,
        layout in prop_oneof![Just([158u16, 159]), Just([158, 161]), Just([158, 162]), Just([159, 161]), Just([159, 162])],
    ) {
        // Times as µs before the export time (158/159) or a duration (161/162) that gives the
        // missing one: emitted and decoded back to the same milliseconds.
        let header = Header { version: 10, export_secs: 1_700_000_000, ..Header::default() };
        let end = header.export_ms() - ago_start;
        let f = Flow {
            src_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            dst_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            start_ms: end.saturating_sub(len),
            end_ms: end,
            ..Flow::default()
        };
        let mut specs = vec![FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4), FieldSpec::new(FieldId::IPV4_DST_ADDR, 4)];
        specs.extend(layout.iter().map(|&id| FieldSpec::new(FieldId(id), 4)));
        let mut buf = Vec::new();
        let mut m = Message::new(&mut buf, &header);
        m.set(2).template(256, &specs);
        m.set(256).flow(&specs, &f, &header);
        m.finish().unwrap();
        let mut d = Decoder::default();
        let decoded = d.decode(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, &buf).unwrap();
        let got: Vec<(u64, u64)> = common::flows_checked(&decoded).iter().map(|g| (g.start_ms, g.end_ms)).collect();
        prop_assert_eq!(got, vec![(f.start_ms, f.end_ms)]);
    }

    #[test]
    fn every_time_source_reads_the_same_by_each_reader(
        (fields, flows) in any::<bool>().prop_flat_map(|v6| (template(v6), prop::collection::vec(flow(v6), 1..30))),
        layout in prop_oneof![
            Just([FieldId::FIRST_SWITCHED, FieldId::LAST_SWITCHED]),
            Just([FieldId::FLOW_START_SECONDS, FieldId::FLOW_END_SECONDS]),
            Just([FieldId::FLOW_START_MILLISECONDS, FieldId::FLOW_END_MILLISECONDS]),
            // Mixed sources take the general reader.
            Just([FieldId::FLOW_START_SECONDS, FieldId::FLOW_END_MILLISECONDS]),
            Just([FieldId::FIRST_SWITCHED, FieldId::FLOW_END_SECONDS]),
        ],
        at in any::<[prop::sample::Index; 2]>(),
        ipfix in any::<bool>(),
        uptime in 3_600_000u32..u32::MAX,
    ) {
        // The fold loop reads times through a reader chosen once per set (sysUptime, seconds,
        // milliseconds) and `next` through the general one: both give the times written, for
        // fields anywhere in the record.
        let mut fields: Vec<FieldSpec> = fields.iter().map(|p| p.spec).filter(|f| {
            f.enterprise == 0 && f.id != FieldId::FLOW_START_MILLISECONDS && f.id != FieldId::FLOW_END_MILLISECONDS
        }).collect();
        for (id, at) in layout.iter().zip(at) {
            let len = if *id == FieldId::FLOW_START_MILLISECONDS || *id == FieldId::FLOW_END_MILLISECONDS { 8 } else { 4 };
            fields.insert(at.index(fields.len() + 1), FieldSpec::new(*id, len));
        }
        let header = Header {
            version: if ipfix { 10 } else { 9 },
            sys_uptime_ms: (!ipfix).then_some(uptime),
            export_secs: 1_700_000_000,
            ..Header::default()
        };
        prop_assume!(!ipfix || layout[0] != FieldId::FIRST_SWITCHED);
        let export = header.export_ms();
        // Whole seconds within the last hour, so that every source can carry them exactly.
        let flows: Vec<Flow> = flows.into_iter().enumerate().map(|(i, f)| Flow {
            start_ms: export - 1000 * (3_000 - (i as u64 * 37) % 3_000),
            end_ms: export - 1000 * ((i as u64 * 11) % 600),
            ..f
        }).collect();
        let buf = one_set_message(&header, &fields, &flows).unwrap();
        let mut d = Decoder::default();
        let decoded = d.decode(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, &buf).unwrap();
        prop_assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
        let got: Vec<(u64, u64)> = common::flows_checked(&decoded).iter().map(|g| (g.start_ms, g.end_ms)).collect();
        let want: Vec<(u64, u64)> = flows.iter().map(|f| (f.start_ms, f.end_ms)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), version in prop_oneof![Just(5u16), Just(9), Just(10), any::<u16>()]) {
        let mut bytes = bytes;
        if bytes.len() >= 2 {
            bytes[..2].copy_from_slice(&version.to_be_bytes());
        }
        let mut d = Decoder::default();
        for _ in 0..2 {
            if let Ok(decoded) = d.decode(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, &bytes) {
                for set in decoded.data_sets() {
                    for r in set.records() {
                        let _ = r.flow(set.context());
                        let _ = r.fields().count();
                    }
                }
            }
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic((version, sets, seq, domain) in packet(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let header = Header { version, sequence: seq, source_id: domain, ..Header::default() };
        let mut buf = Vec::new();
        let mut m = Message::new(&mut buf, &header);
        m.set(if version == 9 { 0 } else { 2 });
        for (i, (fields, _, _)) in sets.iter().enumerate() {
            let specs: Vec<FieldSpec> = fields.iter().map(|p| p.spec).collect();
            m.template(256 + i as u16, &specs);
            m.set(256 + i as u16);
            for f in &sets[i].1 {
                m.flow(&specs, f, &header);
            }
            m.set(if version == 9 { 0 } else { 2 });
        }
        let _ = m.finish();
        for (at, v) in flips {
            let i = at.index(buf.len());
            buf[i] = v;
        }
        let mut d = Decoder::default();
        if let Ok(decoded) = d.decode(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, &buf) {
            let _ = decoded.flows().count();
        }
    }
}
