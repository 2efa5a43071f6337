// Included by the v9 and ipfix targets: one decoder kept across inputs (thread_local), so
// templates learned from one input decode data of the next, as in a collector.
use netflow_wire::{Decoder, Limits};
use std::cell::RefCell;

thread_local! {
    static DECODER: RefCell<(Decoder, i64)> = RefCell::new((
        Decoder::new(Limits { max_templates_per_exporter: 64, max_exporters: 4, max_pending_sets: 16, max_pending_bytes: 1 << 16, ..Limits::default() }),
        0,
    ));
}

pub fn run(version: u16, data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    // First byte picks one of 4 exporters; the datagram gets the target's version.
    let exporter = std::net::Ipv4Addr::new(10, 0, 0, data[0] & 3);
    let mut datagram = data[1..].to_vec();
    datagram[..2].copy_from_slice(&version.to_be_bytes());
    DECODER.with(|cell| {
        let (decoder, now) = &mut *cell.borrow_mut();
        *now += 1_000_000;
        let Ok(decoded) = decoder.decode(exporter, *now, &datagram) else { return };
        for e in decoded.issues() {
            std::hint::black_box(e.to_string());
        }
        // Internal iteration (a reader picked per set) must agree with `next`.
        let by_next: Vec<_> = decoded.flows().collect();
        let mut by_fold = Vec::with_capacity(by_next.len());
        decoded.flows().for_each(|f| by_fold.push(f));
        assert_eq!(by_fold, by_next);
        for set in decoded.data_sets() {
            for r in set.records() {
                for (spec, bytes) in r.fields() {
                    std::hint::black_box((spec, bytes));
                }
                std::hint::black_box(r.flow(set.context()));
            }
        }
        assert!(decoder.pending_bytes() <= 1 << 16);
    });
}
