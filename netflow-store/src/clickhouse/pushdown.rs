//! The bot's aggregation in the ClickHouse server: the window's and its late flows' sums by
//! `GROUP BY`, only the sums sent back. Ties are broken as the streaming path breaks them: the
//! key ascending, addresses IPv4 first (the family, then the 16 bytes: IPv4-mapped bytes sort
//! among themselves as IPv4 numbers, and IPv6 as `Ipv6Addr` does).
//!
//! Five statements over the union of the ranges (measured on 18.16, 3M flows: the first shape,
//! eight statements each ranking with `ORDER BY … LIMIT n BY`, spent most of its time sorting
//! every group and hashing 40- to 52-byte keys):
//!
//! * the sums by exporter, direction, interface and protocol, all of them (few rows): the
//!   totals, the interfaces and both protocol lists are added up and ranked here;
//! * top addresses per interface, top addresses, top pairs and top destination ports: each a
//!   `GROUP BY`, then per group `arraySort(groupArray((bitNot(bytes), order…, key…)))` cut to
//!   `n` (a sort within each group instead of one of all groups), `ARRAY JOIN`ed back into rows.
//!
//! The exporter, its family bit and the direction travel as one `UInt32` (`g`: the exporter's
//! position in the query's list, times 4, plus the bits), so that the grouping keys are short
//! and of fixed width (the server then hashes them as numbers, not serialized bytes).

use std::collections::HashMap;
use std::net::IpAddr;

use super::ClickHouseStore;
use super::read::ChSnapshot;
use super::rowbinary::{Reader, addr_from16, addr16};
use crate::window_sums::{DirectionSums, ExporterSums, InterfaceSums, WindowSums};
use crate::{FlowRange, StoreError};

/// The columns every query groups on, per flow (`{list}`: the exporters' literals): the
/// exporter, family bit and direction as `g` (see the module docs), the interface, ranked
/// address and its family, as the streaming path picks them.
const SOURCE_COLUMNS: &str = "toUInt32(indexOf([{list}], exporter) * 4 + bitAnd(v6_mapped, 1) * 2 \
    + toUInt8(direction = 1)) AS g, toUInt8(direction = 1) AS eg, \
    if(eg = 1, output_if, input_if) AS iface, if(eg = 1, dst_addr, src_addr) AS ip, \
    toUInt8(if(eg = 1, bitAnd(v6_mapped, 4), bitAnd(v6_mapped, 2)) != 0) AS ip6, protocol, \
    src_addr, toUInt8(bitAnd(v6_mapped, 2) != 0) AS s6, dst_addr, \
    toUInt8(bitAnd(v6_mapped, 4) != 0) AS d6, dst_port, bytes";

/// 0 for IPv4 (stored IPv4-mapped, family bit clear), 1 for IPv6: sorts IPv4 first.
pub(super) fn family(addr: &str, bit: &str) -> String {
    format!("toUInt8(substring({addr}, 1, 12) != unhex('00000000000000000000FFFF') OR {bit} = 1)")
}

type Key = (IpAddr, usize);

impl ChSnapshot<'_> {
    /// [`crate::Snapshot::sums`]: every range's flows in one union, summed in the server.
    pub(super) fn pushdown(
        &self,
        exporters: &[IpAddr],
        ranges: &[FlowRange],
        top_n: usize,
    ) -> Result<(WindowSums, Vec<u64>), StoreError> {
        let mut sums = Sums::default();
        let mut counts = vec![0; ranges.len()];
        if exporters.is_empty() {
            return Ok((sums.finish(top_n), counts));
        }
        let (cond, check) = ClickHouseStore::exporter_filter(exporters);
        let list: Vec<String> = exporters.iter().map(|&a| super::addr_literal(a)).collect();
        let columns = SOURCE_COLUMNS.replace("{list}", &list.join(", "));
        let t = &self.store.t;
        let mut parts = Vec::new();
        for (i, &range) in ranges.iter().enumerate() {
            let Some(c) = self.range_cond(range)? else {
                continue;
            };
            let reply = self.store.http.query(&format!(
                "SELECT count() FROM {t}flows WHERE {cond} AND {c} FORMAT RowBinary"
            ))?;
            counts[i] = Reader::new(&reply).u64()?;
            parts.push(format!("SELECT {columns} FROM {t}flows WHERE {cond} AND {c}"));
        }
        if !parts.is_empty() {
            let src = format!("({})", parts.join(" UNION ALL "));
            let keys = Exporters(exporters.iter().map(|&a| addr16(a).0).collect());
            self.store.sum_queries(&src, top_n, &keys, &mut sums)?;
        }
        if let Some(set) = check {
            sums.0.retain(|k, _| set.contains(k));
        }
        Ok((sums.finish(top_n), counts))
    }
}

/// The stored bytes of the query's exporters, by position (`g` decodes against it).
struct Exporters(Vec<[u8; 16]>);

impl Exporters {
    /// `g` of a row: exporter and direction.
    fn key(&self, r: &mut Reader<'_>) -> Result<Key, StoreError> {
        let g = r.u32()?;
        let at = usize::try_from(g / 4).unwrap_or(0);
        let bytes = at
            .checked_sub(1)
            .and_then(|i| self.0.get(i))
            .ok_or(StoreError::ClickHouseReply("an exporter the query did not ask for"))?;
        Ok((addr_from16(*bytes, g & 2 != 0), usize::from(g & 1 == 1)))
    }
}

/// The top `n` of `keys` by bytes per `group`, ties by `order` ascending: `group` columns, the
/// keys, the bytes, ranked within each group.
fn top(src: &str, group: &str, keys: &[&str], order: &[String], n: usize) -> String {
    let k = keys.join(", ");
    let out: Vec<String> = (0..keys.len())
        .map(|i| format!("tupleElement(x, {})", 2 + order.len() + i))
        .collect();
    let order = order.join(", ");
    format!(
        "SELECT {group}, {}, bitNot(tupleElement(x, 1)) FROM (SELECT {group}, \
         arraySlice(arraySort(groupArray(tuple(bitNot(b), {order}, {k}))), 1, {n}) AS top \
         FROM (SELECT {group}, {k}, sum(bytes) AS b FROM {src} GROUP BY {group}, {k}) \
         GROUP BY {group}) ARRAY JOIN top AS x FORMAT RowBinary",
        out.join(", ")
    )
}

impl ClickHouseStore {
    fn sum_queries(
        &self,
        src: &str,
        n: usize,
        ex: &Exporters,
        sums: &mut Sums,
    ) -> Result<(), StoreError> {
        // totals, interfaces and protocols: every (exporter, direction, interface, protocol)
        let reply = self.http.query(&format!(
            "SELECT g, iface, protocol, sum(bytes), count() FROM {src} \
             GROUP BY g, iface, protocol FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = ex.key(&mut r)?;
            let (iface, p, bytes, flows) = (r.u32()?, r.u8()?, r.u64()?, r.u64()?);
            let d = sums.entry(k);
            // added up as the streaming path adds (saturating)
            d.0.bytes = d.0.bytes.saturating_add(bytes);
            d.0.flows = d.0.flows.saturating_add(flows);
            let dp = d.2.entry(p).or_default();
            *dp = dp.saturating_add(bytes);
            let i = d.1.entry(iface).or_insert_with(|| (InterfaceSums::new(iface), HashMap::new()));
            i.0.bytes = i.0.bytes.saturating_add(bytes);
            let ip = i.1.entry(p).or_default();
            *ip = ip.saturating_add(bytes);
        }
        let ip_order = [family("ip", "ip6"), "ip".to_owned()];
        // top addresses per interface, then per exporter and direction
        let reply = self
            .http
            .query(&top(src, "g, iface", &["ip", "ip6"], &ip_order, n))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = ex.key(&mut r)?;
            let iface = r.u32()?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            let d = sums.entry(k);
            let i = d.1.entry(iface).or_insert_with(|| (InterfaceSums::new(iface), HashMap::new()));
            i.0.top_addrs.push((a, v));
        }
        let reply = self
            .http
            .query(&top(src, "g", &["ip", "ip6"], &ip_order, n))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = ex.key(&mut r)?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            sums.entry(k).0.top_addrs.push((a, v));
        }
        let pair_order = [
            family("src_addr", "s6"),
            "src_addr".to_owned(),
            family("dst_addr", "d6"),
            "dst_addr".to_owned(),
        ];
        let reply = self.http.query(&top(
            src,
            "g",
            &["src_addr", "s6", "dst_addr", "d6"],
            &pair_order,
            n,
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = ex.key(&mut r)?;
            let s = addr(&mut r)?;
            let d = addr(&mut r)?;
            let v = r.u64()?;
            sums.entry(k).0.top_pairs.push(((s, d), v));
        }
        let reply = self
            .http
            .query(&top(src, "g", &["dst_port"], &["dst_port".to_owned()], n))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = ex.key(&mut r)?;
            let (p, v) = (r.u16()?, r.u64()?);
            sums.entry(k).0.top_dst_ports.push((p, v));
        }
        Ok(())
    }
}

/// An address and its family bit.
fn addr(r: &mut Reader<'_>) -> Result<IpAddr, StoreError> {
    let a = r.fixed16()?;
    Ok(addr_from16(a, r.u8()? != 0))
}

/// The top `n` protocols of `m` by bytes, ties by number.
fn rank_protocols(m: HashMap<u8, u64>, n: usize) -> Vec<(u8, u64)> {
    let mut v: Vec<(u8, u64)> = m.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Sums being filled: per exporter, `[ingress, egress]`.
#[derive(Default)]
struct Sums(HashMap<IpAddr, [Direction; 2]>);

/// One interface being filled: its sums and its protocols' bytes.
type Interface = (InterfaceSums, HashMap<u8, u64>);

/// One direction being filled: its sums, its interfaces by index and its protocols' bytes.
type Direction = (DirectionSums, HashMap<u32, Interface>, HashMap<u8, u64>);

impl Sums {
    fn entry(&mut self, k: Key) -> &mut Direction {
        &mut self.0.entry(k.0).or_default()[k.1]
    }

    /// The sums, protocol lists ranked to `n`.
    fn finish(self, n: usize) -> WindowSums {
        let mut out = WindowSums::default();
        for (exporter, dirs) in self.0 {
            let mut e = ExporterSums::new(exporter);
            for (i, (mut d, ifaces, protocols)) in dirs.into_iter().enumerate() {
                d.top_protocols = rank_protocols(protocols, n);
                d.interfaces = ifaces
                    .into_values()
                    .map(|(mut s, p)| {
                        s.top_protocols = rank_protocols(p, n);
                        s
                    })
                    .collect();
                e.directions[i] = d;
            }
            out.exporters.push(e);
        }
        out
    }
}
