//! Real exporter captures (softflowd, pmacct) decoded and compared with the reference decoder
//! (tshark's cflow dissector), reduced to normalized flows in `NAME.expected.jsonl`.

mod common;

use netflow_wire::{Decoder, Limits};
use serde_json::json;

/// Decodes every datagram of a capture in order with one decoder; returns canonical flow lines.
fn decode_capture(name: &str) -> Vec<String> {
    let mut decoder = Decoder::new(Limits::default());
    let mut out = Vec::new();
    for (i, d) in common::oracle(name).iter().enumerate() {
        let decoded = decoder
            .decode(d.exporter, 0, &d.payload)
            .unwrap_or_else(|e| panic!("{name} datagram {i}: {e}"));
        assert!(
            decoded.issues().is_empty(),
            "{name} datagram {i}: {:?}",
            decoded.issues()
        );
        assert!(decoded.expired().is_empty());
        common::flows_checked(&decoded);
        for set in decoded.data_sets() {
            let h = set.context().header;
            for f in set.flows() {
                let mut v = json!({
                    "exporter": f.exporter.to_string(), "version": h.version, "sequence": h.sequence,
                    "src_addr": f.src_addr.to_string(), "dst_addr": f.dst_addr.to_string(),
                    "src_port": f.src_port, "dst_port": f.dst_port, "protocol": f.protocol,
                    "bytes": f.bytes, "packets": f.packets, "input_if": f.input_if, "output_if": f.output_if,
                    "direction": f.direction, "tcp_flags": f.tcp_flags,
                });
                if h.version != 5 {
                    v["source_id"] = json!(h.source_id);
                    v["template_id"] = json!(set.key().template_id);
                }
                out.push(common::canonical(&v));
            }
        }
    }
    assert_eq!(
        decoder.pending_sets(),
        0,
        "{name}: sets still waiting for a template"
    );
    out.sort();
    out
}

fn check(name: &str) {
    let got = decode_capture(name);
    let want = common::expected(name);
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(3).collect();
        panic!(
            "{name}: {} decoded, {} expected\nmissing: {missing:#?}\nextra: {extra:#?}",
            got.len(),
            want.len()
        );
    }
}

#[test]
fn sf_v5() {
    check("sf_v5");
}

#[test]
fn sf_v5_noadjust() {
    check("sf_v5_noadjust");
}

#[test]
fn sf_v9() {
    check("sf_v9");
}

#[test]
fn sf_v9_ip6() {
    check("sf_v9_ip6");
}

#[test]
fn pm_v9() {
    check("pm_v9");
}

#[test]
fn sf_ipfix() {
    check("sf_ipfix");
}

#[test]
fn sf_ipfix_sampled() {
    check("sf_ipfix_sampled");
}

#[test]
fn pm_ipfix() {
    check("pm_ipfix");
}
