//! `cargo run --release -p netflow-benches --bin bench`: a quick parser comparison table
//! (ns per packet, packets/s, flows/s, heap allocations per packet) on the same packets as the
//! criterion benchmark. For careful numbers use `cargo bench -p netflow-benches --bench parser`.
//! An optional argument keeps only the rows whose "packet decoder" text contains it (for profiling).
#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netflow_benches::contenders::{Contender, NetflowParserCrate, Netgauze, Ours};
use netflow_benches::{Totals, inputs};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Row {
    case: &'static str,
    name: &'static str,
    ns: f64,
    allocs: f64,
}

fn measure<C: Contender>(
    case: &'static str,
    version: u16,
    tpl: &[u8],
    data: &[u8],
    want: Totals,
    rows: &mut Vec<Row>,
) {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if !C::supports(version) || !format!("{case} {}", C::NAME).contains(&filter) {
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
    // Best of 5 runs of ~200 ms each.
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut n = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            for _ in 0..100 {
                black_box(dec.decode(black_box(data)));
            }
            n += 100;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    rows.push(Row {
        case,
        name: C::NAME,
        ns: best,
        allocs,
    });
}

fn main() {
    let (t9, d9) = inputs::templated_packets(9, false);
    let (t96, d96) = inputs::templated_packets(9, true);
    let (t10, d10) = inputs::templated_packets(10, false);
    let cases: [(&str, u16, &[u8], Vec<u8>); 4] = [
        ("v5", 5, &[], inputs::v5_packet()),
        ("v9 IPv4", 9, &t9, d9),
        ("v9 IPv6", 9, &t96, d96),
        ("IPFIX IPv4", 10, &t10, d10),
    ];
    let mut rows = Vec::new();
    for (case, version, tpl, data) in &cases {
        let mut ours = Ours::new();
        ours.decode(tpl);
        let want = ours.decode(data);
        assert_eq!(want.flows, inputs::RECORDS as u64);
        measure::<Ours>(case, *version, tpl, data, want, &mut rows);
        measure::<NetflowParserCrate>(case, *version, tpl, data, want, &mut rows);
        measure::<Netgauze>(case, *version, tpl, data, want, &mut rows);
    }
    println!(
        "| packet ({} records) | decoder | ns/packet | packets/s | flows/s | allocations/packet | vs netflow-wire |",
        inputs::RECORDS
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ours = rows
            .iter()
            .find(|o| o.case == r.case && o.name == Ours::NAME)
            .map_or(r.ns, |o| o.ns);
        let pps = 1e9 / r.ns;
        println!(
            "| {} | {} | {:.0} | {:.2} M | {:.1} M | {:.1} | {:.1}x |",
            r.case,
            r.name,
            r.ns,
            pps / 1e6,
            pps * inputs::RECORDS as f64 / 1e6,
            r.allocs,
            r.ns / ours
        );
    }
}
