//! `Store::query` on every backend against a plain Rust evaluation of the same query over the
//! same flows: every filter form, every grouping, masks, orders, limits, windows.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::ControlFlow;

use common::{HOUR, T0, as_stored};
use netflow_store::query::{
    Cmp, Counter, Either, Expr, Family, Field, IfSide, Key, Net, Order, Output, Pred, Query,
    QueryRow, Side, Totals, Value, mask_addr,
};
use netflow_store::{Flow, Store, StoreError};

macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[test]
            fn $name() {
                let db = super::common::PgDb::new();
                let mut store = netflow_store::open(&db.config).expect("open PostgreSQL store");
                super::$name(&mut *store);
            })*
        }
        mod sqlite {
            $(#[test]
            fn $name() {
                let db = super::common::SqliteDb::new();
                let mut store = netflow_store::open(&db.config).expect("open SQLite store");
                super::$name(&mut *store);
            })*
        }
        mod clickhouse {
            $(#[test]
            fn $name() {
                let db = super::common::ClickHouseDb::new();
                let mut store = netflow_store::open(&db.config).expect("open ClickHouse store");
                super::$name(&mut *store);
            })*
        }
    };
}

every_backend!(
    queries_equal_the_reference,
    extreme_values_in_every_value_position,
    sums_beyond_i64_are_refused,
    flows_come_newest_first_and_stop_on_break,
    invalid_queries_are_refused
);

fn rng(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 900 flows over three hours (three PostgreSQL partitions), IPv4 and IPv6, skewed values.
fn flows() -> Vec<Flow> {
    let mut s = 7;
    (0..900)
        .map(|i| {
            let r = rng(&mut s);
            let v6 = r.is_multiple_of(5);
            let pick = |n: u64, shift: u32| (r >> shift) % n;
            let src: IpAddr = if r.is_multiple_of(15) {
                // IPv6 in IPv4-mapped form: the same bytes as an IPv4 source on ClickHouse
                format!("::ffff:10.0.{}.{}", pick(3, 10), pick(9, 14))
                    .parse()
                    .unwrap()
            } else if v6 {
                format!("2001:db8:{}::{}", pick(3, 8), pick(7, 12))
                    .parse()
                    .unwrap()
            } else {
                format!("10.{}.{}.{}", pick(2, 8), pick(3, 10), pick(9, 14))
                    .parse()
                    .unwrap()
            };
            let dst: IpAddr = if v6 {
                format!("2001:db8:ff::{}", pick(4, 18)).parse().unwrap()
            } else {
                format!("192.0.2.{}", pick(6, 18)).parse().unwrap()
            };
            as_stored(&Flow {
                ts_micros: T0 + i64::from(i) * 12_000_000 + (r % 1000) as i64,
                exporter: if r.is_multiple_of(7) {
                    "::ffff:127.0.0.1"
                } else if r.is_multiple_of(3) {
                    "127.0.0.1"
                } else {
                    "127.0.0.2"
                }
                .parse()
                .unwrap(),
                input_if: pick(4, 20) as u32 + 1,
                output_if: pick(3, 22) as u32 + 1,
                direction: (pick(2, 24)) as u8,
                protocol: [6, 6, 17, 1][pick(4, 26) as usize],
                src_addr: src,
                dst_addr: dst,
                src_port: [443, 80, 53, 40000, 51515][pick(5, 28) as usize],
                dst_port: [443, 22, 8080, 53, 1024][pick(5, 31) as usize],
                bytes: pick(5000, 34) + 40,
                packets: pick(40, 47) + 1,
                tcp_flags: pick(256, 53) as u8,
                ..Flow::default()
            })
        })
        .collect()
}

fn cmp(c: Cmp, a: u64, b: u64) -> bool {
    match c {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

fn in_net(a: IpAddr, n: &Net) -> bool {
    a.is_ipv4() == n.addr.is_ipv4() && mask_addr(a, n.len, n.len) == n.network()
}

fn side<T>(s: Side, src: T, dst: T) -> Vec<T> {
    match s {
        Side::Src => vec![src],
        Side::Dst => vec![dst],
        Side::Either => vec![src, dst],
    }
}

fn matches(e: &Expr, f: &Flow) -> bool {
    match e {
        Expr::And(a, b) => matches(a, f) && matches(b, f),
        Expr::Or(a, b) => matches(a, f) || matches(b, f),
        Expr::Not(a) => !matches(a, f),
        Expr::Pred(p) => match p {
            Pred::Addr { side: s, nets } => side(*s, f.src_addr, f.dst_addr)
                .into_iter()
                .any(|a| nets.iter().any(|n| in_net(a, n))),
            Pred::Port {
                side: s,
                cmp: c,
                port,
            } => side(*s, f.src_port, f.dst_port)
                .into_iter()
                .any(|p| cmp(*c, p.into(), (*port).into())),
            Pred::PortIn { side: s, ports } => side(*s, f.src_port, f.dst_port)
                .into_iter()
                .any(|p| ports.contains(&p)),
            Pred::Protocol(n) => f.protocol == *n,
            Pred::Interface {
                side: s,
                cmp: c,
                index,
            } => {
                let v = match s {
                    IfSide::In => vec![f.input_if],
                    IfSide::Out => vec![f.output_if],
                    IfSide::Either => vec![f.input_if, f.output_if],
                };
                v.into_iter().any(|i| cmp(*c, i.into(), (*index).into()))
            }
            Pred::Exporter(n) => in_net(f.exporter, n),
            Pred::Flags(m) => f.tcp_flags & m == *m,
            Pred::Counter {
                counter,
                cmp: c,
                value,
            } => {
                let v = match counter {
                    Counter::Bytes => f.bytes,
                    Counter::Packets => f.packets,
                };
                cmp(*c, v, *value)
            }
            Pred::Family(Family::V4) => f.src_addr.is_ipv4(),
            Pred::Family(Family::V6) => f.src_addr.is_ipv6(),
            _ => unreachable!("a predicate this test does not know"),
        },
    }
}

fn field_value(f: &Flow, k: &Key) -> Value {
    match k.field {
        Field::SrcAddr => Value::Addr(mask_addr(f.src_addr, k.v4_bits, k.v6_bits)),
        Field::DstAddr => Value::Addr(mask_addr(f.dst_addr, k.v4_bits, k.v6_bits)),
        Field::Exporter => Value::Addr(mask_addr(f.exporter, k.v4_bits, k.v6_bits)),
        Field::SrcPort => Value::Port(f.src_port),
        Field::DstPort => Value::Port(f.dst_port),
        Field::Protocol => Value::Protocol(f.protocol),
        Field::InputIf => Value::Interface(f.input_if),
        Field::OutputIf => Value::Interface(f.output_if),
    }
}

type Row = (Vec<Value>, u64, u64, u64);

/// The query evaluated in Rust.
fn reference(q: &Query, all: &[Flow]) -> (Vec<Row>, Vec<Flow>, Totals) {
    let hit: Vec<&Flow> = all
        .iter()
        .filter(|f| f.ts_micros >= q.from_micros && f.ts_micros <= q.to_micros)
        .filter(|f| q.filter.as_ref().is_none_or(|e| matches(e, f)))
        .collect();
    let totals = Totals::new(
        hit.len() as u64,
        hit.iter().map(|f| f.packets).sum(),
        hit.iter().map(|f| f.bytes).sum(),
    );
    match &q.output {
        Output::Flows { limit } => {
            let mut v: Vec<Flow> = hit.into_iter().copied().collect();
            v.sort_by(|a, b| {
                b.ts_micros
                    .cmp(&a.ts_micros)
                    .then(a.exporter.cmp(&b.exporter))
            });
            v.truncate(limit.map_or(usize::MAX, |l| l as usize));
            (Vec::new(), v, totals)
        }
        Output::Groups {
            keys,
            either,
            order,
            limit,
        } => {
            let mut m: BTreeMap<Vec<Value>, (u64, u64, u64)> = BTreeMap::new();
            for f in hit {
                let firsts: Vec<Option<Value>> = match either {
                    Some(Either::Addr) => {
                        vec![Some(Value::Addr(f.src_addr)), Some(Value::Addr(f.dst_addr))]
                    }
                    Some(Either::Port) => {
                        vec![Some(Value::Port(f.src_port)), Some(Value::Port(f.dst_port))]
                    }
                    _ => vec![None],
                };
                for first in firsts {
                    let mut k: Vec<Value> = first.into_iter().collect();
                    k.extend(keys.iter().map(|key| field_value(f, key)));
                    let e = m.entry(k).or_default();
                    *e = (e.0 + 1, e.1 + f.packets, e.2 + f.bytes);
                }
            }
            let mut v: Vec<Row> = m.into_iter().map(|(k, (a, b, c))| (k, a, b, c)).collect();
            let metric = |r: &Row| match order {
                Order::Flows => r.1,
                Order::Packets => r.2,
                Order::Bytes => r.3,
            };
            v.sort_by(|a, b| metric(b).cmp(&metric(a)).then(a.0.cmp(&b.0)));
            v.truncate(limit.map_or(usize::MAX, |l| l as usize));
            (v, Vec::new(), totals)
        }
        _ => unreachable!("an output this test does not know"),
    }
}

fn run(s: &mut dyn Store, q: &Query) -> (Vec<Row>, Vec<Flow>, Totals) {
    let (mut groups, mut flows) = (Vec::new(), Vec::new());
    let t = s
        .query(q, &mut |r| {
            match r {
                QueryRow::Group(g) => groups.push((g.keys.to_vec(), g.flows, g.packets, g.bytes)),
                QueryRow::Flow(f) => flows.push(*f),
                _ => unreachable!("a row this test does not know"),
            }
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{q:?}: {e}"));
    (groups, flows, t)
}

fn pred(p: Pred) -> Expr {
    Expr::Pred(p)
}

fn net(s: &str) -> Net {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let addr: IpAddr = a.parse().unwrap();
    match l.parse() {
        Ok(len) => Net { addr, len },
        Err(_) => Net::host(addr),
    }
}

fn filters() -> Vec<Option<Expr>> {
    let and = |a, b| Expr::And(Box::new(a), Box::new(b));
    let or = |a, b| Expr::Or(Box::new(a), Box::new(b));
    let not = |a| Expr::Not(Box::new(a));
    vec![
        None,
        Some(pred(Pred::Addr {
            side: Side::Src,
            nets: vec![net("10.1.2.3")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Either,
            nets: vec![net("192.0.2.3"), net("2001:db8:ff::1")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Dst,
            nets: vec![net("192.0.2.0/30")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Src,
            nets: vec![net("2001:db8:1::/48")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Either,
            nets: vec![net("10.0.0.0/9")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Src,
            nets: vec![net("::ffff:0.0.0.0/96")],
        })),
        Some(pred(Pred::Addr {
            side: Side::Src,
            nets: vec![
                net("::ffff:10.0.1.5"),
                net("10.0.2.3"),
                net("2001:db8:1::3"),
            ],
        })),
        Some(pred(Pred::Addr {
            side: Side::Src,
            nets: vec![net("::/0")],
        })),
        Some(pred(Pred::Exporter(net("::ffff:127.0.0.1")))),
        Some(pred(Pred::Exporter(net("127.0.0.0/8")))),
        Some(and(
            pred(Pred::Addr {
                side: Side::Src,
                nets: vec![net("10.0.1.5")],
            }),
            pred(Pred::Port {
                side: Side::Dst,
                cmp: Cmp::Eq,
                port: 443,
            }),
        )),
        Some(pred(Pred::Port {
            side: Side::Either,
            cmp: Cmp::Gt,
            port: 1023,
        })),
        Some(pred(Pred::Port {
            side: Side::Src,
            cmp: Cmp::Ne,
            port: 443,
        })),
        Some(pred(Pred::PortIn {
            side: Side::Either,
            ports: vec![22, 53],
        })),
        Some(pred(Pred::Protocol(17))),
        Some(pred(Pred::Interface {
            side: IfSide::Either,
            cmp: Cmp::Le,
            index: 1,
        })),
        Some(pred(Pred::Interface {
            side: IfSide::Out,
            cmp: Cmp::Eq,
            index: 2,
        })),
        Some(pred(Pred::Exporter(net("127.0.0.1")))),
        Some(and(pred(Pred::Protocol(6)), pred(Pred::Flags(0x12)))),
        Some(not(pred(Pred::Flags(0x10)))),
        Some(pred(Pred::Counter {
            counter: Counter::Bytes,
            cmp: Cmp::Gt,
            value: 4000,
        })),
        Some(pred(Pred::Counter {
            counter: Counter::Packets,
            cmp: Cmp::Lt,
            value: 5,
        })),
        Some(pred(Pred::Counter {
            counter: Counter::Bytes,
            cmp: Cmp::Gt,
            value: u64::MAX,
        })),
        Some(pred(Pred::Family(Family::V6))),
        Some(or(
            and(pred(Pred::Family(Family::V4)), not(pred(Pred::Protocol(1)))),
            pred(Pred::Port {
                side: Side::Dst,
                cmp: Cmp::Ge,
                port: 8080,
            }),
        )),
    ]
}

fn outputs() -> Vec<Output> {
    let g = |keys: Vec<Key>, either, order, limit| Output::Groups {
        keys,
        either,
        order,
        limit,
    };
    let k = Key::of;
    let masked = Key {
        field: Field::SrcAddr,
        v4_bits: 16,
        v6_bits: 40,
    };
    vec![
        Output::Flows { limit: None },
        Output::Flows { limit: Some(7) },
        g(vec![k(Field::SrcAddr)], None, Order::Bytes, Some(10)),
        g(vec![k(Field::DstAddr)], None, Order::Flows, None),
        g(vec![], Some(Either::Addr), Order::Packets, Some(5)),
        g(vec![k(Field::SrcPort)], None, Order::Flows, Some(3)),
        g(vec![k(Field::DstPort)], None, Order::Bytes, None),
        g(vec![], Some(Either::Port), Order::Flows, None),
        g(vec![k(Field::Protocol)], None, Order::Flows, None),
        g(vec![k(Field::InputIf)], None, Order::Packets, None),
        g(vec![k(Field::OutputIf)], None, Order::Flows, None),
        g(vec![k(Field::Exporter)], None, Order::Bytes, None),
        g(
            [
                Field::SrcAddr,
                Field::DstAddr,
                Field::SrcPort,
                Field::DstPort,
                Field::Protocol,
            ]
            .map(k)
            .to_vec(),
            None,
            Order::Bytes,
            Some(10),
        ),
        g(
            vec![masked, k(Field::DstAddr)],
            None,
            Order::Flows,
            Some(20),
        ),
    ]
}

fn queries_equal_the_reference(s: &mut dyn Store) {
    let all = flows();
    s.write_flows(&all).unwrap();
    let windows = [
        (T0 - HOUR, T0 + 4 * HOUR),
        (T0 + HOUR, T0 + 2 * HOUR - 1), // one hour exactly: its bounds both inclusive
        (T0 + 5 * HOUR, T0 + 6 * HOUR), // nothing
    ];
    let mut checked = 0;
    let mut nonempty = 0;
    for (from, to) in windows {
        for filter in filters() {
            for output in outputs() {
                let q = Query {
                    from_micros: from,
                    to_micros: to,
                    filter: filter.clone(),
                    output,
                };
                let want = reference(&q, &all);
                let got = run(s, &q);
                assert_eq!(got, want, "{q:?}");
                checked += 1;
                nonempty += usize::from(want.2.flows > 0);
            }
        }
    }
    assert!(
        nonempty > checked / 2,
        "{nonempty} of {checked} queries matched something"
    );
}

/// Every value position of the filter at its extremes, over the widest window: the SQL is
/// valid on each backend and selects what the reference does.
fn extreme_values_in_every_value_position(s: &mut dyn Store) {
    let mut all = flows();
    all.push(as_stored(&Flow {
        ts_micros: T0 + 7,
        exporter: "ff02::1".parse().unwrap(),
        input_if: u32::MAX,
        output_if: u32::MAX,
        protocol: 255,
        src_addr: "255.255.255.255".parse().unwrap(),
        dst_addr: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        src_port: u16::MAX,
        dst_port: u16::MAX,
        // the largest counters whose sums with the other flows' stay storable
        bytes: (i64::MAX - 1_000_000_000) as u64,
        packets: (i64::MAX - 1_000_000_000) as u64,
        tcp_flags: 255,
        ..Flow::default()
    }));
    s.write_flows(&all).unwrap();
    let p = |p| Some(pred(p));
    let filters = [
        p(Pred::Addr {
            side: Side::Either,
            nets: vec![net("255.255.255.255"), net("0.0.0.0/0")],
        }),
        p(Pred::Addr {
            side: Side::Dst,
            nets: vec![net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), net("::/0")],
        }),
        p(Pred::Addr {
            side: Side::Src,
            nets: (0..1000u32)
                .map(|i| Net::host(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))
                .collect(),
        }),
        // four lists of 1000 addresses: a statement longer than ClickHouse's default limit
        Some(Expr::Or(
            Box::new(pred(Pred::Addr {
                side: Side::Either,
                nets: (0..1000u32)
                    .map(|i| Net::host(IpAddr::from((0xc000_0200 + i).to_be_bytes())))
                    .collect(),
            })),
            Box::new(pred(Pred::Addr {
                side: Side::Either,
                nets: (0..1000u128)
                    .map(|i| {
                        Net::host(IpAddr::from(
                            ((0x2001_0db8_00ff_u128 << 80) + i).to_be_bytes(),
                        ))
                    })
                    .collect(),
            })),
        )),
        p(Pred::Port {
            side: Side::Either,
            cmp: Cmp::Eq,
            port: u16::MAX,
        }),
        p(Pred::PortIn {
            side: Side::Dst,
            ports: vec![0, u16::MAX],
        }),
        p(Pred::Protocol(255)),
        p(Pred::Interface {
            side: IfSide::Either,
            cmp: Cmp::Ge,
            index: u32::MAX,
        }),
        p(Pred::Exporter(net("ff00::/8"))),
        p(Pred::Exporter(net("0.0.0.0/0"))),
        p(Pred::Flags(255)),
        p(Pred::Counter {
            counter: Counter::Packets,
            cmp: Cmp::Ge,
            value: (i64::MAX - 1_000_000_000) as u64,
        }),
        p(Pred::Counter {
            counter: Counter::Bytes,
            cmp: Cmp::Ge,
            value: u64::MAX,
        }),
    ];
    let mut nonempty = 0;
    for filter in filters {
        for output in [
            Output::Flows { limit: Some(3) },
            Output::Groups {
                keys: vec![Key::of(Field::Exporter), Key::of(Field::DstPort)],
                either: None,
                order: Order::Flows,
                limit: None,
            },
        ] {
            let q = Query {
                from_micros: i64::MIN,
                to_micros: i64::MAX,
                filter: filter.clone(),
                output,
            };
            let want = reference(&q, &all);
            assert_eq!(run(s, &q), want, "{q:?}");
            nonempty += usize::from(want.2.flows > 0);
        }
    }
    assert!(nonempty >= 16, "only {nonempty} queries matched something");
}

/// Byte sums past `i64::MAX` are an error on every backend (their sums are 64-bit signed), not
/// a number that wrapped around.
fn sums_beyond_i64_are_refused(s: &mut dyn Store) {
    let f = |i: i64| Flow {
        ts_micros: T0 + i,
        bytes: i64::MAX as u64,
        packets: 1,
        ..common::flow(T0 + i, "192.0.2.1")
    };
    s.write_flows(&[f(0), f(1), f(2)]).unwrap();
    let q = Query {
        from_micros: T0,
        to_micros: T0 + HOUR,
        filter: None,
        output: Output::Groups {
            keys: vec![Key::of(Field::Protocol)],
            either: None,
            order: Order::Bytes,
            limit: None,
        },
    };
    let r = s.query(&q, &mut |_| ControlFlow::Continue(()));
    assert!(r.is_err(), "{r:?}");
}

fn flows_come_newest_first_and_stop_on_break(s: &mut dyn Store) {
    let all = flows();
    s.write_flows(&all).unwrap();
    let q = Query {
        from_micros: T0,
        to_micros: T0 + 4 * HOUR,
        filter: None,
        output: Output::Flows { limit: None },
    };
    let mut seen = Vec::new();
    let t = s
        .query(&q, &mut |r| {
            if let QueryRow::Flow(f) = r {
                seen.push(f.ts_micros);
            }
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    let mut newest: Vec<i64> = all.iter().map(|f| f.ts_micros).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest[..3]);
    // the totals are of every matching flow, not only of those passed
    assert_eq!(t.flows, all.len() as u64);
}

fn invalid_queries_are_refused(s: &mut dyn Store) {
    let q = |output, filter| Query {
        from_micros: T0,
        to_micros: T0 + HOUR,
        filter,
        output,
    };
    for bad in [
        q(
            Output::Groups {
                keys: vec![],
                either: None,
                order: Order::Flows,
                limit: None,
            },
            None,
        ),
        q(
            Output::Flows { limit: None },
            Some(pred(Pred::PortIn {
                side: Side::Src,
                ports: vec![1; 1001],
            })),
        ),
        Query {
            from_micros: T0 + 2 * HOUR,
            ..q(Output::Flows { limit: None }, None)
        },
    ] {
        let r = s.query(&bad, &mut |_| ControlFlow::Continue(()));
        assert!(matches!(r, Err(StoreError::Query(_))), "{bad:?}: {r:?}");
    }
}
