//! The bot's aggregation in the ClickHouse server: the window's and its late flows' sums by
//! `GROUP BY`, top lists by `ORDER BY bytes DESC, key LIMIT n BY group` (18.16 and current
//! releases), only the sums sent back. Ties are broken as the streaming path breaks them: the
//! key ascending, addresses IPv4 first (the family, then the 16 bytes: IPv4-mapped bytes sort
//! among themselves as IPv4 numbers, and IPv6 as `Ipv6Addr` does).

use std::collections::HashMap;
use std::net::IpAddr;

use super::ClickHouseStore;
use super::read::ChSnapshot;
use super::rowbinary::{Reader, addr_from16};
use crate::window_sums::{DirectionSums, ExporterSums, InterfaceSums, WindowSums};
use crate::{FlowRange, StoreError};

/// The columns every query groups on, per flow: exporter, its family bit, direction (1 egress,
/// else ingress), interface, ranked address and its family, as the streaming path picks them.
const SOURCE_COLUMNS: &str = "exporter, bitAnd(v6_mapped, 1) AS e6, toUInt8(direction = 1) AS eg, \
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
            return Ok((sums.finish(), counts));
        }
        let (cond, check) = ClickHouseStore::exporter_filter(exporters);
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
            parts.push(format!(
                "SELECT {SOURCE_COLUMNS} FROM {t}flows WHERE {cond} AND {c}"
            ));
        }
        if !parts.is_empty() {
            let src = format!("({})", parts.join(" UNION ALL "));
            self.store.sum_queries(&src, top_n, &mut sums)?;
        }
        if let Some(set) = check {
            sums.0.retain(|k, _| set.contains(k));
        }
        Ok((sums.finish(), counts))
    }
}

impl ClickHouseStore {
    fn sum_queries(&self, src: &str, n: usize, sums: &mut Sums) -> Result<(), StoreError> {
        let g = "exporter, e6, eg";
        // totals per exporter and direction
        let reply = self.http.query(&format!(
            "SELECT {g}, sum(bytes), count() FROM {src} GROUP BY {g} FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let d = sums.dir(k);
            d.bytes = r.u64()?;
            d.flows = r.u64()?;
        }
        // per interface
        let reply = self.http.query(&format!(
            "SELECT {g}, iface, sum(bytes) FROM {src} GROUP BY {g}, iface FORMAT RowBinary"
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let (iface, bytes) = (r.u32()?, r.u64()?);
            sums.iface(k, iface).bytes = bytes;
        }
        let ipfam = family("ip", "ip6");
        let top = |group: &str, keys: &str, order: &str| {
            format!(
                "SELECT {group}, {keys}, sum(bytes) AS b FROM {src} GROUP BY {group}, {keys} \
                 ORDER BY b DESC, {order} LIMIT {n} BY {group} FORMAT RowBinary"
            )
        };
        // top addresses and protocols per interface
        let reply = self.http.query(&top(
            &format!("{g}, iface"),
            "ip, ip6",
            &format!("{ipfam}, ip"),
        ))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let iface = r.u32()?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            sums.iface(k, iface).top_addrs.push((a, v));
        }
        let reply = self
            .http
            .query(&top(&format!("{g}, iface"), "protocol", "protocol"))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let iface = r.u32()?;
            let (p, v) = (r.u8()?, r.u64()?);
            sums.iface(k, iface).top_protocols.push((p, v));
        }
        // top lists per exporter and direction
        let reply = self
            .http
            .query(&top(g, "ip, ip6", &format!("{ipfam}, ip")))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let a = addr(&mut r)?;
            let v = r.u64()?;
            sums.dir(k).top_addrs.push((a, v));
        }
        let reply = self.http.query(&top(g, "protocol", "protocol"))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let (p, v) = (r.u8()?, r.u64()?);
            sums.dir(k).top_protocols.push((p, v));
        }
        let pair_order = format!(
            "{}, src_addr, {}, dst_addr",
            family("src_addr", "s6"),
            family("dst_addr", "d6")
        );
        let reply = self
            .http
            .query(&top(g, "src_addr, s6, dst_addr, d6", &pair_order))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let s = addr(&mut r)?;
            let d = addr(&mut r)?;
            let v = r.u64()?;
            sums.dir(k).top_pairs.push(((s, d), v));
        }
        let reply = self.http.query(&top(g, "dst_port", "dst_port"))?;
        let mut r = Reader::new(&reply);
        while !r.is_empty() {
            let k = key(&mut r)?;
            let (p, v) = (r.u16()?, r.u64()?);
            sums.dir(k).top_dst_ports.push((p, v));
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

/// Sums being filled: per exporter, `[ingress, egress]` with interfaces by index.
#[derive(Default)]
struct Sums(HashMap<IpAddr, [Direction; 2]>);

/// One direction being filled: its sums and its interfaces by index.
type Direction = (DirectionSums, HashMap<u32, InterfaceSums>);

impl Sums {
    fn entry(&mut self, k: Key) -> &mut Direction {
        &mut self.0.entry(k.0).or_default()[k.1]
    }
    fn dir(&mut self, k: Key) -> &mut DirectionSums {
        &mut self.entry(k).0
    }
    fn iface(&mut self, k: Key, iface: u32) -> &mut InterfaceSums {
        self.entry(k)
            .1
            .entry(iface)
            .or_insert_with(|| InterfaceSums::new(iface))
    }
    fn finish(self) -> WindowSums {
        let mut out = WindowSums::default();
        for (exporter, dirs) in self.0 {
            let mut e = ExporterSums::new(exporter);
            for (i, (mut d, ifaces)) in dirs.into_iter().enumerate() {
                d.interfaces = ifaces.into_values().collect();
                e.directions[i] = d;
            }
            out.exporters.push(e);
        }
        out
    }
}
