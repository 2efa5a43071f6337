//! Edges of RFC 3954 (v9) and RFC 7011 (IPFIX) that exporters other than ours hit, on minimal
//! hand-made packets: each is decoded, or refused with its typed error, never a panic, and the
//! rest of the datagram is still decoded.

use std::net::{IpAddr, Ipv4Addr};

use netflow_wire::{DecodeError, Decoder, Limits, TemplateProblem};

const EXP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

#[rustfmt::skip]
fn v9_header(count: u16) -> Vec<u8> {
    let mut p = vec![0, 9];
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x27, 0x10,   // sys_uptime 10,000 ms
                          0x65, 0x92, 0, 0,   // unix_secs
                          0, 0, 0, 1,         // sequence
                          0, 0, 0, 0]);       // source id
    p
}

/// IPFIX message header; the length is patched by [`ipfix_done`].
#[rustfmt::skip]
fn ipfix_header() -> Vec<u8> {
    vec![0, 10, 0, 0,         // version, length (patched)
         0x65, 0x92, 0, 0,    // export time
         0, 0, 0, 0,          // sequence
         0, 0, 0, 7]          // observation domain
}

fn ipfix_done(mut p: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(p.len()).unwrap().to_be_bytes();
    p[2..4].copy_from_slice(&len);
    p
}

/// v9 template 256: IPV4_SRC_ADDR/4, IPV4_DST_ADDR/4, IN_BYTES/4; then one data record.
#[rustfmt::skip]
const V9_TEMPLATE_AND_DATA: [u8; 36] = [
    0, 0, 0, 20,                            // template flowset, length 20
    1, 0, 0, 3,                             // template 256, 3 fields
    0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4,
    1, 0, 0, 16,                            // data flowset 256, length 16
    10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 1, 0,   // 10.0.0.1 -> 10.0.0.2, 256 bytes
];

/// IPFIX template 300: sourceIPv4Address/4, destinationIPv4Address/4, octetDeltaCount/4; then
/// one data record.
#[rustfmt::skip]
const IPFIX_TEMPLATE_AND_DATA: [u8; 36] = [
    0, 2, 0, 20,                            // template set, length 20
    1, 44, 0, 3,                            // template 300, 3 fields
    0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4,
    1, 44, 0, 16,                           // data set 300, length 16
    10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 1, 0,   // 10.0.0.1 -> 10.0.0.2, 256 bytes
];

fn bytes_and_issues(d: &mut Decoder, p: &[u8]) -> (Vec<u64>, Vec<DecodeError>) {
    let decoded = d.decode(EXP, 0, p).expect("header is fine");
    (
        decoded.flows().map(|f| f.bytes).collect(),
        decoded.issues().to_vec(),
    )
}

#[test]
fn v9_options_template_with_scope_length_0_is_accepted_as_exporter_wide() {
    // RFC 3954 §6.1 does not require a scope field; an options template without one (scope
    // length 0) describes the exporter as a whole. Its SAMPLING_INTERVAL applies, so the flows
    // are renormalized instead of being 1/N of the traffic.
    let mut p = v9_header(3);
    #[rustfmt::skip]
    p.extend_from_slice(&[
        0, 1, 0, 16,        // options template flowset, length 16
        1, 1, 0, 0, 0, 4,   // template 257, scope length 0, option length 4
        0, 34, 0, 4,        // SAMPLING_INTERVAL/4
        0, 0,               // padding
        1, 1, 0, 8,         // options data flowset 257, length 8
        0, 0, 0, 100,       // 1 in 100
    ]);
    p.extend_from_slice(&V9_TEMPLATE_AND_DATA);
    let mut d = Decoder::new(Limits::default());
    let decoded = d.decode(EXP, 0, &p).expect("header is fine");
    assert_eq!(decoded.issues(), &[] as &[DecodeError]);
    let flows: Vec<_> = decoded.flows().collect();
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].bytes, flows[0].sampling_interval), (256, 100));
    // Scope and option lengths both 0 describe nothing: refused, the rest still decodes.
    let mut p = v9_header(2);
    #[rustfmt::skip]
    p.extend_from_slice(&[
        0, 1, 0, 12,        // options template flowset, length 12
        1, 2, 0, 0, 0, 0,   // template 258, scope length 0, option length 0
        0, 0,               // padding
    ]);
    p.extend_from_slice(&V9_TEMPLATE_AND_DATA);
    let mut d = Decoder::new(Limits::default());
    let (flows, issues) = bytes_and_issues(&mut d, &p);
    assert_eq!(flows, vec![256]);
    assert_eq!(
        issues,
        vec![DecodeError::BadTemplate {
            offset: 24,
            template_id: 258,
            why: TemplateProblem::BadScope
        }]
    );
}

#[test]
fn ipfix_options_template_with_scope_count_0_is_a_typed_error() {
    // RFC 7011 §3.4.2.2: "The Scope Field Count MUST NOT be zero."
    let mut p = ipfix_header();
    #[rustfmt::skip]
    p.extend_from_slice(&[
        0, 3, 0, 16,        // options template set, length 16
        1, 45, 0, 1, 0, 0,  // template 301, 1 field, scope count 0
        1, 50, 0, 4,        // samplingPacketInterval/4
        0, 0,               // padding
    ]);
    p.extend_from_slice(&IPFIX_TEMPLATE_AND_DATA);
    let p = ipfix_done(p);
    let mut d = Decoder::new(Limits::default());
    let (flows, issues) = bytes_and_issues(&mut d, &p);
    assert_eq!(flows, vec![256]);
    assert_eq!(
        issues,
        vec![DecodeError::BadTemplate {
            offset: 20,
            template_id: 301,
            why: TemplateProblem::BadScope
        }]
    );
}

#[test]
fn ipfix_template_with_a_zero_length_field_is_a_typed_error() {
    // A field of length 0 carries no value (RFC 7011 §3.2 reserves only 65535, for variable
    // length). The template is refused with its field named; the template beside it in the same
    // set is still learned and its data decoded.
    let mut p = ipfix_header();
    #[rustfmt::skip]
    p.extend_from_slice(&[
        0, 2, 0, 32,                            // template set, length 32
        1, 46, 0, 2, 0, 8, 0, 4, 0, 7, 0, 0,    // template 302: 8/4, 7/0
        1, 44, 0, 3,                            // template 300, 3 fields
        0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4,
        1, 44, 0, 16,                           // data set 300
        10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 1, 0,
        1, 46, 0, 8, 10, 0, 0, 9,               // data set 302: never decoded
    ]);
    let p = ipfix_done(p);
    let mut d = Decoder::new(Limits::default());
    let (flows, issues) = bytes_and_issues(&mut d, &p);
    assert_eq!(flows, vec![256]);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(
        issues[0],
        DecodeError::BadTemplate {
            offset: 20,
            template_id: 302,
            why: TemplateProblem::ZeroLengthField(7)
        }
    );
    // The set of the refused template waits for a template that never comes: kept pending,
    // not an error.
    let waiting = d.decode(EXP, 0, &p).unwrap().waiting().to_vec();
    assert!(
        matches!(waiting[..], [w] if w.key.template_id == 302),
        "{waiting:?}"
    );
}

#[test]
fn v9_header_count_is_never_relied_on() {
    // Exporters fill `count` in different ways (records of all kinds, flowsets, flows only,
    // or 0): any value decodes the same.
    for count in [0u16, 1, 2, 3, 30, u16::MAX] {
        let mut p = v9_header(count);
        p.extend_from_slice(&V9_TEMPLATE_AND_DATA);
        let mut d = Decoder::new(Limits::default());
        let (flows, issues) = bytes_and_issues(&mut d, &p);
        assert_eq!((flows, issues), (vec![256], vec![]), "count {count}");
    }
}

/// Start and end (Unix ms) of the one flow of an IPFIX message with one template of the
/// two addresses, IN_BYTES and `time_fields` (4 bytes each) whose values are `values`.
fn ipfix_times(time_fields: &[u16], values: &[u32]) -> (u64, u64) {
    let n = u16::try_from(3 + time_fields.len()).unwrap();
    let mut p = ipfix_header();
    p.extend_from_slice(&[0, 2]);
    p.extend_from_slice(&(8 + 4 * n).to_be_bytes());
    p.extend_from_slice(&[1, 47]);
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4]);
    for id in time_fields {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0, 4]);
    }
    p.extend_from_slice(&[1, 47]);
    p.extend_from_slice(&(4 + 4 * n).to_be_bytes());
    p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 1, 0]);
    for v in values {
        p.extend_from_slice(&v.to_be_bytes());
    }
    let p = ipfix_done(p);
    let mut d = Decoder::new(Limits::default());
    let decoded = d.decode(EXP, 0, &p).expect("header is fine");
    assert_eq!(decoded.issues(), &[] as &[DecodeError]);
    let flows: Vec<_> = decoded.flows().collect();
    assert_eq!(flows.len(), 1);
    (flows[0].start_ms, flows[0].end_ms)
}

#[test]
fn ipfix_delta_times_and_durations() {
    // RFC 7012: flowStartDeltaMicroseconds/flowEndDeltaMicroseconds (158/159) are µs before
    // the message's export time; flowDurationMilliseconds/Microseconds (161/162) are end
    // minus start and give the time the template lacks.
    let export_ms = 0x6592_0000u64 * 1000;
    assert_eq!(
        ipfix_times(&[158, 159], &[2_000_000, 1_000_000]),
        (export_ms - 2_000, export_ms - 1_000)
    );
    // A start and a duration give the end (ms, then µs).
    assert_eq!(
        ipfix_times(&[158, 161], &[5_000_000, 1_500]),
        (export_ms - 5_000, export_ms - 3_500)
    );
    assert_eq!(
        ipfix_times(&[158, 162], &[5_000_000, 2_500_000]),
        (export_ms - 5_000, export_ms - 2_500)
    );
    // An end and a duration give the start.
    assert_eq!(
        ipfix_times(&[159, 161], &[1_000_000, 4_000]),
        (export_ms - 5_000, export_ms - 1_000)
    );
    // Both times present: the duration is not needed and does not override them.
    assert_eq!(
        ipfix_times(&[158, 159, 161], &[2_000_000, 1_000_000, 99_999]),
        (export_ms - 2_000, export_ms - 1_000)
    );
    // A duration alone gives no time.
    assert_eq!(ipfix_times(&[161], &[1_000]), (0, 0));
    // Absolute times win over deltas when a template has both.
    assert_eq!(
        ipfix_times(&[150, 158], &[1_700_000_000, 2_000_000]),
        (1_700_000_000_000, 0)
    );
}
