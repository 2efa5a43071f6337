//! Parser throughput: netflow-wire against netflow_parser and netgauze-flow-pkt on the same
//! packets. Each contender is checked outside the timed loop to produce the same totals as ours.
//! Run: `cargo bench -p netflow-benches --bench parser`.
//!
//! * `realistic/<case>`: the workload of issue 11: 16 distinct datagrams cycled (one iteration
//!   decodes all 16), the 14-field template, IPFIX reduced-size, IPFIX IPv6 with ms times and
//!   8-byte counters, 70/25/5 % TCP/UDP/ICMP with heavy-tailed counters, every flow consumed
//!   whole (`black_box`).
//! * `decode/<case>` (the old figure): one packet of the 19-field template decoded again and
//!   again, nine fields of each record summed.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netflow_benches::contenders::{Contender, NetflowParserCrate, Netgauze, Ours};
use netflow_benches::inputs::{self, RECORDS};

fn cases() -> Vec<(&'static str, u16, Vec<u8>, Vec<u8>)> {
    let (t9, d9) = inputs::templated_packets(9, false);
    let (t96, d96) = inputs::templated_packets(9, true);
    let (t10, d10) = inputs::templated_packets(10, false);
    vec![
        ("v5", 5, Vec::new(), inputs::v5_packet()),
        ("v9-ipv4", 9, t9, d9),
        ("v9-ipv6", 9, t96, d96),
        ("ipfix-ipv4", 10, t10, d10),
    ]
}

fn bench_one<C: Contender>(c: &mut Criterion, name: &str, version: u16, tpl: &[u8], data: &[u8]) {
    if !C::supports(version) {
        return;
    }
    let mut dec = C::new();
    if !tpl.is_empty() {
        dec.decode(tpl);
    }
    // Verified outside the timed loop: every record decoded with the same values as ours.
    let mut reference = Ours::new();
    reference.decode(tpl);
    let want = reference.decode(data);
    assert_eq!(want.flows, RECORDS as u64);
    assert_eq!(dec.decode(data), want, "{} on {name}", C::NAME);
    let mut g = c.benchmark_group(format!("decode/{name}"));
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
        b.iter(|| black_box(dec.decode(black_box(data))))
    });
    g.finish();
}

fn realistic<C: Contender>(c: &mut Criterion, w: &inputs::Workload) {
    if !C::supports(w.version) {
        return;
    }
    let sum = |dec: &mut dyn FnMut(&[u8]) -> netflow_benches::Totals| {
        let mut t = netflow_benches::Totals::default();
        for d in &w.data {
            let x = dec(d);
            t.flows += x.flows;
            t.bytes += x.bytes;
            t.packets += x.packets;
            t.mix += x.mix;
        }
        t
    };
    let mut reference = Ours::new();
    reference.decode_whole(&w.template);
    let want = sum(&mut |d| reference.decode_whole(d));
    assert_eq!(want.flows, (w.records * w.data.len()) as u64);
    let mut dec = C::new();
    dec.decode_whole(&w.template);
    assert_eq!(
        sum(&mut |d| dec.decode_whole(d)),
        want,
        "{} on {}",
        C::NAME,
        w.name
    );
    let mut g = c.benchmark_group(format!("realistic/{}", w.name.replace(' ', "-")));
    g.throughput(Throughput::Elements((w.records * w.data.len()) as u64));
    g.bench_function(BenchmarkId::from_parameter(C::NAME), |b| {
        b.iter(|| {
            for d in &w.data {
                black_box(dec.decode_whole(black_box(d)));
            }
        })
    });
    g.finish();
}

fn parser(c: &mut Criterion) {
    for w in inputs::realistic() {
        realistic::<Ours>(c, &w);
        realistic::<NetflowParserCrate>(c, &w);
        realistic::<Netgauze>(c, &w);
    }
    for (name, version, tpl, data) in cases() {
        bench_one::<Ours>(c, name, version, &tpl, &data);
        bench_one::<NetflowParserCrate>(c, name, version, &tpl, &data);
        bench_one::<Netgauze>(c, name, version, &tpl, &data);
    }
}

criterion_group!(benches, parser);
criterion_main!(benches);
