//! Forensic queries over the stored flows: a backend-neutral description ([`Query`]) that each
//! backend compiles into **one parameterized SQL statement** (every value bound, never spliced
//! into the SQL text) and runs inside the database: filtering, `GROUP BY`, `ORDER BY` and
//! `LIMIT` included, so the caller's memory does not grow with the result.
//!
//! A query has a time window (`from <= ts <= to`, which on PostgreSQL prunes the hourly
//! partitions), an optional filter [`Expr`], and an [`Output`]: the matching flows newest first,
//! or groups of flows by some keys with their flow, packet and byte totals. Results are handed
//! to a callback row by row ([`QueryRow`]), and [`crate::FlowRead::query`] returns the [`Totals`]
//! of every matching flow.
//!
//! ```
//! use std::ops::ControlFlow;
//! use netflow_store::query::{Cmp, Expr, Key, Order, Output, Pred, Query, QueryRow, Side};
//! use netflow_store::{open, Flow, StoreConfig};
//!
//! # let path = std::env::temp_dir().join(format!("netflow-query-doc-{}.db", std::process::id()));
//! # let url = format!("sqlite:{}", path.display());
//! let mut store = open(&StoreConfig::from_url(&url)?)?;
//! let flow = |src: &str, port, bytes| Flow {
//!     ts_micros: 1_700_000_000_000_000,
//!     src_addr: src.parse().unwrap(),
//!     dst_addr: "192.0.2.1".parse().unwrap(),
//!     protocol: 6,
//!     dst_port: port,
//!     bytes,
//!     packets: 1,
//!     ..Flow::default()
//! };
//! store.write_flows(&[flow("10.0.0.1", 443, 100), flow("10.0.0.2", 443, 300), flow("10.0.0.2", 22, 50)])?;
//!
//! // the top source addresses by bytes of the flows to port 443
//! let q = Query {
//!     from_micros: 0,
//!     to_micros: i64::MAX,
//!     filter: Some(Expr::Pred(Pred::Port { side: Side::Dst, cmp: Cmp::Eq, port: 443 })),
//!     output: Output::Groups { keys: vec![Key::SRC_ADDR], either: None, order: Order::Bytes, limit: Some(10) },
//! };
//! let mut rows = Vec::new();
//! let totals = store.query(&q, &mut |r: QueryRow<'_>| {
//!     if let QueryRow::Group(g) = r {
//!         rows.push((g.keys[0].to_string(), g.bytes));
//!     }
//!     ControlFlow::Continue(())
//! })?;
//! assert_eq!(rows, [("10.0.0.2".to_owned(), 300), ("10.0.0.1".to_owned(), 100)]);
//! assert_eq!((totals.flows, totals.bytes), (2, 400));
//! # drop(store);
//! # for ext in ["", "-wal", "-shm"] { let _ = std::fs::remove_file(format!("{}{ext}", path.display())); }
//! # Ok::<(), netflow_store::StoreError>(())
//! ```

use std::fmt;
use std::net::IpAddr;

use crate::{Flow, StoreError};

/// Most values a list (`ip in [...]`, `port in [...]`) may hold: SQLite caps bound parameters.
pub const MAX_LIST: usize = 1000;

/// Most predicates a filter may hold (a bound on the SQL text and its parameters).
pub const MAX_PREDICATES: usize = 2000;

/// One query: time window, filter, what to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// First instant of the window (inclusive), microseconds since the Unix epoch.
    pub from_micros: i64,
    /// Last instant of the window (inclusive), microseconds since the Unix epoch.
    pub to_micros: i64,
    /// Which flows of the window match; `None` matches all.
    pub filter: Option<Expr>,
    /// What comes back.
    pub output: Output,
}

/// What a [`Query`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// The matching flows themselves, newest first (then by exporter), at most `limit`.
    Flows {
        /// Most flows to return, `None` for all.
        limit: Option<u64>,
    },
    /// Groups of the matching flows by `keys`, with their totals, ordered by `order`
    /// (descending, ties by the keys ascending), at most `limit`.
    Groups {
        /// What the flows are grouped by (at least one key unless `either` is set).
        keys: Vec<Key>,
        /// Also group by this address or port field taken from either side: each flow then
        /// counts once for its source and once for its destination value (nfdump's `-s ip`,
        /// `-s port`); its value comes first in [`Group::keys`].
        either: Option<Either>,
        /// The order of the groups.
        order: Order,
        /// Most groups to return, `None` for all.
        limit: Option<u64>,
    },
}

/// A field taken from either side of a flow (see [`Output::Groups::either`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either {
    /// Source or destination address.
    Addr,
    /// Source or destination port.
    Port,
}

/// Descending order of groups by one of their totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Number of flows (nfdump's default).
    #[default]
    Flows,
    /// Sum of packets.
    Packets,
    /// Sum of bytes.
    Bytes,
}

/// A flow column to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `src_addr`
    SrcAddr,
    /// `dst_addr`
    DstAddr,
    /// `src_port`
    SrcPort,
    /// `dst_port`
    DstPort,
    /// `protocol`
    Protocol,
    /// `input_if`
    InputIf,
    /// `output_if`
    OutputIf,
    /// `exporter`
    Exporter,
}

/// A grouping key: a field, for addresses with the prefix lengths applied to IPv4 and IPv6
/// values (`10.0.0.7` grouped by /24 is `10.0.0.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The column.
    pub field: Field,
    /// Prefix length kept of IPv4 addresses (32: all).
    pub v4_bits: u8,
    /// Prefix length kept of IPv6 addresses (128: all).
    pub v6_bits: u8,
}

impl Key {
    /// The source address, unmasked.
    pub const SRC_ADDR: Key = Key::of(Field::SrcAddr);
    /// The destination address, unmasked.
    pub const DST_ADDR: Key = Key::of(Field::DstAddr);

    /// `field`, addresses unmasked.
    pub const fn of(field: Field) -> Key {
        Key {
            field,
            v4_bits: 32,
            v6_bits: 128,
        }
    }

    /// Whether a prefix shorter than the address is applied.
    pub fn is_masked(&self) -> bool {
        self.v4_bits < 32 || self.v6_bits < 128
    }
}

/// A group's key value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// An address (or network address, when masked).
    Addr(IpAddr),
    /// A port.
    Port(u16),
    /// An IP protocol number.
    Protocol(u8),
    /// An interface index.
    Interface(u32),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Addr(a) => a.fmt(f),
            Value::Port(p) => p.fmt(f),
            Value::Protocol(p) => p.fmt(f),
            Value::Interface(i) => i.fmt(f),
        }
    }
}

/// One group of [`Output::Groups`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group<'a> {
    /// The key values, in the order of the query's keys (the `either` value first).
    pub keys: &'a [Value],
    /// Flows in the group.
    pub flows: u64,
    /// Their packets.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One result row handed to the callback of [`crate::FlowRead::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryRow<'a> {
    /// A flow of [`Output::Flows`] (every stored field filled, see the crate docs).
    Flow(&'a Flow),
    /// A group of [`Output::Groups`].
    Group(Group<'a>),
}

/// Flows, packets and bytes of every flow that matched the window and filter (not only of the
/// rows returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Totals {
    /// Matching flows.
    pub flows: u64,
    /// Their packets.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Totals {
    /// Totals with these numbers.
    pub fn new(flows: u64, packets: u64, bytes: u64) -> Totals {
        Totals {
            flows,
            packets,
            bytes,
        }
    }

    /// Counts one more flow (sums saturate, as the servers' do).
    pub fn add(&mut self, flow: &Flow) {
        self.flows += 1;
        self.packets = self.packets.saturating_add(flow.packets);
        self.bytes = self.bytes.saturating_add(flow.bytes);
    }
}

/// A filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Not.
    Not(Box<Expr>),
    /// One test on a flow.
    Pred(Pred),
}

/// Which address or port of a flow a predicate tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// Either (source or destination).
    Either,
}

/// Which interface a predicate tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfSide {
    /// `input_if`
    In,
    /// `output_if`
    Out,
    /// Either.
    Either,
}

/// A comparison of a column with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// The SQL operator.
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// A counter of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `bytes`
    Bytes,
    /// `packets`
    Packets,
}

/// An address prefix: `addr` with its first `len` bits significant (a host is `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The address (bits after `len` are ignored).
    pub addr: IpAddr,
    /// Prefix length, at most 32 (IPv4) or 128 (IPv6).
    pub len: u8,
}

impl Net {
    /// A single address.
    pub fn host(addr: IpAddr) -> Net {
        Net {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The first and last address of the prefix, as the 4- or 16-byte big-endian values.
    pub(crate) fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let bytes = match self.addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let (mut lo, mut hi) = (bytes.clone(), bytes);
        for i in 0..lo.len() {
            let bit0 = i * 8;
            let keep = usize::from(self.len).saturating_sub(bit0).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            lo[i] &= mask;
            hi[i] |= !mask;
        }
        (lo, hi)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        mask_addr(self.addr, self.len, self.len)
    }
}

/// `addr` with only its first `v4_bits` (IPv4) or `v6_bits` (IPv6) bits kept.
pub fn mask_addr(addr: IpAddr, v4_bits: u8, v6_bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(v4_bits.min(32));
            let m = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u32::from(v6_bits.min(128));
            let m = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 flows.
    V4,
    /// IPv6 flows.
    V6,
}

/// One test on a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pred {
    /// The address on `side` lies in one of `nets` (one for `ip A`/`net N`, several for
    /// `ip in [...]`).
    Addr {
        /// Which address.
        side: Side,
        /// The prefixes.
        nets: Vec<Net>,
    },
    /// The port on `side` compares so with `port`.
    Port {
        /// Which port.
        side: Side,
        /// The comparison.
        cmp: Cmp,
        /// The value.
        port: u16,
    },
    /// The port on `side` is one of `ports`.
    PortIn {
        /// Which port.
        side: Side,
        /// The values.
        ports: Vec<u16>,
    },
    /// The IP protocol number.
    Protocol(u8),
    /// An interface index compares so with `index`.
    Interface {
        /// Which interface.
        side: IfSide,
        /// The comparison.
        cmp: Cmp,
        /// The value.
        index: u32,
    },
    /// The exporter's address lies in `net`.
    Exporter(Net),
    /// Every TCP flag of the mask is set (`flags SA`: SYN and ACK).
    Flags(u8),
    /// A counter compares so with `value`.
    Counter {
        /// Bytes or packets.
        counter: Counter,
        /// The comparison.
        cmp: Cmp,
        /// The value.
        value: u64,
    },
    /// The flow's source address is of this family.
    Family(Family),
}

impl Query {
    /// Checks what the SQL compilers rely on: a window inside the storable years, lists of 1
    /// to [`MAX_LIST`] values, at most [`MAX_PREDICATES`] predicates, prefix lengths within
    /// their family, group keys present.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |why| Err(StoreError::Query(why));
        crate::partition::check_ts(self.from_micros.max(crate::partition::MIN_TS_MICROS))?;
        if self.from_micros > self.to_micros {
            return bad("the window ends before it starts");
        }
        if let Output::Groups { keys, either, .. } = &self.output {
            if keys.is_empty() && either.is_none() {
                return bad("a grouping needs at least one key");
            }
            if keys.len() > 16 {
                return bad("more than 16 grouping keys");
            }
            if keys.iter().any(|k| k.v4_bits > 32 || k.v6_bits > 128) {
                return bad("a grouping prefix is longer than the address");
            }
        }
        let mut n = 0;
        if let Some(e) = &self.filter {
            check_expr(e, &mut n)?;
        }
        Ok(())
    }
}

fn check_expr(e: &Expr, n: &mut usize) -> Result<(), StoreError> {
    *n += 1;
    if *n > MAX_PREDICATES {
        return Err(StoreError::Query("the filter has too many terms"));
    }
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check_expr(a, n)?;
            check_expr(b, n)
        }
        Expr::Not(a) => check_expr(a, n),
        Expr::Pred(p) => check_pred(p),
    }
}

fn check_pred(p: &Pred) -> Result<(), StoreError> {
    let net_ok = |n: &Net| n.len <= if n.addr.is_ipv4() { 32 } else { 128 };
    let ok = match p {
        Pred::Addr { nets, .. } => (1..=MAX_LIST).contains(&nets.len()) && nets.iter().all(net_ok),
        Pred::PortIn { ports, .. } => (1..=MAX_LIST).contains(&ports.len()),
        Pred::Exporter(n) => net_ok(n),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Query(
            "a list must hold 1 to 1000 values and a prefix fit its address",
        ))
    }
}

/// The SQL column of a field.
pub(crate) fn column(f: Field) -> &'static str {
    match f {
        Field::SrcAddr => "src_addr",
        Field::DstAddr => "dst_addr",
        Field::SrcPort => "src_port",
        Field::DstPort => "dst_port",
        Field::Protocol => "protocol",
        Field::InputIf => "input_if",
        Field::OutputIf => "output_if",
        Field::Exporter => "exporter",
    }
}

/// The ORDER BY expression of the totals (`flows`, `packets`, `bytes` are the select aliases).
pub(crate) fn order_column(o: Order) -> &'static str {
    match o {
        Order::Flows => "flows",
        Order::Packets => "packets",
        Order::Bytes => "bytes",
    }
}

/// The columns the grouped query selects for each key, with the `either` field first: its
/// name in the inner select (`k0`, `k1`, ...) and the field (for decoding).
pub(crate) fn group_fields(keys: &[Key], either: Option<Either>) -> Vec<(Field, Option<Key>)> {
    let mut v = Vec::new();
    match either {
        Some(Either::Addr) => v.push((Field::SrcAddr, None)),
        Some(Either::Port) => v.push((Field::SrcPort, None)),
        None => {}
    }
    v.extend(keys.iter().map(|k| (k.field, Some(*k))));
    v
}

/// The columns a predicate on `side` tests.
pub(crate) fn side_columns(side: Side, src: &'static str, dst: &'static str) -> Vec<&'static str> {
    match side {
        Side::Src => vec![src],
        Side::Dst => vec![dst],
        Side::Either => vec![src, dst],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_net_bounds_and_masks() {
        let n = Net {
            addr: "10.1.2.3".parse().unwrap(),
            len: 20,
        };
        let (lo, hi) = n.bounds();
        assert_eq!(lo, [10, 1, 0, 0]);
        assert_eq!(hi, [10, 1, 15, 255]);
        assert_eq!(n.network(), "10.1.0.0".parse::<IpAddr>().unwrap());
        let h = Net::host("2001:db8::1".parse().unwrap());
        assert_eq!(h.bounds().0, h.bounds().1);
        assert_eq!(
            mask_addr("2001:db8:1:2::9".parse().unwrap(), 32, 48),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            mask_addr("10.9.8.7".parse().unwrap(), 0, 128),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn test_validate_refuses_what_sql_cannot_hold() {
        let mut q = Query {
            from_micros: 0,
            to_micros: 1,
            filter: Some(Expr::Pred(Pred::PortIn {
                side: Side::Src,
                ports: vec![],
            })),
            output: Output::Flows { limit: None },
        };
        assert!(matches!(q.validate(), Err(StoreError::Query(_))));
        q.filter = None;
        assert!(q.validate().is_ok());
        q.output = Output::Groups {
            keys: vec![],
            either: None,
            order: Order::Flows,
            limit: None,
        };
        assert!(q.validate().is_err());
        q.output = Output::Flows { limit: None };
        q.from_micros = 2;
        assert!(q.validate().is_err());
    }
}
