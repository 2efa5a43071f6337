//! Bounded work per hostile datagram (issue 11): decoding costs at most a constant per byte,
//! whatever the bytes. The worst datagrams found (many large templates, thousands of empty sets
//! of unknown templates, tens of thousands of empty variable-length records) are built at a
//! tenth of the largest size and at the largest size; the large one must cost about ten times
//! the small one. Work that grew with the square of the size (a set rescanned per set, a
//! record walk restarted per record) would cost a hundred times.
//!
//! This asserts a ratio of two times measured in the same run, each the fastest of several
//! runs taken in turns, not a speed: the absolute figures (ns per call on this machine, release
//! build) are printed by `cargo run --release -p netflow-benches --bin bench hostile` and kept
//! in `benches/README.md`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netflow_wire::{Decoder, Limits};

fn v9(sets: &[u8]) -> Vec<u8> {
    let mut d = vec![
        0, 9, 0, 0, 0, 0, 0, 100, 0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
    ];
    d.extend_from_slice(sets);
    d
}

fn ipfix(sets: &[u8]) -> Vec<u8> {
    let len = u16::try_from(16 + sets.len()).expect("an IPFIX message fits 64 KiB");
    let mut d = vec![0, 10];
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    d.extend_from_slice(sets);
    d
}

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut s = id.to_be_bytes().to_vec();
    s.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    s.extend_from_slice(body);
    s
}

/// `count` v9 templates of 512 fields each in one template set.
fn templates(count: u16) -> (Vec<u8>, Vec<u8>) {
    let mut body = Vec::new();
    for t in 0..count {
        body.extend_from_slice(&(256 + t).to_be_bytes());
        body.extend_from_slice(&512u16.to_be_bytes());
        for f in 0..512u16 {
            body.extend_from_slice(&(1 + (f + t) % 100).to_be_bytes());
            body.extend_from_slice(&(1 + (f + t) % 8).to_be_bytes());
        }
    }
    (Vec::new(), v9(&set(0, &body)))
}

/// `count` empty data sets of templates the decoder does not hold.
fn unknown_sets(count: u16) -> (Vec<u8>, Vec<u8>) {
    let mut sets = Vec::new();
    for i in 0..count {
        sets.extend_from_slice(&set(300 + i % 1000, &[]));
    }
    (Vec::new(), v9(&sets))
}

/// One data set of `count` empty variable-length records (template 256: ifName, 82).
fn empty_varlen_records(count: usize) -> (Vec<u8>, Vec<u8>) {
    let template = ipfix(&set(2, &[1, 0, 0, 1, 0, 82, 0xff, 0xff]));
    (template, ipfix(&set(256, &vec![0; count])))
}

/// The fastest of several decodes of `datagram` by a fresh decoder that first learned `setup`
/// (the same decoder state every time), every flow read.
fn fastest(setup: &[u8], datagram: &[u8], runs: usize) -> Duration {
    let exporter = IpAddr::from([192, 0, 2, 1]);
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let mut d = Decoder::new(Limits::default());
        if !setup.is_empty() {
            d.decode(exporter, 0, setup)
                .expect("the setup datagram decodes");
        }
        let start = Instant::now();
        if let Ok(x) = d.decode(exporter, 1, datagram) {
            x.flows().for_each(|f| {
                black_box(f);
            });
            black_box(x.issue_count());
        }
        best = best.min(start.elapsed());
    }
    best
}

#[test]
fn decoding_work_grows_linearly_with_the_datagram() {
    type Case = (&'static str, (Vec<u8>, Vec<u8>), (Vec<u8>, Vec<u8>));
    let cases: [Case; 3] = [
        ("templates of 512 fields", templates(3), templates(31)),
        (
            "empty sets of unknown templates",
            unknown_sets(1_600),
            unknown_sets(16_000),
        ),
        (
            "empty variable-length records",
            empty_varlen_records(6_500),
            empty_varlen_records(65_000),
        ),
    ];
    for (name, (small_setup, small), (large_setup, large)) in &cases {
        let grown = large.len() as f64 / small.len() as f64;
        assert!(
            (9.0..11.0).contains(&grown),
            "{name}: sizes {grown:.1}x apart"
        );
        // Runs in turns, so that a slow spell of a shared machine meets both sizes alike.
        let (mut t_small, mut t_large) = (Duration::MAX, Duration::MAX);
        for _ in 0..7 {
            t_small = t_small.min(fastest(small_setup, small, 3));
            t_large = t_large.min(fastest(large_setup, large, 1));
        }
        let ratio = t_large.as_secs_f64() / t_small.as_secs_f64();
        println!(
            "{name}: {} B in {t_small:?}, {} B in {t_large:?}: {ratio:.1}x for {grown:.1}x the bytes",
            small.len(),
            large.len()
        );
        assert!(
            ratio < 3.0 * grown,
            "{name}: {ratio:.1}x the time for {grown:.1}x the bytes ({t_small:?} -> {t_large:?}): \
             work grows faster than the datagram"
        );
    }
}
