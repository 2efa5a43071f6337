//! `cargo run --release -p netflow-benches --bin bench`: quick parser comparison tables (ns per
//! packet, packets/s, flows/s, heap allocations per packet) on the same packets as the
//! criterion benchmark. For careful numbers use `cargo bench -p netflow-benches --bench parser`.
//!
//! First the realistic workload (issue 11: 16 distinct datagrams cycled, the 14-field
//! template, IPFIX reduced-size and IPv6 with ms times and 8-byte counters, every flow consumed
//! whole), then the old figure (one packet decoded again and again, nine fields summed).
//! An optional argument keeps only the rows whose "table case decoder" text contains it (for
//! profiling: `bench "realistic v9 IPv4 netflow-wire"`); `BENCH_ITERS=N` decodes N datagrams per row untimed (for callgrind).
#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netflow_benches::contenders::{Contender, NetflowParserCrate, Netgauze, Ours};
use netflow_benches::{Totals, inputs};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(n.saturating_sub(l.size()) as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Row {
    table: &'static str,
    case: &'static str,
    name: &'static str,
    ns: f64,
    allocs: f64,
}

/// One row to time: its figures so far and the closure that runs one sample of it (decodes
/// for [`SAMPLE`], returns ns per datagram).
struct Timed<'a> {
    row: Row,
    run: Box<dyn FnMut() -> f64 + 'a>,
}

fn measure<'a, C: Contender + 'a>(
    case: &'static str,
    version: u16,
    tpl: &[u8],
    data: &'a [u8],
    want: Totals,
    rows: &mut Vec<Timed<'a>>,
) {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if !C::supports(version) || !format!("old {case} {}", C::NAME).contains(&filter) {
        return;
    }
    let mut dec = C::new();
    dec.decode(tpl);
    let got = dec.decode(data);
    assert_eq!(got, want, "{} decoded {case} differently", C::NAME);
    // BENCH_ITERS=N: exactly N decodes and no timing, for instruction counts under callgrind.
    if let Some(n) = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        for _ in 0..n {
            black_box(dec.decode(black_box(data)));
        }
        return;
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        black_box(dec.decode(black_box(data)));
    }
    let allocs = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1000.0;
    rows.push(Timed {
        row: Row {
            table: "old",
            case,
            name: C::NAME,
            ns: f64::MAX,
            allocs,
        },
        run: Box::new(move || {
            let mut n = 0u64;
            let start = Instant::now();
            while start.elapsed() < SAMPLE {
                for _ in 0..100 {
                    black_box(dec.decode(black_box(data)));
                }
                n += 100;
            }
            start.elapsed().as_nanos() as f64 / n as f64
        }),
    });
}

/// Timed runs per row, each of [`SAMPLE`]; a row's time is its fastest run. The rows take
/// turns, one sample each per round, so that a slow spell of a shared machine (other
/// processes, a hypervisor's steal time: runs slowed 2-3x for seconds here) falls on every
/// row alike instead of on a few rows' whole measurement.
const SAMPLES: usize = 25;
const SAMPLE: Duration = Duration::from_millis(40);

/// The realistic workload: every datagram of `w` in turn, each flow consumed whole.
fn measure_realistic<'a, C: Contender + 'a>(
    w: &'a inputs::Workload,
    want: Totals,
    rows: &mut Vec<Timed<'a>>,
) {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if !C::supports(w.version) || !format!("realistic {} {}", w.name, C::NAME).contains(&filter) {
        return;
    }
    let mut dec = C::new();
    dec.decode_whole(&w.template);
    let mut got = Totals::default();
    for d in &w.data {
        let t = dec.decode_whole(d);
        got.flows += t.flows;
        got.bytes += t.bytes;
        got.packets += t.packets;
        got.mix += t.mix;
    }
    assert_eq!(got, want, "{} decoded {} differently", C::NAME, w.name);
    let n = w.data.len();
    if let Some(iters) = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        for i in 0..iters {
            black_box(dec.decode_whole(black_box(&w.data[i % n])));
        }
        return;
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..1600 {
        black_box(dec.decode_whole(black_box(&w.data[i % n])));
    }
    let allocs = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1600.0;
    rows.push(Timed {
        row: Row {
            table: "realistic",
            case: w.name,
            name: C::NAME,
            ns: f64::MAX,
            allocs,
        },
        run: Box::new(move || {
            let mut count = 0u64;
            let start = Instant::now();
            while start.elapsed() < SAMPLE {
                for d in &w.data {
                    black_box(dec.decode_whole(black_box(d)));
                }
                count += n as u64;
            }
            start.elapsed().as_nanos() as f64 / count as f64
        }),
    });
}

/// Runs of [`time_calls`]: each call's time is its fastest run.
const RUNS: usize = 5;

/// Times every call of `datagrams` through `RUNS` fresh decoders that first learned `setup`, and
/// prints one row of the hostile table.
fn time_calls(name: &str, setup: &[u8], datagrams: &[Vec<u8>]) {
    let exporter = std::net::IpAddr::from([192, 0, 2, 1]);
    let mut times = vec![Duration::MAX; datagrams.len()];
    let (mut single, mut most) = (Duration::ZERO, 0u64);
    for _ in 0..RUNS {
        let mut d = netflow_wire::Decoder::default();
        let _ = d.decode(exporter, 0, setup);
        for (i, m) in datagrams.iter().enumerate() {
            let bytes = BYTES.load(Ordering::Relaxed);
            let start = Instant::now();
            if let Ok(x) = d.decode(exporter, i as i64, m) {
                x.flows().for_each(|f| {
                    black_box(&f);
                });
                black_box(x.issue_count());
            }
            let t = start.elapsed();
            most = most.max(BYTES.load(Ordering::Relaxed) - bytes);
            single = single.max(t);
            times[i] = times[i].min(t);
        }
    }
    let total: Duration = times.iter().sum();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "| {name} | {} | {:.1} us | {:.1} us | {:.1} us | {:.0} ns | {:.1} us | {most} |",
        datagrams.len(),
        times[times.len() - 1].as_secs_f64() * 1e6,
        pct(0.9999).as_secs_f64() * 1e6,
        pct(0.999).as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e9 / datagrams.len() as f64,
        single.as_secs_f64() * 1e6,
    );
}

/// A crafted case: its name, the datagram a decoder learns first, the datagrams timed.
type Crafted = (&'static str, Vec<u8>, Vec<Vec<u8>>);

/// The largest datagrams that make the decoder work hardest, 200 of each: v9 template flowsets
/// redefining 31 templates of 512 fields (the default field limit) each time, 16,000 empty data
/// sets of unknown templates, and an IPFIX data set of 65,000 one-byte records (one
/// variable-length field, each empty).
fn crafted() -> Vec<Crafted> {
    fn v9(sets: &[u8]) -> Vec<u8> {
        let mut d = vec![
            0, 9, 0, 0, 0, 0, 0, 100, 0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        d.extend_from_slice(sets);
        d
    }
    fn ipfix(sets: &[u8]) -> Vec<u8> {
        let len = (16 + sets.len()) as u16;
        let mut d = vec![0, 10];
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        d.extend_from_slice(sets);
        d
    }
    fn set(id: u16, body: &[u8]) -> Vec<u8> {
        let mut s = id.to_be_bytes().to_vec();
        s.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
        s.extend_from_slice(body);
        s
    }
    let templates = (0..200u16)
        .map(|n| {
            let mut body = Vec::new();
            for t in 0..31u16 {
                body.extend_from_slice(&(256 + t).to_be_bytes());
                body.extend_from_slice(&512u16.to_be_bytes());
                for f in 0..512u16 {
                    body.extend_from_slice(&(1 + (f + n) % 100).to_be_bytes());
                    body.extend_from_slice(&(1 + (f + n) % 8).to_be_bytes());
                }
            }
            v9(&set(0, &body))
        })
        .collect();
    let empty_sets = (0..200u16)
        .map(|n| {
            let mut sets = Vec::new();
            for i in 0..16_000u16 {
                sets.extend_from_slice(&set(300 + (i + n) % 1000, &[]));
            }
            v9(&sets)
        })
        .collect();
    // Template 256: one field, ifName (82), variable length.
    let var_template = ipfix(&set(2, &[1, 0, 0, 1, 0, 82, 0xff, 0xff]));
    let var_records = (0..200).map(|_| ipfix(&set(256, &[0; 65_000]))).collect();
    vec![
        (
            "v9, 31 templates of 512 fields redefined",
            v9(&[]),
            templates,
        ),
        (
            "v9, 16,000 empty sets of unknown templates",
            v9(&[]),
            empty_sets,
        ),
        (
            "IPFIX, 65,000 empty variable-length records",
            var_template,
            var_records,
        ),
    ]
}

fn print(rows: &[Row], table: &str, records: impl Fn(&str) -> usize) {
    println!(
        "| packet | decoder | ns/packet | packets/s | flows/s | allocations/packet | vs netflow-wire |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.table == table) {
        let ours = rows
            .iter()
            .find(|o| o.table == table && o.case == r.case && o.name == Ours::NAME)
            .map_or(r.ns, |o| o.ns);
        let pps = 1e9 / r.ns;
        println!(
            "| {} ({} records) | {} | {:.0} | {:.2} M | {:.1} M | {:.1} | {:.1}x |",
            r.case,
            records(r.case),
            r.name,
            r.ns,
            pps / 1e6,
            pps * records(r.case) as f64 / 1e6,
            r.allocs,
            r.ns / ours
        );
    }
}

/// `bench hostile`: 50,000 mutated datagrams per case (bit flips, cuts, rewritten length and
/// template fields) against a decoder holding the case's templates: the slowest call and the
/// most bytes one call allocated.
///
/// The same 50,000 datagrams go through `RUNS` fresh decoders, so call `i` meets the same decoder
/// state every run; a call's time is its fastest run. The scheduler of a shared machine delays
/// some call of every run, rarely the same one, so the slowest of those minima is the decoder's
/// own worst case; the slowest single call is printed beside it.
fn hostile() {
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n.max(1) as u64) as usize
        }
    }
    println!(
        "| case | datagrams | slowest call (fastest of {RUNS} runs) | 99.99th | 99.9th | mean | slowest single call | most bytes one call allocated |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for w in inputs::realistic() {
        let mut rng = Lcg(7);
        let n = 50_000;
        let mutated: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let src = if w.version != 5 && rng.below(4) == 0 {
                    &w.template
                } else {
                    &w.data[rng.below(w.data.len())]
                };
                let mut m = src.clone();
                for _ in 0..1 + rng.below(3) {
                    if m.is_empty() {
                        break;
                    }
                    let at = rng.below(m.len());
                    match rng.below(4) {
                        0 => m[at] ^= 1 << rng.below(8),
                        1 => m.truncate(at),
                        2 => {
                            let at = at & !1;
                            let v = [0u16, 4, 0xffff, 1][rng.below(4)];
                            if at + 1 < m.len() {
                                m[at..at + 2].copy_from_slice(&v.to_be_bytes());
                            }
                        }
                        _ => m[at] = rng.below(256) as u8,
                    }
                }
                m
            })
            .collect();
        time_calls(w.name, &w.template, &mutated);
    }
    for (name, setup, datagrams) in crafted() {
        time_calls(name, &setup, &datagrams);
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("hostile") {
        hostile();
        return;
    }
    let workloads = inputs::realistic();
    let (t9, d9) = inputs::templated_packets(9, false);
    let (t96, d96) = inputs::templated_packets(9, true);
    let (t10, d10) = inputs::templated_packets(10, false);
    let cases: [(&str, u16, &[u8], Vec<u8>); 4] = [
        ("v5", 5, &[], inputs::v5_packet()),
        ("v9 IPv4", 9, &t9, d9),
        ("v9 IPv6", 9, &t96, d96),
        ("IPFIX IPv4", 10, &t10, d10),
    ];
    let mut timed = Vec::new();
    for w in &workloads {
        let mut ours = Ours::new();
        ours.decode_whole(&w.template);
        let mut want = Totals::default();
        for d in &w.data {
            let t = ours.decode_whole(d);
            assert_eq!(t.flows, w.records as u64, "{}", w.name);
            want.flows += t.flows;
            want.bytes += t.bytes;
            want.packets += t.packets;
            want.mix += t.mix;
        }
        measure_realistic::<Ours>(w, want, &mut timed);
        measure_realistic::<NetflowParserCrate>(w, want, &mut timed);
        measure_realistic::<Netgauze>(w, want, &mut timed);
    }
    for (case, version, tpl, data) in &cases {
        let mut ours = Ours::new();
        ours.decode(tpl);
        let want = ours.decode(data);
        assert_eq!(want.flows, inputs::RECORDS as u64);
        measure::<Ours>(case, *version, tpl, data, want, &mut timed);
        measure::<NetflowParserCrate>(case, *version, tpl, data, want, &mut timed);
        measure::<Netgauze>(case, *version, tpl, data, want, &mut timed);
    }
    for _ in 0..SAMPLES {
        for t in &mut timed {
            t.row.ns = t.row.ns.min((t.run)());
        }
    }
    let rows: Vec<Row> = timed.into_iter().map(|t| t.row).collect();
    if rows.iter().any(|r| r.table == "realistic") {
        println!(
            "Realistic: {} distinct datagrams cycled, every flow consumed whole",
            inputs::DISTINCT
        );
        print(&rows, "realistic", |case| {
            workloads
                .iter()
                .find(|w| w.name == case)
                .map_or(0, |w| w.records)
        });
        println!();
    }
    if rows.iter().any(|r| r.table == "old") {
        println!("Old figure: one packet decoded again and again, nine fields summed");
        print(&rows, "old", |_| inputs::RECORDS);
    }
}
