//! The exporters table: per-exporter deltas appended by the writers, summed when read.

use super::ClickHouseStore;
use super::rowbinary::{Reader, addr_from16, addr16};
use crate::{Exporter, StoreError, counter_to_db};

pub(super) fn upsert(store: &mut ClickHouseStore, deltas: &[Exporter]) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::with_capacity(deltas.len() * 65);
    for d in deltas {
        let (addr, v6) = addr16(d.addr);
        buf.extend_from_slice(&addr);
        buf.push(u8::from(v6));
        buf.extend_from_slice(&d.first_seen_micros.to_le_bytes());
        buf.extend_from_slice(&d.last_seen_micros.to_le_bytes());
        for c in [d.packets, d.flows, d.lost_packets, d.lost_flows] {
            buf.extend_from_slice(&counter_to_db(c).to_le_bytes());
        }
    }
    store.http.insert(
        &format!("{}exporters", store.t),
        "addr, v6_mapped, first_seen, last_seen, packets, flows, lost_packets, lost_flows",
        &buf,
        &[],
    )
}

pub(super) fn read(store: &mut ClickHouseStore) -> Result<Vec<Exporter>, StoreError> {
    // sums saturate at i64::MAX like the other backends (a UInt64 sum could wrap)
    let sat = |c: &str| {
        format!(
            "if(sum(toFloat64({c})) >= toFloat64(9223372036854775807), \
             toUInt64(9223372036854775807), sum({c}))"
        )
    };
    let reply = store.http.query(&format!(
        "SELECT addr, v6_mapped, min(first_seen), max(last_seen), {}, {}, {}, {} \
         FROM {}exporters GROUP BY addr, v6_mapped FORMAT RowBinary",
        sat("packets"),
        sat("flows"),
        sat("lost_packets"),
        sat("lost_flows"),
        store.t
    ))?;
    let mut r = Reader::new(&reply);
    let mut out = Vec::new();
    while !r.is_empty() {
        let addr = r.fixed16()?;
        let v6 = r.u8()? != 0;
        out.push(Exporter {
            addr: addr_from16(addr, v6),
            first_seen_micros: r.i64()?,
            last_seen_micros: r.i64()?,
            packets: r.u64()?,
            flows: r.u64()?,
            lost_packets: r.u64()?,
            lost_flows: r.u64()?,
        });
    }
    out.sort_by_key(|e| e.addr);
    Ok(out)
}
