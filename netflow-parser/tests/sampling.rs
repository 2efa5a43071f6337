//! Options data: sampling rates (v5 header, v9 options, IPFIX options, per-sampler), the
//! per-exporter override, IPFIX system init time, interface names; sequence tracking on the
//! real captures.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use netflow_wire::{
    Decoder, Flow, Limits,
    options::DomainKey,
    sequence::{SequenceAdvance, SequenceTracker},
};

/// Every flow of a capture, decoded in order with one decoder.
fn flows(name: &str, decoder: &mut Decoder) -> Vec<Flow> {
    let mut out = Vec::new();
    for d in common::oracle(name) {
        let decoded = decoder.decode(d.exporter, 0, &d.payload).unwrap();
        out.extend(common::flows_checked(&decoded));
    }
    out
}

/// What input-traffic.pcap carried (captures/README.md): IPv4 + IPv6 bytes.
const TRUE_BYTES: u64 = 3_315_918 + 1_906_811;

#[test]
fn ipfix_sampling_from_options_renormalizes_to_the_true_traffic() {
    let mut d = Decoder::default();
    let fl = flows("sf_ipfix_sampled", &mut d);
    assert_eq!(fl.len(), 686);
    // softflowd -s 10 announces samplingPacketInterval 1, samplingPacketSpace 9: 1 in 10.
    assert!(
        fl.iter().all(|f| f.sampling_interval == 10),
        "{:?}",
        fl.iter()
            .map(|f| f.sampling_interval)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let raw: u64 = fl.iter().map(|f| f.bytes).sum();
    let renormalized: u64 = fl.iter().map(|f| f.renormalized().bytes).sum();
    assert_eq!(renormalized, raw * 10);
    let error = (renormalized as f64 - TRUE_BYTES as f64).abs() / TRUE_BYTES as f64;
    assert!(
        error < 0.10,
        "renormalized {renormalized} vs true {TRUE_BYTES}: {:.1}% off",
        error * 100.0
    );
    // Unsampled captures stay at 1.
    let mut d = Decoder::default();
    assert!(
        flows("sf_ipfix", &mut d)
            .iter()
            .all(|f| f.sampling_interval == 1)
    );
}

#[test]
fn override_wins_for_devices_that_do_not_announce() {
    let mut d = Decoder::default();
    d.set_sampling_override(IpAddr::V4(Ipv4Addr::LOCALHOST), Some(100));
    assert!(
        flows("sf_v9", &mut d)
            .iter()
            .all(|f| f.sampling_interval == 100)
    );
    assert!(
        flows("sf_v5", &mut d)
            .iter()
            .all(|f| f.sampling_interval == 100)
    );
    d.set_sampling_override(IpAddr::V4(Ipv4Addr::LOCALHOST), None);
    assert!(
        flows("sf_v9", &mut d)
            .iter()
            .all(|f| f.sampling_interval == 1)
    );
}

#[test]
fn ipfix_uptime_times_use_the_announced_system_init_time() {
    let mut d = Decoder::default();
    let fl = flows("sf_ipfix", &mut d);
    let key = DomainKey {
        exporter: IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
        version: 10,
        domain: 0,
    };
    let init = d
        .domain_options(&key)
        .and_then(|i| i.system_init_ms)
        .unwrap();
    assert_eq!(init, 1_704_067_200_023);
    // The capture spans 115 s from 2024-01-01 00:00:00 UTC; every flow lies inside it once the
    // options record has been seen (the first datagram carries it).
    for f in &fl {
        assert!(
            f.start_ms >= init && f.end_ms >= f.start_ms && f.end_ms <= init + 120_000,
            "{f:?}"
        );
    }
    // v9: the same flows, from sysUptime in the header.
    let mut d9 = Decoder::default();
    let v9 = flows("sf_v9", &mut d9);
    let (mut a, mut b): (Vec<_>, Vec<_>) = (
        fl.iter().map(|f| (f.start_ms, f.end_ms)).collect(),
        v9.iter().map(|f| (f.start_ms, f.end_ms)).collect(),
    );
    a.sort();
    b.sort();
    assert_eq!(a.len(), b.len());
    // Both exporters' clocks agree within a second.
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.0.abs_diff(y.0) <= 1000),
        "{:?} vs {:?}",
        &a[..3],
        &b[..3]
    );
}

#[test]
fn interface_names_from_v9_options() {
    let mut d = Decoder::default();
    flows("sf_v9", &mut d);
    let key = DomainKey {
        exporter: IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
        version: 9,
        domain: 0,
    };
    let info = d.domain_options(&key).unwrap();
    assert_eq!(
        info.interfaces.get(&0).map(|n| n.name.as_str()),
        Some("input/traffic.pc")
    );
    assert_eq!(info.sampling_interval, Some(1));
}

#[test]
fn sequence_numbers_of_real_exporters_show_no_loss() {
    for name in [
        "sf_v5",
        "sf_v9",
        "pm_v9",
        "sf_ipfix",
        "pm_ipfix",
        "sf_ipfix_sampled",
    ] {
        let mut d = Decoder::new(Limits::default());
        let mut t = SequenceTracker::default();
        for dg in common::oracle(name) {
            let decoded = d.decode(dg.exporter, 0, &dg.payload).unwrap();
            t.observe_decoded(&decoded);
        }
        for (k, s) in t.iter() {
            assert_eq!(
                (s.lost, s.late, s.duplicates, s.resets),
                (0, 0, 0, 0),
                "{name} {k:?}: {s:?}"
            );
            assert!(s.received > 0);
        }
    }
}

#[test]
fn a_missing_datagram_is_counted_as_exactly_its_records() {
    for name in ["sf_v9", "pm_v9", "sf_ipfix", "pm_ipfix", "sf_v5"] {
        let datagrams = common::oracle(name);
        let mut d = Decoder::new(Limits::default());
        let mut t = SequenceTracker::default();
        let mut dropped = 0u64;
        for (i, dg) in datagrams.iter().enumerate() {
            let decoded = d.decode(dg.exporter, 0, &dg.payload).unwrap();
            if i == 20 {
                // Lost on the way: what it would have counted for.
                let h = decoded.header();
                dropped = u64::from(
                    SequenceAdvance::of(&h, decoded.data_records(), decoded.options_records()).all,
                );
                continue;
            }
            t.observe_decoded(&decoded);
        }
        let (_, s) = t.iter().next().unwrap();
        assert_eq!(s.lost, dropped, "{name}: {s:?}");
        assert_eq!(s.sent(), s.received + dropped);
    }
}

/// v9 options data built with the encoder: a per-sampler rate referenced by data records, and
/// interface names, bounded however many an exporter announces.
#[cfg(feature = "emit")]
#[test]
fn per_sampler_rates_and_bounded_interface_names() {
    use netflow_wire::emit::Message;
    use netflow_wire::{FieldId, Header, template::FieldSpec};
    let h = Header {
        version: 9,
        sys_uptime_ms: Some(1),
        export_secs: 1_700_000_000,
        ..Header::default()
    };
    // Options template 300: scope System (1)/4; FLOW_SAMPLER_ID/2, FLOW_SAMPLER_RANDOM_INTERVAL/4.
    let sampler_opts = [
        FieldSpec::new(FieldId(1), 4),
        FieldSpec::new(FieldId::FLOW_SAMPLER_ID, 2),
        FieldSpec::new(FieldId::FLOW_SAMPLER_RANDOM_INTERVAL, 4),
    ];
    // Options template 301: scope Interface (2)/4; IF_NAME/16.
    let if_opts = [
        FieldSpec::new(FieldId(2), 4),
        FieldSpec::new(FieldId::IF_NAME, 16),
    ];
    let data = [
        FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4),
        FieldSpec::new(FieldId::IPV4_DST_ADDR, 4),
        FieldSpec::new(FieldId::IN_BYTES, 4),
        FieldSpec::new(FieldId::FLOW_SAMPLER_ID, 2),
    ];
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &h);
    m.set(1)
        .options_template(300, 1, &sampler_opts)
        .options_template(301, 1, &if_opts);
    m.set(0).template(256, &data);
    m.set(300);
    for (id, rate) in [(1u64, 100u64), (2, 1000)] {
        m.uint(&sampler_opts[0], 0)
            .uint(&sampler_opts[1], id)
            .uint(&sampler_opts[2], rate)
            .end_record();
    }
    m.set(301);
    for ifindex in 0..3000u64 {
        m.uint(&if_opts[0], ifindex)
            .bytes(&if_opts[1], format!("ge-0/0/{ifindex}").as_bytes())
            .end_record();
    }
    m.set(256);
    for sampler in [1u64, 2, 3] {
        m.bytes(&data[0], &[10, 0, 0, 1])
            .bytes(&data[1], &[10, 0, 0, 2])
            .uint(&data[2], 50)
            .uint(&data[3], sampler)
            .end_record();
    }
    m.finish().unwrap();
    let mut d = Decoder::default();
    let exporter = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let decoded = d.decode(exporter, 0, &buf).unwrap();
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    // Samplers 1 and 2 have their rates; sampler 3 is unknown: the domain has no single rate.
    let rates: Vec<u32> = decoded.flows().map(|f| f.sampling_interval).collect();
    assert_eq!(rates, vec![100, 1000, 1]);
    assert_eq!(
        (decoded.data_records(), decoded.options_records()),
        (3, 3002)
    );
    let info = d
        .domain_options(&DomainKey {
            exporter: exporter.into(),
            version: 9,
            domain: 0,
        })
        .unwrap();
    assert_eq!(info.interfaces.len(), 3000);
    assert_eq!(info.interfaces[&2999].name, "ge-0/0/2999");
    // Many more exporters announcing names: the total stays bounded.
    for i in 0..40u8 {
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 3, i));
        d.decode(other, 0, &buf).unwrap();
    }
    let total: usize = d.domains().map(|(_, i)| i.interfaces.len()).sum();
    assert!(total <= 65_536, "{total}");
}
