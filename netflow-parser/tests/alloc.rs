//! Zero heap allocations per packet in steady state: once templates are cached, decoding v5, v9
//! and IPFIX datagrams, iterating records and building normalized flows allocate nothing, and a
//! template refresh (the same definition again) allocates nothing either.
//!
//! Also: a template flood from forged exporters keeps the heap bounded and evicts idle
//! exporters instead of locking new ones out.
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
    /// Bytes allocated and not yet freed by this thread (frees of memory allocated by other
    /// threads can make it wrap: only differences are meaningful).
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn add_live(n: i64) {
    let _ = LIVE.try_with(|c| c.set(c.get() + n));
}

// SAFETY: forwards to the system allocator; only counts calls made on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        add_live(layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-(layout.size() as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        add_live(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

fn live_bytes() -> i64 {
    LIVE.with(|c| c.get())
}

/// Decodes a whole capture twice with one decoder; the second pass (every template known, every
/// template set a refresh) must not allocate at all.
fn steady_state_allocations(name: &str) -> (u64, u64) {
    steady_state_allocations_of(&common::oracle(name))
}

/// [`steady_state_allocations`] on these datagrams.
fn steady_state_allocations_of(datagrams: &[common::Datagram]) -> (u64, u64) {
    let mut decoder = Decoder::new(Limits::default());
    let mut flows = 0u64;
    let mut run = |decoder: &mut Decoder| {
        for d in datagrams {
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

/// Biflow records (softflowd `-b`, made by the test): both halves, read by `DataSet::flows`
/// above and by `next`, `for_each` and `next` then `for_each`, allocate nothing either.
#[test]
fn zero_allocations_per_biflow_packet_in_steady_state() {
    let datagrams = common::softflowd(&["-v", "10", "-b"]);
    let (allocs, flows) = steady_state_allocations_of(&datagrams);
    assert!(flows > 1000, "decoded {flows} flows");
    assert_eq!(allocs, 0, "{allocs} allocations in the second pass");
    let mut decoder = Decoder::new(Limits::default());
    for d in &datagrams {
        decoder.decode(d.exporter, 0, &d.payload).unwrap();
    }
    let before = allocations();
    let mut n = 0u64;
    for d in &datagrams {
        let decoded = decoder.decode(d.exporter, 0, &d.payload).unwrap();
        for f in decoded.flows() {
            n += std::hint::black_box(f).packets.min(1);
        }
        decoded
            .flows()
            .for_each(|f| n += std::hint::black_box(f).packets.min(1));
        let mut it = decoded.flows();
        n += it.next().map_or(0, |f| f.packets.min(1));
        it.for_each(|f| n += std::hint::black_box(f).packets.min(1));
    }
    assert_eq!(allocations() - before, 0);
    assert_eq!(n, 3 * 1654);
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(10));
    drop(v);
    assert_eq!(allocations() - before, 1);
}

/// A v9 datagram with template 256 (IPV4_SRC_ADDR, IPV4_DST_ADDR, IN_BYTES, PROTOCOL) and,
/// when `data`, one data record of 1000 bytes.
#[rustfmt::skip]
fn v9_packet(data: bool) -> Vec<u8> {
    let mut p = vec![0, 9, 0, 1 + u8::from(data),
                     0, 0, 0x27, 0x10, 0x65, 0x92, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    p.extend_from_slice(&[0, 0, 0, 24, 1, 0, 0, 4,
                          0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4, 0, 4, 0, 1]);
    if data {
        p.extend_from_slice(&[1, 0, 0, 17, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 3, 232, 6]);
    }
    p
}

fn forged(n: u32) -> std::net::IpAddr {
    std::net::Ipv4Addr::from(0x0a00_0000 + n).into()
}

/// Issue 13, item 3: forged template packets from `max_exporters` and more distinct addresses
/// used to lock every new exporter out. Now the least recently seen exporter goes, counted, the
/// heap stays bounded however long the flood, and an exporter sending data is never the one
/// evicted.
#[test]
fn template_flood_evicts_idle_exporters_and_stays_bounded() {
    let limits = Limits::default();
    let max = limits.max_exporters as u32;
    let mut d = Decoder::new(limits);
    let template = v9_packet(false);
    let both = v9_packet(true);
    let real: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let busy: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(d.decode(real, 0, &both).unwrap().flows().count(), 1);
    assert_eq!(d.decode(busy, 0, &both).unwrap().flows().count(), 1);
    let busy_data: &[u8] = &both[..20]
        .iter()
        .chain(&both[44..])
        .copied()
        .collect::<Vec<u8>>();
    let flood = |d: &mut Decoder, from: u32, to: u32| {
        for n in from..to {
            let decoded = d.decode(forged(n), 0, &template).unwrap();
            assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
            if n % 1000 == 0 {
                // The busy exporter's data keeps it recently seen.
                let decoded = d.decode(busy, 0, busy_data).unwrap();
                assert_eq!(decoded.flows().count(), 1, "{:?}", decoded.issues());
            }
        }
    };
    flood(&mut d, 0, max);
    // max + 2 exporters came: the two seen least recently went, `real` first, then the
    // first forged one (`busy` sent data after it).
    assert_eq!(d.exporters_evicted(), 2);
    assert!(
        d.cache()
            .iter()
            .all(|(k, _)| k.exporter.addr != real && k.exporter.addr != forged(0))
    );
    assert_eq!(d.cache().exporters(), max as usize);
    let live = live_bytes();
    flood(&mut d, max, 4 * max);
    assert_eq!(d.exporters_evicted(), 2 + 3 * u64::from(max));
    let grown = live_bytes() - live;
    assert!(
        grown < 64 << 10,
        "the heap grew by {grown} bytes during the flood"
    );
    assert_eq!(d.cache().len(), max as usize);
    // The busy exporter was never evicted: its data decodes without a template.
    assert_eq!(d.decode(busy, 0, busy_data).unwrap().flows().count(), 1);
    // The real exporter comes back: its template is admitted (one more eviction) and decodes.
    let decoded = d.decode(real, 0, &both).unwrap();
    assert!(decoded.issues().is_empty(), "{:?}", decoded.issues());
    assert_eq!(decoded.flows().map(|f| f.bytes).collect::<Vec<_>>(), [1000]);
    assert_eq!(d.exporters_evicted(), 3 + 3 * u64::from(max));
}

/// `decode_bytes`: a data set that waits for its template keeps a slice of the received
/// datagram (a reference count), not a copy; it decodes the same once the template comes.
#[test]
fn decode_bytes_keeps_a_slice_of_the_datagram_for_a_pending_set() {
    let both = v9_packet(true);
    // The data set alone, 50 records of 13 bytes: 650 that `decode` copies.
    let mut data = both[..20].to_vec();
    data.extend_from_slice(&[1, 0, 2, 142]);
    for _ in 0..50 {
        data.extend_from_slice(&both[48..]);
    }
    let exporter: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    let template = v9_packet(false);
    let mut flows = Vec::new();
    let mut grown = Vec::new();
    for shared in [false, true] {
        let mut d = Decoder::new(Limits::default());
        // Warm up the decoder's own buffers with one pending set and its release.
        let warm = bytes::Bytes::from(data.clone());
        d.decode_bytes(exporter, 0, &warm).unwrap();
        d.decode(exporter, 0, &template).unwrap();
        d.cache_mut().forget_exporter(exporter.into());
        let datagram = bytes::Bytes::from(data.clone());
        let live = live_bytes();
        let decoded = if shared {
            d.decode_bytes(exporter, 1, &datagram).unwrap()
        } else {
            d.decode(exporter, 1, &datagram).unwrap()
        };
        assert_eq!(decoded.waiting_count(), 1, "{:?}", decoded.issues());
        grown.push(live_bytes() - live);
        let decoded = d.decode(exporter, 2, &template).unwrap();
        flows.push(decoded.flows().collect::<Vec<_>>());
    }
    assert_eq!(flows[0].len(), 50);
    assert_eq!(flows[0], flows[1]);
    // The copy costs the set's 650 bytes; the slice only the pending entry.
    assert!(grown[0] >= 650, "decode: {} bytes", grown[0]);
    assert!(grown[1] < 650, "decode_bytes: {} bytes", grown[1]);
    eprintln!(
        "pending set kept by decode: {} bytes, by decode_bytes: {} bytes",
        grown[0], grown[1]
    );
}
