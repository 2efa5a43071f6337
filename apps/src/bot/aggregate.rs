//! The aggregation engine: every value of one window in one pass over its flows.
//!
//! Feed the window's flows to [`Window::add`] (any order), then ask [`Window::values`] for the
//! `{path, value}` list of an account's entities. No database, no clock, no I/O: the unit tests
//! give flows and entities and check the exact list.
//!
//! # The values (N = [`TOP_N`])
//!
//! For each entity E (exporter address A) and direction D (`ingress`: flows with direction 0,
//! grouped by `input_if`, ranking source addresses; `egress`: direction 1, `output_if`,
//! destination addresses), with L the interval label:
//!
//! * `netflow.L.D.entity.E` bytes (sent even when 0), `...entity.E.if.I` per interface seen
//! * `netflow.L.D`: bytes over the account's distinct exporter addresses (sent even when 0)
//! * `...entity.E.topip.IP`, `...entity.E.if.I.topip.IP`: top N addresses by bytes
//! * `...entity.E.topprotocol.NAME`, `...entity.E.if.I.topprotocol.NAME`: top N protocols
//! * `...entity.E.topconn.SRC.DST`: top N source/destination pairs
//! * `...entity.E.topdstports.PORT`: top N destination ports
//!
//! Top-N order: bytes descending, then the key ascending (addresses: IPv4 before IPv6, then
//! numerically; pairs by source then destination; protocols and ports numerically), so ties
//! are broken the same way every time and the N-th place is deterministic.

use std::collections::BTreeSet;
use std::net::IpAddr;

use grafolean_client::{PathError, Segment, ValueBatch, ValuePath, protocol_segment};
use netflow_wire::Flow;

pub use super::sums::{SumKey, Sums};

/// The maps of a window: a window touches them once per flow for every dimension (6 million
/// flows a minute at 100k flows/s), and std's SipHash took a fifth of the bot's time; the
/// keys are ours (addresses, ports), so a fast non-DoS-resistant hash is enough (foldhash, the
/// parser's template-cache hash). Output order never depends on it (top-N sorts).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Entries in each top list.
pub const TOP_N: usize = 10;

/// An interval label and its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// `1min`, 60 s.
    M1,
    /// `15min`, 900 s.
    M15,
    /// `1h`, 3600 s.
    H1,
    /// `4h`, 14400 s.
    H4,
    /// `24h`, 86400 s.
    H24,
}

impl Interval {
    /// All five, shortest first.
    pub const ALL: [Interval; 5] = [
        Interval::M1,
        Interval::M15,
        Interval::H1,
        Interval::H4,
        Interval::H24,
    ];

    /// The label used in paths.
    pub fn label(self) -> &'static str {
        match self {
            Interval::M1 => "1min",
            Interval::M15 => "15min",
            Interval::H1 => "1h",
            Interval::H4 => "4h",
            Interval::H24 => "24h",
        }
    }

    /// The period in seconds.
    pub fn secs(self) -> u64 {
        match self {
            Interval::M1 => 60,
            Interval::M15 => 900,
            Interval::H1 => 3600,
            Interval::H4 => 14_400,
            Interval::H24 => 86_400,
        }
    }
}

/// Direction index: 0 ingress, 1 egress.
pub const DIRECTIONS: [&str; 2] = ["ingress", "egress"];

/// Per-interface sums of one exporter and direction.
#[derive(Debug, Default, Clone)]
pub struct IfAgg {
    /// Bytes.
    pub bytes: u64,
    /// Bytes per ranked address.
    pub ips: Sums<IpAddr>,
    /// Bytes per protocol.
    pub protocols: Sums<u8>,
}

/// Sums of one exporter and direction.
#[derive(Debug, Default, Clone)]
pub struct DirAgg {
    /// Bytes.
    pub bytes: u64,
    /// Flows.
    pub flows: u64,
    /// Per interface.
    pub ifaces: HashMap<u32, IfAgg>,
    /// Bytes per ranked address (source for ingress, destination for egress).
    pub ips: Sums<IpAddr>,
    /// Bytes per protocol.
    pub protocols: Sums<u8>,
    /// Bytes per source/destination pair.
    pub conns: Sums<(IpAddr, IpAddr)>,
    /// Bytes per destination port.
    pub dst_ports: Sums<u16>,
}

/// The sums of one window.
#[derive(Debug, Default, Clone)]
pub struct Window {
    exporters: HashMap<IpAddr, Box<[DirAgg; 2]>>,
    flows: u64,
}

impl Window {
    /// An empty window.
    pub fn new() -> Window {
        Window::default()
    }

    /// Adds one flow.
    pub fn add(&mut self, f: &Flow) {
        self.flows += 1;
        let egress = f.direction == Flow::EGRESS;
        let dirs = self.exporters.entry(f.exporter).or_default();
        let d = &mut dirs[usize::from(egress)];
        let (iface, ip) = if egress {
            (f.output_if, f.dst_addr)
        } else {
            (f.input_if, f.src_addr)
        };
        let b = f.bytes;
        d.bytes = d.bytes.saturating_add(b);
        d.flows += 1;
        let i = d.ifaces.entry(iface).or_default();
        i.bytes = i.bytes.saturating_add(b);
        i.ips.add(ip, b);
        i.protocols.add(f.protocol, b);
        d.ips.add(ip, b);
        d.protocols.add(f.protocol, b);
        d.conns.add((f.src_addr, f.dst_addr), b);
        d.dst_ports.add(f.dst_port, b);
    }

    /// The window a store's aggregation pushdown summed ([`jobs::read_window_sums`]): the same
    /// [`Window::values`] as adding the flows one by one, because each top list it holds is
    /// the first entries of the full ranking, and a ranking's top `n` of its own top `n` is
    /// itself (for `n >= TOP_N`).
    ///
    /// [`jobs::read_window_sums`]: netflow_store::jobs::read_window_sums
    pub fn from_sums(sums: &netflow_store::window_sums::WindowSums) -> Window {
        let mut w = Window::new();
        for e in &sums.exporters {
            let dirs = w.exporters.entry(e.exporter).or_default();
            for (d, s) in dirs.iter_mut().zip(&e.directions) {
                w.flows += s.flows;
                d.bytes = s.bytes;
                d.flows = s.flows;
                for i in &s.interfaces {
                    let ia = d.ifaces.entry(i.interface).or_default();
                    ia.bytes = i.bytes;
                    for &(a, v) in &i.top_addrs {
                        ia.ips.add(a, v);
                    }
                    for &(p, v) in &i.top_protocols {
                        ia.protocols.add(p, v);
                    }
                }
                for &(a, v) in &s.top_addrs {
                    d.ips.add(a, v);
                }
                for &(p, v) in &s.top_protocols {
                    d.protocols.add(p, v);
                }
                for &(pair, v) in &s.top_pairs {
                    d.conns.add(pair, v);
                }
                for &(p, v) in &s.top_dst_ports {
                    d.dst_ports.add(p, v);
                }
            }
        }
        w
    }

    /// Flows added.
    pub fn flows(&self) -> u64 {
        self.flows
    }

    /// Sums of one exporter: `[ingress, egress]`.
    pub fn exporter(&self, addr: IpAddr) -> Option<&[DirAgg; 2]> {
        self.exporters.get(&addr).map(|d| &**d)
    }

    /// Exporters seen, ordered.
    pub fn exporter_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.exporters.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Every value for `entities` (entity id, exporter address) under interval `label`.
    pub fn values(&self, label: &str, entities: &[(i64, IpAddr)]) -> Result<ValueBatch, PathError> {
        let mut batch = ValueBatch::new();
        let empty = DirAgg::default();
        let seg = |s: &str| Segment::new(s);
        let (s_entity, s_if, s_topip, s_proto, s_conn, s_ports) = (
            seg("entity")?,
            seg("if")?,
            seg("topip")?,
            seg("topprotocol")?,
            seg("topconn")?,
            seg("topdstports")?,
        );
        let distinct: BTreeSet<IpAddr> = entities.iter().map(|e| e.1).collect();
        for (di, dname) in DIRECTIONS.iter().enumerate() {
            let base = ValuePath::from_segments([&seg("netflow")?, &seg(label)?, &seg(dname)?])?;
            let total: u64 = distinct
                .iter()
                .filter_map(|a| self.exporters.get(a))
                .fold(0u64, |s, d| s.saturating_add(d[di].bytes));
            batch.insert(base.clone(), total);
            for &(eid, addr) in entities {
                let d = self.exporters.get(&addr).map_or(&empty, |x| &x[di]);
                let e = base.child(&s_entity)?.child(&Segment::from(eid))?;
                batch.insert(e.clone(), d.bytes);
                for (iface, ia) in &d.ifaces {
                    let ip = e.child(&s_if)?.child(&Segment::from(*iface))?;
                    batch.insert(ip.clone(), ia.bytes);
                    for (a, v) in ia.ips.top(TOP_N) {
                        batch.insert(ip.child(&s_topip)?.child(&Segment::ip(a))?, v);
                    }
                    for (p, v) in ia.protocols.top(TOP_N) {
                        batch.insert(ip.child(&s_proto)?.child(&protocol_segment(p))?, v);
                    }
                }
                for (a, v) in d.ips.top(TOP_N) {
                    batch.insert(e.child(&s_topip)?.child(&Segment::ip(a))?, v);
                }
                for (p, v) in d.protocols.top(TOP_N) {
                    batch.insert(e.child(&s_proto)?.child(&protocol_segment(p))?, v);
                }
                for ((s, t), v) in d.conns.top(TOP_N) {
                    let p = e
                        .child(&s_conn)?
                        .child(&Segment::ip(s))?
                        .child(&Segment::ip(t))?;
                    batch.insert(p, v);
                }
                for (port, v) in d.dst_ports.top(TOP_N) {
                    batch.insert(e.child(&s_ports)?.child(&Segment::from(port))?, v);
                }
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[allow(clippy::too_many_arguments)]
    fn flow(
        exp: &str,
        dir: u8,
        inp: u32,
        out: u32,
        proto: u8,
        src: &str,
        dst: &str,
        dport: u16,
        bytes: u64,
    ) -> Flow {
        Flow {
            exporter: ip(exp),
            direction: dir,
            input_if: inp,
            output_if: out,
            protocol: proto,
            src_addr: ip(src),
            dst_addr: ip(dst),
            dst_port: dport,
            bytes,
            ..Flow::default()
        }
    }

    fn as_map(b: &ValueBatch) -> BTreeMap<String, f64> {
        b.iter()
            .map(|(p, v)| (p.as_str().to_owned(), v.as_f64()))
            .collect()
    }

    #[test]
    fn test_exact_values_small_window() {
        let mut w = Window::new();
        w.add(&flow(
            "192.0.2.1",
            0,
            3,
            9,
            6,
            "10.0.0.1",
            "10.0.0.2",
            443,
            1000,
        ));
        w.add(&flow(
            "192.0.2.1",
            0,
            3,
            9,
            17,
            "10.0.0.1",
            "10.0.0.3",
            53,
            200,
        ));
        w.add(&flow(
            "192.0.2.1",
            0,
            4,
            9,
            6,
            "2001:db8::1",
            "2001:db8::2",
            80,
            50,
        ));
        w.add(&flow("192.0.2.1", 1, 3, 9, 1, "10.0.0.5", "10.0.0.6", 0, 7));
        w.add(&flow(
            "192.0.2.99",
            0,
            1,
            1,
            6,
            "10.9.9.9",
            "10.9.9.8",
            22,
            123_456,
        )); // not an entity
        let got = as_map(&w.values("1min", &[(77, ip("192.0.2.1"))]).expect("values"));
        let p = "netflow.1min.ingress.entity.77";
        let q = "netflow.1min.egress.entity.77";
        let want: BTreeMap<String, f64> = [
            ("netflow.1min.ingress".to_owned(), 1250.0),
            (p.to_owned(), 1250.0),
            (format!("{p}.if.3"), 1200.0),
            (format!("{p}.if.3.topip.10%2e0%2e0%2e1"), 1200.0),
            (format!("{p}.if.3.topprotocol.TCP"), 1000.0),
            (format!("{p}.if.3.topprotocol.UDP"), 200.0),
            (format!("{p}.if.4"), 50.0),
            (format!("{p}.if.4.topip.2001%3adb8%3a%3a1"), 50.0),
            (format!("{p}.if.4.topprotocol.TCP"), 50.0),
            (format!("{p}.topip.10%2e0%2e0%2e1"), 1200.0),
            (format!("{p}.topip.2001%3adb8%3a%3a1"), 50.0),
            (format!("{p}.topprotocol.TCP"), 1050.0),
            (format!("{p}.topprotocol.UDP"), 200.0),
            (format!("{p}.topconn.10%2e0%2e0%2e1.10%2e0%2e0%2e2"), 1000.0),
            (format!("{p}.topconn.10%2e0%2e0%2e1.10%2e0%2e0%2e3"), 200.0),
            (
                format!("{p}.topconn.2001%3adb8%3a%3a1.2001%3adb8%3a%3a2"),
                50.0,
            ),
            (format!("{p}.topdstports.443"), 1000.0),
            (format!("{p}.topdstports.53"), 200.0),
            (format!("{p}.topdstports.80"), 50.0),
            ("netflow.1min.egress".to_owned(), 7.0),
            (q.to_owned(), 7.0),
            (format!("{q}.if.9"), 7.0),
            (format!("{q}.if.9.topip.10%2e0%2e0%2e6"), 7.0),
            (format!("{q}.if.9.topprotocol.ICMP"), 7.0),
            (format!("{q}.topip.10%2e0%2e0%2e6"), 7.0),
            (format!("{q}.topprotocol.ICMP"), 7.0),
            (format!("{q}.topconn.10%2e0%2e0%2e5.10%2e0%2e0%2e6"), 7.0),
            (format!("{q}.topdstports.0"), 7.0),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn test_empty_entity_reports_zero_totals() {
        let w = Window::new();
        let got = as_map(&w.values("24h", &[(5, ip("192.0.2.1"))]).expect("values"));
        let want: BTreeMap<String, f64> = [
            "netflow.24h.ingress",
            "netflow.24h.ingress.entity.5",
            "netflow.24h.egress",
            "netflow.24h.egress.entity.5",
        ]
        .into_iter()
        .map(|p| (p.to_owned(), 0.0))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn test_top_n_ties_are_deterministic() {
        // 12 sources with equal bytes: the 10 smallest addresses win, in address order.
        let mut w = Window::new();
        for i in (1..=12u8).rev() {
            w.add(&flow(
                "192.0.2.1",
                0,
                1,
                0,
                6,
                &format!("10.0.0.{i}"),
                "10.1.1.1",
                1,
                100,
            ));
        }
        w.add(&flow(
            "192.0.2.1",
            0,
            1,
            0,
            6,
            "2001:db8::9",
            "10.1.1.1",
            1,
            100,
        ));
        let got = as_map(&w.values("1min", &[(1, ip("192.0.2.1"))]).expect("values"));
        let tops: Vec<&String> = got
            .keys()
            .filter(|k| k.starts_with("netflow.1min.ingress.entity.1.topip."))
            .collect();
        assert_eq!(tops.len(), 10);
        for i in 1..=10 {
            assert!(got.contains_key(&format!(
                "netflow.1min.ingress.entity.1.topip.10%2e0%2e0%2e{i}"
            )));
        }
        let mut m: Sums<u16> = Sums::default();
        for (k, v) in [(5, 10), (1, 10), (3, 20), (2, 10)] {
            m.add(k, v);
        }
        assert_eq!(m.top(3), vec![(3, 20), (1, 10), (2, 10)]);
        assert_eq!(m.top(0), vec![]);
    }

    #[test]
    fn test_two_entities_same_exporter_and_account_total() {
        let mut w = Window::new();
        w.add(&flow(
            "192.0.2.1",
            0,
            1,
            0,
            6,
            "10.0.0.1",
            "10.0.0.2",
            1,
            10,
        ));
        w.add(&flow("192.0.2.2", 0, 1, 0, 6, "10.0.0.1", "10.0.0.2", 1, 5));
        let ents = [
            (1, ip("192.0.2.1")),
            (2, ip("192.0.2.1")),
            (3, ip("192.0.2.2")),
        ];
        let got = as_map(&w.values("1h", &ents).expect("values"));
        assert_eq!(got["netflow.1h.ingress"], 15.0); // distinct exporters, not entities
        assert_eq!(got["netflow.1h.ingress.entity.1"], 10.0);
        assert_eq!(got["netflow.1h.ingress.entity.2"], 10.0);
        assert_eq!(got["netflow.1h.ingress.entity.3"], 5.0);
    }

    #[test]
    fn test_bad_protocol_names_make_valid_paths() {
        let mut w = Window::new();
        for p in [39u8, 84, 107, 124, 135, 255, 58] {
            w.add(&flow(
                "192.0.2.1",
                0,
                1,
                0,
                p,
                "10.0.0.1",
                "10.0.0.2",
                1,
                u64::from(p),
            ));
        }
        let b = w.values("1min", &[(1, ip("192.0.2.1"))]).expect("values");
        for (p, _) in b.iter() {
            grafolean_client::validate_path(p.as_str()).expect("valid");
        }
        let m = as_map(&b);
        assert!(
            m.contains_key("netflow.1min.ingress.entity.1.topprotocol.IPv6-ICMP"),
            "{m:?}"
        );
    }

    #[test]
    fn test_counters_saturate() {
        let mut w = Window::new();
        w.add(&flow(
            "192.0.2.1",
            0,
            1,
            0,
            6,
            "10.0.0.1",
            "10.0.0.2",
            1,
            u64::MAX,
        ));
        w.add(&flow("192.0.2.1", 0, 1, 0, 6, "10.0.0.1", "10.0.0.2", 1, 5));
        let m = as_map(&w.values("1min", &[(1, ip("192.0.2.1"))]).expect("values"));
        assert_eq!(m["netflow.1min.ingress.entity.1"], u64::MAX as f64);
    }
}
