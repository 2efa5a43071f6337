//! Bounded work per hostile datagram (issue 11): decoding costs at most a constant per byte,
//! whatever the bytes. The worst datagrams found (many large templates, thousands of empty sets
//! of unknown templates, tens of thousands of empty variable-length records) are built at a
//! tenth of the largest size and at the largest size; the large one must cost about ten times
//! the small one. Work that grew with the square of the size (a set rescanned per set, a
//! record walk restarted per record) would cost a hundred times.
//!
//! And on 10,000 mutations of each real capture (as `hostile.rs` makes them, against a decoder
//! holding the capture's templates), no call costs more per byte than 40 times what the
//! capture's own datagrams cost per byte at most: a mutation can make a datagram cheaper or
//! dearer to decode (many tiny records instead of 30 flows), not unboundedly so.
//!
//! These assert ratios of times measured in the same run, each the fastest of several runs
//! taken in turns and counted in the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`: time the
//! thread waited for a core, on a machine running other tests, is not counted), not a speed: the absolute figures (ns per call on this machine, release
//! build) are printed by `cargo run --release -p netflow-benches --bin bench hostile` and kept
//! in `benches/README.md`.

#![allow(unsafe_code)] // clock_gettime, in cpu_now

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use netflow_wire::{Decoder, Limits};

mod common;

/// CPU time this thread has used.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A stopwatch of this thread's CPU time.
#[derive(Debug)]
struct Stopwatch(Duration);

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch(cpu_now())
    }
    fn elapsed(&self) -> Duration {
        cpu_now().saturating_sub(self.0)
    }
}

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

/// Decodes `g` and reads every flow and issue count.
fn decode_all(d: &mut Decoder, g: &common::Datagram, ts: i64, payload: &[u8]) {
    if let Ok(x) = d.decode(g.exporter, ts, payload) {
        x.flows().for_each(|f| {
            black_box(f);
        });
        black_box(x.issue_count());
    }
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
        let start = Stopwatch::start();
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

#[test]
fn a_mutated_datagram_costs_at_most_a_constant_per_byte() {
    const MUTATIONS: usize = 10_000;
    const RUNS: usize = 5;
    for name in ["sf_v5", "sf_v9", "pm_v9", "sf_ipfix", "pm_ipfix"] {
        let datagrams = common::oracle(name);
        let mut rng = common::Lcg(0xb0b ^ name.len() as u64);
        let mutated: Vec<(usize, Vec<u8>)> = (0..MUTATIONS)
            .map(|_| {
                let i = rng.below(datagrams.len());
                (i, common::mutate(&datagrams[i].payload, &mut rng))
            })
            .collect();
        // Per call, the fastest of RUNS runs, each through a fresh decoder that learned the
        // capture first (the same state every run): a preempted call in one run is not the
        // decoder's cost.
        let mut valid = vec![Duration::MAX; datagrams.len()];
        let mut hostile = vec![Duration::MAX; MUTATIONS];
        for _ in 0..RUNS {
            let mut d = Decoder::new(Limits::default());
            for (i, g) in datagrams.iter().enumerate() {
                let start = Stopwatch::start();
                decode_all(&mut d, g, 0, &g.payload);
                valid[i] = valid[i].min(start.elapsed());
            }
            for (k, (i, m)) in mutated.iter().enumerate() {
                let start = Stopwatch::start();
                decode_all(&mut d, &datagrams[*i], k as i64, m);
                hostile[k] = hostile[k].min(start.elapsed());
            }
        }
        // ns per byte, the floor of a byte so that an empty datagram is not infinitely dear
        let per_byte = |t: Duration, len: usize| t.as_nanos() as f64 / len.max(64) as f64;
        let valid_max = valid
            .iter()
            .zip(&datagrams)
            .map(|(t, g)| per_byte(*t, g.payload.len()))
            .fold(0.0, f64::max);
        let (worst, at) = hostile
            .iter()
            .zip(&mutated)
            .map(|(t, (_, m))| (per_byte(*t, m.len()), m.len()))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        println!(
            "{name}: valid datagrams at most {valid_max:.1} ns/B, mutated at most {worst:.1} ns/B \
             ({at} bytes): {:.1}x",
            worst / valid_max
        );
        assert!(
            worst <= 40.0 * valid_max,
            "{name}: a mutated datagram of {at} bytes cost {worst:.1} ns a byte, {:.1}x the \
             capture's dearest datagram ({valid_max:.1} ns a byte)",
            worst / valid_max
        );
    }
}
