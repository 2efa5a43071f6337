//! Biflows (RFC 5103) on hand-made packets, built with `emit` (`Message::biflow`): what each
//! half holds, when a half is a flow, reverse IEs that override the swap, a reverse counter
//! without a forward one, Cisco ASA NSEL responder counts, sampling, sequence numbers, the
//! order of `next` and `for_each`, variable-length records, sets waiting for their template.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use netflow_wire::emit::Message;
use netflow_wire::sequence::{SequenceEvent, SequenceTracker};
use netflow_wire::template::FieldSpec;
use netflow_wire::{Decoder, FieldId, Flow, Header};

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const TS: i64 = 1_700_000_123_000_000;

fn header(version: u16, sequence: u32) -> Header {
    Header {
        version,
        sequence,
        sys_uptime_ms: (version == 9).then_some(600_000),
        export_secs: 1_700_000_100,
        ..Header::default()
    }
}

fn iana(id: FieldId, len: u16) -> FieldSpec {
    FieldSpec::new(id, len)
}

fn rev(id: FieldId, len: u16) -> FieldSpec {
    FieldSpec::reverse(id, len)
}

/// softflowd `-b`'s IPv4 layout with absolute millisecond times: forward IEs, then reverse
/// octets, packets, TOS and TCP flags.
fn softflowd_like() -> Vec<FieldSpec> {
    vec![
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::FLOW_START_MILLISECONDS, 8),
        iana(FieldId::FLOW_END_MILLISECONDS, 8),
        iana(FieldId::IN_BYTES, 4),
        iana(FieldId::IN_PKTS, 4),
        iana(FieldId::INPUT_SNMP, 4),
        iana(FieldId::OUTPUT_SNMP, 4),
        iana(FieldId::DIRECTION, 1),
        iana(FieldId::L4_SRC_PORT, 2),
        iana(FieldId::L4_DST_PORT, 2),
        iana(FieldId::PROTOCOL, 1),
        iana(FieldId::TCP_FLAGS, 1),
        iana(FieldId::SRC_TOS, 1),
        rev(FieldId::IN_BYTES, 4),
        rev(FieldId::IN_PKTS, 4),
        rev(FieldId::SRC_TOS, 1),
        rev(FieldId::TCP_FLAGS, 1),
    ]
}

fn forward() -> Flow {
    Flow {
        src_addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        dst_addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
        src_port: 51_000,
        dst_port: 443,
        protocol: 6,
        bytes: 1_200,
        packets: 10,
        input_if: 3,
        output_if: 7,
        direction: Flow::INGRESS,
        tcp_flags: 0x1b,
        start_ms: 1_700_000_050_000,
        end_ms: 1_700_000_090_000,
        ..Flow::default()
    }
}

fn reverse() -> Flow {
    Flow {
        bytes: 64_000,
        packets: 48,
        tcp_flags: 0x13,
        ..Flow::default()
    }
}

/// An IPFIX (or v9) message: the template, then one data set of `records` (forward, reverse).
fn message(version: u16, seq: u32, fields: &[FieldSpec], records: &[(Flow, Flow)]) -> Vec<u8> {
    let h = header(version, seq);
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &h);
    m.set(if version == 9 { 0 } else { 2 })
        .template(300, fields);
    m.set(300);
    for (f, r) in records {
        m.biflow(fields, f, r, &h);
    }
    m.finish().unwrap();
    buf
}

fn decode(d: &mut Decoder, buf: &[u8]) -> Vec<Flow> {
    let decoded = d.decode(EXPORTER, TS, buf).unwrap();
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    let flows = common::flows_checked(&decoded);
    // The set's and the records' readings agree with the datagram's.
    let by_set: Vec<Flow> = decoded.data_sets().flat_map(|s| s.flows()).collect();
    assert_eq!(by_set, flows, "DataSet::flows");
    let by_record: Vec<Flow> = decoded
        .data_sets()
        .flat_map(|s| {
            let ctx = *s.context();
            s.records().flat_map(move |r| r.flows(&ctx))
        })
        .collect();
    assert_eq!(by_record, flows, "Record::flows");
    flows
}

/// What the decoder makes of `f` as the forward half: the exporter and receive time filled in.
fn stamped(f: Flow) -> Flow {
    Flow {
        exporter: EXPORTER,
        ts_micros: TS,
        ..f
    }
}

#[test]
fn a_biflow_record_is_two_flows_the_reverse_one_swapped() {
    let fields = softflowd_like();
    let (f, r) = (forward(), reverse());
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    let want_reverse = stamped(Flow {
        src_addr: f.dst_addr,
        dst_addr: f.src_addr,
        src_port: f.dst_port,
        dst_port: f.src_port,
        input_if: f.output_if,
        output_if: f.input_if,
        direction: Flow::EGRESS,
        bytes: r.bytes,
        packets: r.packets,
        tcp_flags: r.tcp_flags,
        // No reverse time IEs: the record's times.
        ..f
    });
    assert_eq!(flows, vec![stamped(f), want_reverse]);
    // A forward egress flow has an ingress reverse half.
    let egress = Flow {
        direction: Flow::EGRESS,
        ..f
    };
    let flows = decode(
        &mut Decoder::default(),
        &message(10, 0, &fields, &[(egress, r)]),
    );
    assert_eq!(flows[1].direction, Flow::INGRESS);
}

#[test]
fn a_half_without_traffic_is_not_a_flow() {
    let fields = softflowd_like();
    let (f, r) = (forward(), reverse());
    let silent = |x: Flow| Flow {
        bytes: 0,
        packets: 0,
        ..x
    };
    let flows = decode(
        &mut Decoder::default(),
        &message(
            10,
            0,
            &fields,
            &[(f, silent(r)), (silent(f), r), (silent(f), silent(r))],
        ),
    );
    let got: Vec<_> = flows
        .iter()
        .map(|x| (x.src_addr, x.bytes, x.packets))
        .collect();
    assert_eq!(
        got,
        vec![
            // Reverse half silent: the forward flow alone.
            (f.src_addr, f.bytes, f.packets),
            // Forward half silent (softflowd: a conversation only the responder spoke in).
            (f.dst_addr, r.bytes, r.packets),
            // Neither carries traffic: the record is still one flow, as a plain record is.
            (f.src_addr, 0, 0),
        ]
    );
    // Bytes or packets: either makes a half a flow.
    let flows = decode(
        &mut Decoder::default(),
        &message(
            10,
            0,
            &fields,
            &[(
                f,
                Flow {
                    bytes: 0,
                    packets: 1,
                    ..r
                },
            )],
        ),
    );
    assert_eq!(flows.len(), 2);
}

#[test]
fn reverse_ies_of_interfaces_direction_and_times_are_read() {
    let mut fields = softflowd_like();
    fields.extend([
        rev(FieldId::INPUT_SNMP, 2),
        rev(FieldId::OUTPUT_SNMP, 4),
        rev(FieldId::DIRECTION, 1),
        rev(FieldId::FLOW_END_MILLISECONDS, 8),
    ]);
    let f = forward();
    let r = Flow {
        input_if: 40,
        output_if: 50,
        direction: Flow::INGRESS,
        end_ms: f.end_ms - 5_000,
        ..reverse()
    };
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    let back = flows[1];
    assert_eq!(
        (back.input_if, back.output_if, back.direction),
        (40, 50, Flow::INGRESS)
    );
    // The reverse end from its IE; the start, which the record gives for the biflow only, the
    // forward one.
    assert_eq!((back.start_ms, back.end_ms), (f.start_ms, f.end_ms - 5_000));
    assert_eq!(flows[0], stamped(f));
}

#[test]
fn reverse_times_in_seconds_and_a_reverse_duration() {
    // v9 has no enterprise bit: the reverse time IEs are an IPFIX matter. Seconds, a reverse
    // start in seconds and a reverse duration that gives the reverse end.
    let fields = [
        iana(FieldId::IPV6_SRC_ADDR, 16),
        iana(FieldId::IPV6_DST_ADDR, 16),
        iana(FieldId::FLOW_START_SECONDS, 4),
        iana(FieldId::FLOW_END_SECONDS, 4),
        iana(FieldId::IN_BYTES, 8),
        rev(FieldId::IN_BYTES, 8),
        rev(FieldId::FLOW_START_SECONDS, 4),
        rev(FieldId::FLOW_DURATION_MILLISECONDS, 4),
    ];
    let f = Flow {
        src_addr: "2001:db8::1".parse().unwrap(),
        dst_addr: "2001:db8::2".parse().unwrap(),
        bytes: 10,
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_060_000,
        ..Flow::default()
    };
    let r = Flow {
        bytes: 20,
        start_ms: 1_700_000_010_000,
        end_ms: 1_700_000_012_500,
        ..Flow::default()
    };
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.bytes, x.start_ms, x.end_ms))
            .collect::<Vec<_>>(),
        vec![(10, f.start_ms, f.end_ms), (20, r.start_ms, r.end_ms)]
    );
}

#[test]
fn a_reverse_counter_without_its_forward_counterpart() {
    // Reverse octets and packets, but no forward counters at all: the forward half carries no
    // traffic the record tells of, the reverse half is the flow.
    let fields = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::PROTOCOL, 1),
        rev(FieldId::IN_BYTES, 4),
        rev(FieldId::IN_PKTS, 2),
    ];
    let (f, r) = (forward(), reverse());
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.src_addr, x.protocol, x.bytes, x.packets))
            .collect::<Vec<_>>(),
        vec![(f.dst_addr, 6, r.bytes, r.packets)]
    );
    // Reverse packets alone (no reverse octets): still a biflow template.
    let fields = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::IN_BYTES, 4),
        rev(FieldId::IN_PKTS, 4),
    ];
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.bytes, x.packets))
            .collect::<Vec<_>>(),
        vec![(f.bytes, 0), (0, r.packets)]
    );
}

#[test]
fn reverse_totals_are_the_fallback_as_forward_totals_are() {
    // octetTotalCount/packetTotalCount (85/86) forward and reverse, no delta counts.
    let fields = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::IN_PERMANENT_BYTES, 8),
        iana(FieldId::IN_PERMANENT_PKTS, 8),
        rev(FieldId::IN_PERMANENT_BYTES, 8),
        rev(FieldId::IN_PERMANENT_PKTS, 8),
    ];
    let (f, r) = (forward(), reverse());
    let flows = decode(&mut Decoder::default(), &message(10, 0, &fields, &[(f, r)]));
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.bytes, x.packets))
            .collect::<Vec<_>>(),
        vec![(f.bytes, f.packets), (r.bytes, r.packets)]
    );
}

#[test]
fn nsel_responder_counts_are_the_reverse_half_in_v9() {
    // Cisco ASA NSEL: initiator/responder octets and packets (231/232, 298/299), IANA ids, so
    // v9 carries them as well as IPFIX.
    let fields = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::L4_SRC_PORT, 2),
        iana(FieldId::L4_DST_PORT, 2),
        iana(FieldId::PROTOCOL, 1),
        iana(FieldId::INITIATOR_OCTETS, 4),
        iana(FieldId::RESPONDER_OCTETS, 4),
        iana(FieldId::INITIATOR_PACKETS, 4),
        iana(FieldId::RESPONDER_PACKETS, 4),
    ];
    let (f, r) = (forward(), reverse());
    for version in [9, 10] {
        let flows = decode(
            &mut Decoder::default(),
            &message(version, 0, &fields, &[(f, r)]),
        );
        assert_eq!(
            flows
                .iter()
                .map(|x| (x.src_port, x.dst_port, x.bytes, x.packets))
                .collect::<Vec<_>>(),
            vec![
                (f.src_port, f.dst_port, f.bytes, f.packets),
                (f.dst_port, f.src_port, r.bytes, r.packets)
            ],
            "v{version}"
        );
    }
}

#[test]
fn sampling_applies_to_both_halves() {
    // An IPFIX options record announcing 1 in 100 (samplingPacketInterval 1, space 99), then
    // biflow data: both halves carry the rate and renormalize by it.
    let h = header(10, 0);
    let opts = [
        iana(FieldId::METERING_PROCESS_ID, 4),
        iana(FieldId::SAMPLING_PACKET_INTERVAL, 4),
        iana(FieldId::SAMPLING_PACKET_SPACE, 4),
    ];
    let fields = softflowd_like();
    let (f, r) = (forward(), reverse());
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &h);
    m.set(3).options_template(301, 1, &opts);
    m.set(2).template(300, &fields);
    m.set(301)
        .uint(&opts[0], 1)
        .uint(&opts[1], 1)
        .uint(&opts[2], 99)
        .end_record();
    m.set(300).biflow(&fields, &f, &r, &h);
    m.finish().unwrap();
    let mut d = Decoder::default();
    let flows = decode(&mut d, &buf);
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.sampling_interval, x.renormalized().bytes))
            .collect::<Vec<_>>(),
        vec![(100, f.bytes * 100), (100, r.bytes * 100)]
    );
    // An exporter's override too.
    d.set_sampling_override(EXPORTER, Some(7));
    let again = decode(&mut d, &message(10, 1, &fields, &[(f, r)]));
    assert!(again.iter().all(|x| x.sampling_interval == 7), "{again:?}");
}

#[test]
fn sequence_numbers_count_a_biflow_record_once() {
    // RFC 7011 §3.1: the sequence number counts data records sent before this message. Three
    // biflow records a message (six flows): the next message says 3, not 6.
    let fields = softflowd_like();
    let records = [(forward(), reverse()); 3];
    let mut d = Decoder::default();
    let mut t = SequenceTracker::default();
    let mut flows = 0;
    let mut events = Vec::new();
    for seq in [0, 3, 6, 12] {
        let buf = message(10, seq, &fields, &records);
        let decoded = d.decode(EXPORTER, TS, &buf).unwrap();
        assert_eq!(decoded.data_records(), 3);
        flows += decoded.flows().count();
        events.push(t.observe_decoded(&decoded));
    }
    assert_eq!(flows, 24);
    // The message with sequence 9 never came: its 3 records are lost, not 6 flows.
    assert_eq!(
        events,
        vec![
            SequenceEvent::First,
            SequenceEvent::InOrder,
            SequenceEvent::InOrder,
            SequenceEvent::Gap { missing: 3 }
        ]
    );
    let (_, stats) = t.iter().next().unwrap();
    assert_eq!((stats.received, stats.lost), (12, 3));
}

#[test]
fn next_then_for_each_and_varlen_records() {
    // A variable-length field before the reverse ones (their offsets found per record), two
    // records, and a second set of a plain template after them: `common::flows_checked` reads
    // them by `next`, by `for_each`, and by one `next` then `for_each` (the reverse half of the
    // first record still to come).
    let h = header(10, 0);
    let bi = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::IN_BYTES, 4),
        iana(FieldId::APPLICATION_NAME, FieldSpec::VARIABLE),
        rev(FieldId::IN_BYTES, 4),
        rev(FieldId::TCP_FLAGS, 1),
    ];
    let plain = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::IN_BYTES, 4),
    ];
    let (f, r) = (forward(), reverse());
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &h);
    m.set(2).template(300, &bi).template(301, &plain);
    m.set(300);
    m.biflow(&bi, &f, &r, &h);
    m.biflow(&bi, &Flow { bytes: 5, ..f }, &Flow { bytes: 6, ..r }, &h);
    m.set(301).flow(&plain, &Flow { bytes: 7, ..f }, &h);
    m.finish().unwrap();
    let mut d = Decoder::default();
    let decoded = d.decode(EXPORTER, TS, &buf).unwrap();
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    assert!(decoded.data_sets().next().unwrap().template().is_biflow());
    let flows = common::flows_checked(&decoded);
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.bytes, x.tcp_flags))
            .collect::<Vec<_>>(),
        vec![
            (f.bytes, 0),
            (r.bytes, r.tcp_flags),
            (5, 0),
            (6, r.tcp_flags),
            (7, 0)
        ]
    );
}

#[test]
fn a_set_waiting_for_its_template_yields_both_halves() {
    let fields = softflowd_like();
    let (f, r) = (forward(), reverse());
    let h = header(10, 0);
    let mut data = Vec::new();
    let mut m = Message::new(&mut data, &h);
    m.set(300).biflow(&fields, &f, &r, &h);
    m.finish().unwrap();
    let mut tpl = Vec::new();
    let mut m = Message::new(&mut tpl, &Header { sequence: 1, ..h });
    m.set(2).template(300, &fields);
    m.finish().unwrap();
    let mut d = Decoder::default();
    let decoded = d.decode(EXPORTER, TS, &data).unwrap();
    assert_eq!((decoded.waiting_count(), decoded.flows().count()), (1, 0));
    let flows = decode(&mut d, &tpl);
    assert_eq!(
        flows.iter().map(|x| x.bytes).collect::<Vec<_>>(),
        vec![f.bytes, r.bytes]
    );
}

#[test]
fn a_template_that_is_not_a_biflow_one_is_read_as_before() {
    // Reverse TCP flags alone, a reverse key IE, another enterprise's IE numbered like
    // octetDeltaCount: no reverse counter, one flow a record, its counters the forward ones.
    let fields = [
        iana(FieldId::IPV4_SRC_ADDR, 4),
        iana(FieldId::IPV4_DST_ADDR, 4),
        iana(FieldId::IN_BYTES, 4),
        rev(FieldId::TCP_FLAGS, 1),
        rev(FieldId::IPV4_SRC_ADDR, 4),
        FieldSpec {
            id: FieldId::IN_BYTES,
            len: 4,
            enterprise: 9,
        },
    ];
    let (f, r) = (forward(), reverse());
    let mut d = Decoder::default();
    let flows = decode(&mut d, &message(10, 0, &fields, &[(f, r)]));
    assert_eq!(
        flows
            .iter()
            .map(|x| (x.bytes, x.tcp_flags))
            .collect::<Vec<_>>(),
        vec![(f.bytes, 0)]
    );
    let again = message(10, 1, &fields, &[(f, r)]);
    let decoded = d.decode(EXPORTER, TS, &again).unwrap();
    let set = decoded.data_sets().next().unwrap();
    assert!(!set.template().is_biflow());
    let rec = set.records().next().unwrap();
    assert_eq!(rec.reverse_flow(set.context()), None);
}
