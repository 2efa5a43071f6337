//! Malformed input: each case gets its typed error, nothing panics, and the decoder keeps
//! decoding later datagrams correctly.

use std::net::{IpAddr, Ipv4Addr};

use netflow_wire::{DecodeError, Decoder, ExceededLimit, Limits, TemplateProblem};

const EXP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

#[rustfmt::skip]
fn v9_header(count: u16) -> Vec<u8> {
    let mut p = vec![0, 9];
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x27, 0x10,   // sys_uptime
                          0x65, 0x92, 0, 0,   // unix_secs
                          0, 0, 0, 1,         // sequence
                          0, 0, 0, 0]);       // source id
    p
}

/// Template 256: IPV4_SRC_ADDR/4, IPV4_DST_ADDR/4, IN_BYTES/4 (record length 12).
#[rustfmt::skip]
const TEMPLATE_SET: [u8; 20] = [
    0, 0, 0, 20,         // template flowset, length 20
    1, 0, 0, 3,          // template 256, 3 fields
    0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4,
];

#[rustfmt::skip]
const DATA_SET: [u8; 16] = [
    1, 0, 0, 16,         // data flowset 256, length 16
    10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 1, 0,   // one record: 256 bytes
];

/// A v9 packet with only the data set: its template must come from elsewhere.
fn data_only() -> Vec<u8> {
    let mut p = v9_header(1);
    p.extend_from_slice(&DATA_SET);
    p
}

fn good_packet() -> Vec<u8> {
    let mut p = v9_header(2);
    p.extend_from_slice(&TEMPLATE_SET);
    p.extend_from_slice(&DATA_SET);
    p
}

/// After any malformed datagram, a good one still decodes to exactly one flow.
fn still_works(d: &mut Decoder) {
    let p = good_packet();
    let decoded = d.decode(EXP, 0, &p).unwrap();
    assert_eq!(
        decoded.flows().map(|f| f.bytes).collect::<Vec<_>>(),
        vec![256]
    );
}

fn issues(d: &mut Decoder, p: &[u8]) -> Vec<DecodeError> {
    d.decode(EXP, 0, p)
        .map(|x| x.issues().to_vec())
        .unwrap_or_else(|e| vec![e])
}

#[test]
fn truncated_headers() {
    let mut d = Decoder::default();
    let p = good_packet();
    assert_eq!(
        issues(&mut d, &[]),
        vec![DecodeError::Truncated {
            offset: 0,
            needed: 2
        }]
    );
    assert_eq!(
        issues(&mut d, &p[..1]),
        vec![DecodeError::Truncated {
            offset: 0,
            needed: 1
        }]
    );
    assert_eq!(
        issues(&mut d, &p[..19]),
        vec![DecodeError::Truncated {
            offset: 0,
            needed: 1
        }]
    );
    assert_eq!(
        issues(&mut d, &[0, 5, 0, 0]),
        vec![DecodeError::Truncated {
            offset: 0,
            needed: 20
        }]
    );
    assert_eq!(
        issues(&mut d, &[0, 10, 0, 16, 0, 0]),
        vec![DecodeError::Truncated {
            offset: 0,
            needed: 10
        }]
    );
    assert_eq!(issues(&mut d, &[0, 7, 0, 0]), vec![DecodeError::Version(7)]);
    still_works(&mut d);
}

#[test]
fn truncated_records_every_cut() {
    let p = good_packet();
    for cut in 20..p.len() {
        let mut d = Decoder::default();
        let out = issues(&mut d, &p[..cut]);
        // Cut inside a set header (< 4 bytes left) is padding; anything else is a bad set length.
        let left_in_set = if cut >= 40 { cut - 40 } else { cut - 20 };
        if left_in_set >= 4 {
            assert!(
                matches!(out[..], [DecodeError::BadSetLength { .. }]),
                "cut {cut}: {out:?}"
            );
        } else {
            assert!(out.is_empty(), "cut {cut}: {out:?}");
        }
        still_works(&mut d);
    }
}

#[test]
fn flowset_lengths_0_1_3_and_too_long() {
    for len in [0u16, 1, 3, 21, 400] {
        let mut p = v9_header(1);
        p.extend_from_slice(&TEMPLATE_SET);
        p[22..24].copy_from_slice(&len.to_be_bytes());
        let mut d = Decoder::default();
        let got = issues(&mut d, &p);
        assert_eq!(
            got,
            vec![DecodeError::BadSetLength {
                offset: 20,
                set_id: 0,
                length: len,
                remaining: 20
            }],
            "length {len}"
        );
        assert!(d.cache().is_empty());
        still_works(&mut d);
    }
}

#[test]
fn sets_before_a_broken_one_are_kept() {
    let mut p = good_packet();
    p.extend_from_slice(&[1, 0, 0, 0]); // a third set with length 0
    let mut d = Decoder::default();
    let decoded = d.decode(EXP, 0, &p).unwrap();
    assert_eq!(decoded.flows().count(), 1);
    assert!(matches!(
        decoded.issues(),
        [DecodeError::BadSetLength {
            offset: 56,
            length: 0,
            ..
        }]
    ));
}

#[test]
fn template_with_zero_fields() {
    let mut p = v9_header(1);
    p.extend_from_slice(&[0, 0, 0, 8, 1, 0, 0, 0]);
    let mut d = Decoder::default();
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadTemplate {
            offset: 24,
            template_id: 256,
            why: TemplateProblem::NoFields
        }]
    );
    still_works(&mut d);
}

#[test]
fn template_with_huge_field_count() {
    let mut p = v9_header(1);
    p.extend_from_slice(&[0, 0, 0, 12, 1, 0, 0xff, 0xff, 0, 8, 0, 4]);
    let mut d = Decoder::default();
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadTemplate {
            offset: 24,
            template_id: 256,
            why: TemplateProblem::TooManyFields(65535)
        }]
    );
    // Within the limit but longer than the set: truncated.
    let mut p = v9_header(1);
    p.extend_from_slice(&[0, 0, 0, 12, 1, 0, 0, 9, 0, 8, 0, 4]);
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadTemplate {
            offset: 24,
            template_id: 256,
            why: TemplateProblem::Truncated
        }]
    );
    still_works(&mut d);
}

#[test]
fn field_length_zero() {
    let mut p = v9_header(1);
    p.extend_from_slice(&[0, 0, 0, 16, 1, 0, 0, 2, 0, 8, 0, 4, 0, 1, 0, 0]);
    let mut d = Decoder::default();
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadTemplate {
            offset: 24,
            template_id: 256,
            why: TemplateProblem::ZeroLengthField(1)
        }]
    );
    still_works(&mut d);
}

#[test]
fn reserved_template_ids_and_set_ids() {
    let mut p = v9_header(1);
    p.extend_from_slice(&[0, 0, 0, 12, 0, 200, 0, 1, 0, 8, 0, 4]);
    p.extend_from_slice(&[0, 7, 0, 4]);
    let mut d = Decoder::default();
    assert_eq!(
        issues(&mut d, &p),
        vec![
            DecodeError::BadTemplate {
                offset: 24,
                template_id: 200,
                why: TemplateProblem::ReservedId
            },
            DecodeError::ReservedSetId {
                offset: 32,
                set_id: 7
            },
        ]
    );
    still_works(&mut d);
}

#[test]
fn record_counts_that_lie() {
    // v9: the header count is informational; a lie changes nothing.
    let mut p = good_packet();
    p[2..4].copy_from_slice(&500u16.to_be_bytes());
    let mut d = Decoder::default();
    assert_eq!(d.decode(EXP, 0, &p).unwrap().flows().count(), 1);
    // v5: a count past the datagram is an error, more than 30 too.
    let mut v5 = vec![0u8; 24 + 48];
    v5[1] = 5;
    v5[3] = 2;
    assert!(matches!(
        issues(&mut d, &v5)[..],
        [DecodeError::BadLength {
            offset: 2,
            declared: 120,
            actual: 72
        }]
    ));
    v5[3] = 31;
    assert_eq!(issues(&mut d, &v5), vec![DecodeError::TooManyRecords(31)]);
    still_works(&mut d);
}

#[test]
fn ipfix_length_that_lies() {
    let mut d = Decoder::default();
    let mut p = vec![0, 10, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadLength {
            offset: 2,
            declared: 200,
            actual: 16
        }]
    );
    p[3] = 8;
    assert_eq!(
        issues(&mut d, &p),
        vec![DecodeError::BadLength {
            offset: 2,
            declared: 8,
            actual: 16
        }]
    );
    still_works(&mut d);
}

#[test]
fn trailing_bytes_in_a_data_set_are_reported_but_records_kept() {
    let mut p = v9_header(2);
    p.extend_from_slice(&TEMPLATE_SET);
    p.extend_from_slice(&[1, 0, 0, 22]);
    p.extend_from_slice(&DATA_SET[4..]);
    p.extend_from_slice(&[0xde, 0xad, 0, 0, 0, 0]);
    let mut d = Decoder::default();
    let decoded = d.decode(EXP, 0, &p).unwrap();
    assert_eq!(decoded.flows().count(), 1);
    assert_eq!(
        decoded.issues(),
        &[DecodeError::TrailingBytes {
            offset: 56,
            template_id: 256,
            length: 6
        }]
    );
    // Zero padding is silent.
    p[56] = 0;
    p[57] = 0;
    let decoded = d.decode(EXP, 0, &p).unwrap();
    assert!(decoded.issues().is_empty());
}

#[test]
fn template_limit_is_an_error_not_growth() {
    let limits = Limits {
        max_templates_per_exporter: 3,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    for id in 256u16..266 {
        let mut p = v9_header(1);
        p.extend_from_slice(&[0, 0, 0, 12]);
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 8, 0, 4]);
        let got = issues(&mut d, &p);
        if id < 259 {
            assert!(got.is_empty());
        } else {
            assert!(matches!(
                got[..],
                [DecodeError::LimitExceeded {
                    limit: ExceededLimit::TemplatesPerExporter,
                    max: 3,
                    ..
                }]
            ));
        }
    }
    assert_eq!(d.cache().len(), 3);
}

#[test]
fn data_before_template_is_kept_then_decoded() {
    let mut d = Decoder::default();
    let data_only = data_only();
    let decoded = d.decode(EXP, 1_000, &data_only).unwrap();
    assert_eq!(decoded.flows().count(), 0);
    // Waiting is not an error.
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    assert!(matches!(decoded.waiting(), [w] if w.offset == 20 && w.key.template_id == 256));
    assert_eq!(d.pending_sets(), 1);
    // The template arrives: the pending set is decoded, stamped with its own receive time.
    let mut tpl = v9_header(1);
    tpl.extend_from_slice(&TEMPLATE_SET);
    let decoded = d.decode(EXP, 2_000, &tpl).unwrap();
    let flows: Vec<_> = decoded.flows().collect();
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].ts_micros, flows[0].bytes), (1_000, 256));
    assert_eq!(d.pending_sets(), 0);
}

#[test]
fn pending_sets_expire_with_their_key() {
    let limits = Limits {
        max_pending_age_micros: 10,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    let data_only = data_only();
    d.decode(EXP, 100, &data_only).unwrap();
    let expired = d.expire(200).to_vec();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (
            expired[0].key.template_id,
            expired[0].bytes,
            expired[0].received_micros
        ),
        (256, 12, 100)
    );
    assert_eq!(d.pending_sets(), 0);
}

#[test]
fn pending_buffer_is_bounded() {
    let limits = Limits {
        max_pending_sets: 2,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    let data_only = data_only();
    let mut evicted = 0;
    for t in 0..10 {
        evicted += d.decode(EXP, t, &data_only).unwrap().expired().len();
    }
    assert_eq!((d.pending_sets(), evicted), (2, 8));
    let limits = Limits {
        max_pending_bytes: 4,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    assert!(matches!(
        issues(&mut d, &data_only)[..],
        [DecodeError::PendingDropped { bytes: 12, .. }]
    ));
}

#[test]
fn templates_are_scoped_by_exporter_and_source_id() {
    let mut d = Decoder::default();
    d.decode(EXP, 0, &good_packet()).unwrap();
    let mut data_only = data_only();
    let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    assert!(matches!(issues(&mut d, &data_only)[..], []));
    let decoded = d.decode(other, 0, &data_only).unwrap();
    assert_eq!(decoded.flows().count(), 0);
    data_only[19] = 9; // source id 9
    let decoded = d.decode(EXP, 0, &data_only).unwrap();
    assert_eq!(decoded.flows().count(), 0);
}

/// Issue 13, item 3: an exporter evicted from the full cache takes its pending sets with it,
/// reported as lost; the new exporter's templates are admitted.
#[test]
fn an_evicted_exporter_takes_its_pending_sets() {
    let limits = Limits {
        max_exporters: 1,
        ..Limits::default()
    };
    let mut d = Decoder::new(limits);
    d.decode(EXP, 0, &good_packet()).unwrap();
    // Data for a template EXP never sent: pending.
    let mut other_template = data_only();
    other_template[20..22].copy_from_slice(&300u16.to_be_bytes());
    d.decode(EXP, 1, &other_template).unwrap();
    assert_eq!(d.pending_sets(), 1);
    let newcomer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
    let good = good_packet();
    let decoded = d.decode(newcomer, 2, &good).unwrap();
    assert_eq!(decoded.flows().count(), 1);
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    let expired = decoded.expired().to_vec();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (
            expired[0].key.exporter.addr,
            expired[0].key.template_id,
            expired[0].reason
        ),
        (
            EXP,
            300,
            netflow_wire::pending::ExpiryReason::ExporterEvicted
        )
    );
    assert_eq!((d.pending_sets(), d.exporters_evicted()), (0, 1));
    // EXP's templates went: its data now waits.
    let data = data_only();
    assert_eq!(d.decode(EXP, 3, &data).unwrap().waiting().len(), 1);
}
