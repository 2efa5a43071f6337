//! Bounded work per hostile packet (issue 11): 50,000 mutated datagrams per case (bit flips,
//! truncation, length fields rewritten, template records mutated), decoded by a decoder that
//! holds the case's valid templates. The most heap one decode call allocates stays at most
//! 64 KiB whatever the bytes: a pending set or a template costs what it is.
//!
//! Bytes are counted, not time (no timed asserts): the slowest call is measured by
//! `cargo run --release -p netflow-benches --bin bench hostile` and reported in
//! `benches/README.md`; `work_bound.rs` tests that work grows linearly with the datagram and
//! that a mutated datagram costs at most a constant per byte.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use netflow_wire::{Decoder, Limits};

struct Counting;

thread_local! {
    /// Bytes requested from the allocator by this thread (allocations and growth).
    static REQUESTED: Cell<u64> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = REQUESTED.try_with(|c| c.set(c.get() + n as u64));
}

// SAFETY: forwards to the system allocator; only counts bytes requested on this thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size.saturating_sub(layout.size()));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn requested() -> u64 {
    REQUESTED.with(|c| c.get())
}

const MUTATIONS: usize = 50_000;
const MAX_PER_CALL: u64 = 64 << 10;

/// Decodes every datagram of the capture (learning its templates), then 50,000 mutations of
/// its datagrams; returns the most bytes one mutated call requested.
fn worst_call(name: &str) -> u64 {
    worst_call_of(name, &common::oracle(name))
}

/// [`worst_call`] on these datagrams.
fn worst_call_of(name: &str, datagrams: &[common::Datagram]) -> u64 {
    let mut d = Decoder::new(Limits::default());
    for g in datagrams {
        let _ = d.decode(g.exporter, 0, &g.payload);
    }
    let mut rng = common::Lcg(0x5eed ^ name.len() as u64);
    let mut worst = 0;
    for i in 0..MUTATIONS {
        let g = &datagrams[rng.below(datagrams.len())];
        let m = common::mutate(&g.payload, &mut rng);
        let before = requested();
        if let Ok(decoded) = d.decode(g.exporter, i as i64, &m) {
            decoded.flows().for_each(|f| {
                std::hint::black_box(f);
            });
        }
        worst = worst.max(requested() - before);
    }
    worst
}

#[test]
fn one_hostile_call_allocates_at_most_64_kib() {
    for name in ["sf_v5", "sf_v9", "pm_v9", "sf_ipfix", "pm_ipfix"] {
        let worst = worst_call(name);
        eprintln!("{name}: the most one call allocated: {worst} bytes");
        assert!(
            worst <= MAX_PER_CALL,
            "{name}: one call allocated {worst} bytes"
        );
    }
}

/// The same on softflowd's `-b` export (RFC 5103 biflow templates, two flows a record),
/// made by the test.
#[test]
fn one_hostile_biflow_call_allocates_at_most_64_kib() {
    let datagrams = common::softflowd(&["-v", "10", "-b"]);
    let worst = worst_call_of("sf_biflow", &datagrams);
    eprintln!("sf_biflow: the most one call allocated: {worst} bytes");
    assert!(
        worst <= MAX_PER_CALL,
        "sf_biflow: one call allocated {worst} bytes"
    );
}

/// The shape that cost most before (1 MB+ in one call): a 64 KB datagram of thousands of tiny
/// sets, reserved ids and data sets of unknown templates, against a decoder with a full pending
/// buffer. Errors and waiting sets are listed up to 64 and counted beyond; a datagram adds at
/// most 16 sets to the pending buffer.
#[test]
fn a_datagram_of_tiny_sets_allocates_at_most_64_kib() {
    let mut d = Decoder::new(Limits::default());
    let exporter = std::net::Ipv4Addr::LOCALHOST;
    let mut p = vec![0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0];
    let (mut reserved, mut tiny) = (0, 0);
    while p.len() + 4 <= 24_000 {
        p.extend_from_slice(&[0, 2, 0, 4]); // reserved set id 2
        reserved += 1;
    }
    let mut id = 300u16;
    while p.len() + 5 <= 65_000 {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0, 5, 7]); // a 1-byte data set of an unknown template
        id = id.wrapping_add(1).max(300);
        tiny += 1;
    }
    for round in 0..3 {
        let before = requested();
        let decoded = d.decode(exporter, round, &p).unwrap();
        let (issues, waiting) = (decoded.issue_count(), decoded.waiting_count());
        let listed = decoded.issues().len();
        let spent = requested() - before;
        eprintln!(
            "round {round}: {spent} bytes, {issues} issues ({listed} listed), {waiting} waiting"
        );
        assert!(
            spent <= MAX_PER_CALL,
            "round {round}: one call allocated {spent} bytes"
        );
        assert_eq!(listed, 64);
        assert_eq!(waiting, 16);
        // Every reserved set and every tiny set past the 16 kept is reported.
        assert_eq!(issues, reserved + tiny - 16);
    }
}

/// The counter counts: a template flood inside one datagram is what it is, and is seen.
#[test]
fn the_counter_sees_a_template() {
    let mut d = Decoder::new(Limits::default());
    #[rustfmt::skip]
    let p = [0, 9, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
             0, 0, 0, 12, 1, 0, 0, 1, 0, 8, 0, 4];
    let before = requested();
    d.decode(std::net::Ipv4Addr::LOCALHOST, 0, &p).unwrap();
    assert!(requested() > before);
    assert_eq!(d.cache().len(), 1);
}
