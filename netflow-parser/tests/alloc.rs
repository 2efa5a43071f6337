//! Zero heap allocations per packet in steady state: once templates are cached, decoding v5, v9
//! and IPFIX datagrams, iterating records and building normalized flows allocate nothing, and a
//! template refresh (the same definition again) allocates nothing either.
//!
//! A counting global allocator; the only `unsafe` of the project, in this test.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use netflow_wire::{Decoder, Limits};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls made on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// Decodes a whole capture twice with one decoder; the second pass (every template known, every
/// template set a refresh) must not allocate at all.
fn steady_state_allocations(name: &str) -> (u64, u64) {
    let datagrams = common::oracle(name);
    let mut decoder = Decoder::new(Limits::default());
    let mut flows = 0u64;
    let mut run = |decoder: &mut Decoder| {
        for d in &datagrams {
            let decoded = decoder.decode(d.exporter, 0, &d.payload).unwrap();
            for set in decoded.data_sets() {
                for f in set.flows() {
                    flows += std::hint::black_box(f).packets.min(1);
                }
            }
        }
    };
    run(&mut decoder);
    let before = allocations();
    run(&mut decoder);
    (allocations() - before, flows)
}

#[test]
fn zero_allocations_per_packet_in_steady_state() {
    for name in ["sf_v5", "sf_v9", "pm_v9", "sf_ipfix", "pm_ipfix"] {
        let (allocs, flows) = steady_state_allocations(name);
        assert!(flows > 1000, "{name}: decoded {flows} flows");
        assert_eq!(allocs, 0, "{name}: {allocs} allocations in the second pass");
    }
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(10));
    drop(v);
    assert_eq!(allocations() - before, 1);
}
