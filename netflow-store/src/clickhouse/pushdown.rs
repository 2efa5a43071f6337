//! The bot's aggregation in the ClickHouse server: the window's and its late flows' sums by
//! `GROUP BY`, top lists by `ORDER BY bytes DESC, key LIMIT n BY group` (18.16 and current
//! releases), only the sums sent back. Ties are broken as the streaming path breaks them: the
//! key ascending, addresses IPv4 first (the family, then the 16 bytes: IPv4-mapped bytes sort
//! among themselves as IPv4 numbers, and IPv6 as `Ipv6Addr` does).
//!
//! Five statements, each grouping the flows table itself (measured on 18.16, 3M flows: the
//! same `GROUP BY` over a subquery took more than twice as long, and the first shape read a
//! `UNION ALL` of the ranges in eight statements):
//!
//! * the sums by exporter, direction, interface and protocol, all of them (few rows): the
//!   totals, the interfaces and both protocol lists are added up and ranked here;
//! * top addresses per interface, top addresses, top pairs and top destination ports; the
//!   top pairs, the dearest, by one statement per exporter and direction (up to 64) plus one
//!   for the rows with flagged addresses, merged here (see `ClickHouseStore::top_pairs`).
//!
//! The ranges of one job (its window and its late flows) never overlap in `ts` (a late range
//! holds flows at or before the window's start), so they are one `WHERE … (a OR b)`; ranges
//! that might overlap are summed through a `UNION ALL` (the slower shape), as the streaming
//! path would count a flow once per range.

use std::collections::HashMap;
use std::net::IpAddr;

use super::read::ChSnapshot;
use super::rowbinary::{Reader, addr_from16, addr16};
use super::{ClickHouseStore, addr_literal};
use crate::window_sums::{DirectionSums, ExporterSums, InterfaceSums, WindowSums};
use crate::{FlowRange, StoreError};

/// The grouping columns of every statement: exporter, its family bit, direction (1 egress,
/// else ingress).
const GROUP: &str = "exporter, bitAnd(v6_mapped, 1) AS e6, toUInt8(direction = 1) AS eg";
/// The interface, ranked address and its family, as the streaming path picks them.
const IFACE: &str = "if(eg = 1, output_if, input_if) AS iface";
const IP: &str = "if(eg = 1, dst_addr, src_addr) AS ip, \
    toUInt8(if(eg = 1, bitAnd(v6_mapped, 4), bitAnd(v6_mapped, 2)) != 0) AS ip6";
const PAIR: &str = "src_addr, toUInt8(bitAnd(v6_mapped, 2) != 0) AS s6, dst_addr, \
    toUInt8(bitAnd(v6_mapped, 4) != 0) AS d6";

/// 0 for IPv4 (stored IPv4-mapped, family bit clear), 1 for IPv6: sorts IPv4 first.
pub(super) fn family(addr: &str, bit: &str) -> String {
    format!("toUInt8(substring({addr}, 1, 12) != unhex('00000000000000000000FFFF') OR {bit} = 1)")
}

type Key = (IpAddr, usize);

/// The `ts` span of a range (inclusive), for the overlap test.
fn span(r: FlowRange) -> (i64, i64) {
    match r {
        FlowRange::Time { after, upto } => (after.saturating_add(1), upto),
        FlowRange::Late { ts_upto, .. } => (i64::MIN, ts_upto),
    }
}

/// Whether no flow can be in two of `ranges` (their `ts` spans do not overlap).
fn disjoint(ranges: &[FlowRange]) -> bool {
    let mut spans: Vec<(i64, i64)> = ranges.iter().map(|&r| span(r)).collect();
    spans.sort_unstable();
    spans.windows(2).all(|w| w[0].1 < w[1].0)
}

/// Where the flows come from: the flows table under one condition, or (ranges that may
/// overlap) a union of one select per range.
enum Source {
    Table(String),
    Union(Vec<String>),
}

impl Source {
    /// The same flows, only those that also meet `cond`.
    fn and(&self, cond: &str) -> Source {
        match self {
            Source::Table(w) => Source::Table(format!("({w}) AND {cond}")),
            Source::Union(parts) => {
                Source::Union(parts.iter().map(|w| format!("({w}) AND {cond}")).collect())
            }
        }
    }

    /// `SELECT {columns} FROM … GROUP BY {group} {tail}`.
    fn select(&self, t: &str, columns: &str, group: &str, tail: &str) -> String {
        match self {
            Source::Table(w) => format!(
                "SELECT {columns} FROM {t}flows WHERE {w} GROUP BY {group} {tail} FORMAT RowBinary"
            ),
            Source::Union(parts) => {
                let u: Vec<String> = parts
                    .iter()
                    .map(|w| format!("SELECT * FROM {t}flows WHERE {w}"))
                    .collect();
                format!(
                    "SELECT {columns} FROM ({}) GROUP BY {group} {tail} FORMAT RowBinary",
                    u.join(" UNION ALL ")
                )
            }
        }
    }
}

impl ChSnapshot<'_> {
    /// [`crate::Snapshot::sums`]: every range's flows, summed in the server.
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
        let t = &self.store.t;
        let mut parts = Vec::new();
        let mut kept = Vec::new();
        for (i, &range) in ranges.iter().enumerate() {
            let Some(c) = self.range_cond(range)? else {
                continue;
            };
            let reply = self.store.http.query(&format!(
                "SELECT count() FROM {t}flows WHERE {cond} AND {c} FORMAT RowBinary"
            ))?;
            counts[i] = Reader::new(&reply).u64()?;
            parts.push(format!("{cond} AND {c}"));
            kept.push(range);
        }
        if !parts.is_empty() {
            let src = if disjoint(&kept) {
                let ors: Vec<String> = parts.iter().map(|p| format!("({p})")).collect();
                Source::Table(ors.join(" OR "))
            } else {
                Source::Union(parts)
            };
            self.store.sum_queries(&src, top_n, &mut sums)?;
        }
        if let Some(set) = check {
            sums.0.retain(|k, _| set.contains(k));
        }
        Ok((sums.finish(top_n), counts))
    }
}

impl ClickHouseStore {
    fn sum_queries(&self, src: &Source, n: usize, sums: &mut Sums) -> Result<(), StoreError> {
        let t = &self.t;
        let g = "exporter, e6, eg";
        let top = |columns: &str, group: &str, keys: &str, order: &str| {
            src.select(
                t,
                &format!("{GROUP}, {columns}, sum(bytes) AS b"),
                &format!("{g}, {keys}"),
                &format!("ORDER BY b DESC, {order} LIMIT {n} BY {group}"),
            )
        };
        // totals, interfaces and protocols: every (exporter, direction, interface, protocol)
        let reply = self.http.query(&src.select(
            t,
            &format!("{GROUP}, {IFACE}, protocol, sum(bytes), count()"),
            &format!("{g}, iface, protocol"),
            "",
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let (iface, p, bytes, flows) = (r.u32()?, r.u8()?, r.u64()?, r.u64()?);
            // added up as the streaming path adds (saturating)
            let d = sums.entry(k);
            d.0.bytes = d.0.bytes.saturating_add(bytes);
            d.0.flows = d.0.flows.saturating_add(flows);
            let dp = d.2.entry(p).or_default();
            *dp = dp.saturating_add(bytes);
            let i =
                d.1.entry(iface)
                    .or_insert_with(|| (InterfaceSums::new(iface), HashMap::new()));
            i.0.bytes = i.0.bytes.saturating_add(bytes);
            let ip = i.1.entry(p).or_default();
            *ip = ip.saturating_add(bytes);
        }
        let ip_order = format!("{}, ip", family("ip", "ip6"));
        // top addresses per interface, then per exporter and direction
        let reply = self.http.query(&top(
            &format!("{IFACE}, {IP}"),
            &format!("{g}, iface"),
            "iface, ip, ip6",
            &ip_order,
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let iface = r.u32()?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            let i = sums
                .entry(k)
                .1
                .entry(iface)
                .or_insert_with(|| (InterfaceSums::new(iface), HashMap::new()));
            i.0.top_addrs.push((a, v));
        }
        let reply = self.http.query(&top(IP, g, "ip, ip6", &ip_order))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            sums.entry(k).0.top_addrs.push((a, v));
        }
        self.top_pairs(src, n, sums)?;
        let reply = self
            .http
            .query(&top("dst_port", g, "dst_port", "dst_port"))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let (p, v) = (r.u16()?, r.u64()?);
            sums.entry(k).0.top_dst_ports.push((p, v));
        }
        Ok(())
    }
}

/// At most this many statements for the top pairs, one per exporter and direction; more
/// exporters take the one statement over all of them.
const PAIR_SLICES: usize = 64;

impl ClickHouseStore {
    /// The top pairs of each exporter and direction (`sums` holds every exporter and
    /// direction of the window already, from the first statement).
    ///
    /// On 18.16 one statement over all of them spent most of the pushdown: a `GROUP BY` of
    /// 52 serialized bytes a key (exporter, flags, both addresses) and then the full sort of
    /// its millions of groups behind `LIMIT n BY`. So, up to [`PAIR_SLICES`], a statement per
    /// exporter and direction groups by the two addresses alone (a 32-byte fixed-size key)
    /// and takes a plain `ORDER BY … LIMIT n` (measured by hand on 3M flows: 0.10-0.18 s a
    /// slice against 7 s for the one statement). The rows whose addresses carry the rare
    /// "IPv6 that looks IPv4-mapped" flags are ranked by the one statement, on those rows
    /// only; both lists are merged and cut here.
    fn top_pairs(&self, src: &Source, n: usize, sums: &mut Sums) -> Result<(), StoreError> {
        let t = &self.t;
        let slices: Vec<Key> = sums
            .0
            .iter()
            .flat_map(|(&e, dirs)| (0..2).filter(|&d| dirs[d].0.flows > 0).map(move |d| (e, d)))
            .collect();
        let pair_order = format!(
            "{}, src_addr, {}, dst_addr",
            family("src_addr", "s6"),
            family("dst_addr", "d6")
        );
        let all = |src: &Source| {
            src.select(
                t,
                &format!("{GROUP}, {PAIR}, sum(bytes) AS b"),
                "exporter, e6, eg, src_addr, s6, dst_addr, d6",
                &format!("ORDER BY b DESC, {pair_order} LIMIT {n} BY exporter, e6, eg"),
            )
        };
        let one_statement = |src: &Source, sums: &mut Sums| -> Result<(), StoreError> {
            let reply = self.http.query(&all(src))?;
            let mut r = Reader::new(&reply);
            while !r.is_empty() {
                let k = key(&mut r)?;
                let s = addr(&mut r)?;
                let d = addr(&mut r)?;
                let v = r.u64()?;
                sums.entry(k).0.top_pairs.push(((s, d), v));
            }
            Ok(())
        };
        if slices.len() > PAIR_SLICES {
            return one_statement(src, sums);
        }
        let plain_order = format!(
            "{}, src_addr, {}, dst_addr",
            family("src_addr", "0"),
            family("dst_addr", "0")
        );
        for (e, d) in slices {
            let e6 = addr16(e).1;
            let slice = src.and(&format!(
                "exporter = {} AND bitAnd(v6_mapped, 1) = {} AND toUInt8(direction = 1) = {d} \
                 AND bitAnd(v6_mapped, 6) = 0",
                addr_literal(e),
                u8::from(e6)
            ));
            let reply = self.http.query(&slice.select(
                t,
                "src_addr, dst_addr, sum(bytes) AS b",
                "src_addr, dst_addr",
                &format!("ORDER BY b DESC, {plain_order} LIMIT {n}"),
            ))?;
            let mut r = Reader::new(&reply);
            let top = &mut sums.entry((e, d)).0.top_pairs;
            while !r.is_empty() {
                let s = addr_from16(r.fixed16()?, false);
                let dst = addr_from16(r.fixed16()?, false);
                top.push(((s, dst), r.u64()?));
            }
        }
        one_statement(&src.and("bitAnd(v6_mapped, 6) != 0"), sums)?;
        for dirs in sums.0.values_mut() {
            for dir in dirs.iter_mut() {
                let top = &mut dir.0.top_pairs;
                // the streaming path's order: bytes down, then the pair up (IPv4 first)
                top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                top.truncate(n);
            }
        }
        Ok(())
    }
}

/// `exporter, e6, eg` of a row.
fn key(r: &mut Reader<'_>) -> Result<Key, StoreError> {
    let e = r.fixed16()?;
    let e6 = r.u8()? != 0;
    let eg = r.u8()?;
    Ok((addr_from16(e, e6), usize::from(eg == 1)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_window_and_its_late_flows_are_disjoint() {
        let window = FlowRange::Time {
            after: 100,
            upto: 200,
        };
        let late = FlowRange::Late {
            after_seq: 1,
            upto_seq: 9,
            ts_upto: 100,
        };
        assert!(disjoint(&[window, late]));
        assert!(disjoint(&[window]));
        let overlapping = FlowRange::Late {
            after_seq: 1,
            upto_seq: 9,
            ts_upto: 101,
        };
        assert!(!disjoint(&[window, overlapping]));
        assert!(!disjoint(&[window, window]));
    }
}
