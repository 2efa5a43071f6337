//! The normalized conversion on arbitrary templates: the input starts with a field list
//! (count, then id/len pairs, lengths 0xffff = variable; some fields RFC 5103 reverse IEs, so
//! that biflow templates come up), the rest is records of it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netflow_wire::emit::Message;
use netflow_wire::{Decoder, FieldId, Header, template::FieldSpec};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n % 24);
    if rest.len() < n * 3 {
        return;
    }
    let (spec_bytes, records) = rest.split_at(n * 3);
    let fields: Vec<FieldSpec> = spec_bytes
        .chunks_exact(3)
        .map(|c| {
            // Bias ids towards the ones the normalized flow reads.
            let id = if c[0] & 0x80 == 0 { u16::from(c[0] % 64) } else { u16::from_be_bytes([c[0] & 0x7f, c[1]]) };
            let len = if c[2] == 0xff { FieldSpec::VARIABLE } else { u16::from(c[2] % 20) };
            // A reverse IE (enterprise 29305) of a low id: biflow records, two flows each.
            if c[0] & 0x80 == 0 && c[1] & 0x40 != 0 {
                FieldSpec::reverse(FieldId(id), len)
            } else {
                FieldSpec::new(FieldId(id), len)
            }
        })
        .collect();
    let header = Header { version: 10, export_secs: 1_700_000_000, ..Header::default() };
    let mut buf = Vec::new();
    let mut m = Message::new(&mut buf, &header);
    m.set(2).template(300, &fields);
    m.set(300).pad(0);
    buf.extend_from_slice(&records[..records.len().min(60_000)]);
    // Patch the data set length and message length by re-emitting through finish() is not
    // possible after raw bytes, so fix them here.
    let specs_len: usize = fields.iter().map(|f| if f.enterprise != 0 { 8 } else { 4 }).sum();
    let data_set_at = 16 + 4 + 4 + specs_len;
    let set_len = (buf.len() - data_set_at) as u16;
    buf[data_set_at + 2..data_set_at + 4].copy_from_slice(&set_len.to_be_bytes());
    let total = (buf.len().min(65535)) as u16;
    buf[2..4].copy_from_slice(&total.to_be_bytes());
    let mut d = Decoder::default();
    if let Ok(dec) = d.decode(std::net::Ipv6Addr::LOCALHOST, 0, &buf) {
        let mut flows = Vec::new();
        for set in dec.data_sets() {
            for r in set.records() {
                let ctx = set.context();
                std::hint::black_box((r.flow(ctx), r.times(ctx), r.sampling_interval()));
                let halves: Vec<_> = r.flows(ctx).collect();
                assert!(halves.len() <= 2);
                // The reverse half, when there is one, is the last; a biflow record always
                // yields something when its forward half is a flow.
                if let Some(rev) = r.reverse_flow(ctx) {
                    assert_eq!(halves.last(), Some(&rev));
                }
                assert_eq!(halves.is_empty(), r.flow(ctx).is_none());
                flows.extend(halves);
            }
        }
        // The datagram's iterators, external and internal, give the same flows.
        assert_eq!(dec.flows().collect::<Vec<_>>(), flows);
        let mut by_fold = Vec::new();
        dec.flows().for_each(|f| by_fold.push(f));
        assert_eq!(by_fold, flows);
    }
});
