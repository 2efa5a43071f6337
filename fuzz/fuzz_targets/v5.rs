//! NetFlow v5: the stateless view and the decoder's v5 path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netflow_wire::{Decoder, V5Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = V5Packet::parse(data) {
        let h = p.header();
        assert!(p.records().len() == usize::from(h.count));
        for r in p.records() {
            std::hint::black_box((r.src_addr(), r.dst_addr(), r.octets(), r.packets(), r.first(), r.last()));
        }
    }
    let mut d = Decoder::default();
    if let Ok(dec) = d.decode(std::net::Ipv4Addr::LOCALHOST, 0, data) {
        let by_next: Vec<_> = dec.flows().collect();
        let mut by_fold = Vec::with_capacity(by_next.len());
        dec.flows().for_each(|f| by_fold.push(f));
        assert_eq!(by_fold, by_next);
    }
});
