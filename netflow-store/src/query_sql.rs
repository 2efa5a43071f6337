//! What the backends' query compilers share: the filter turned into a `WHERE` clause whose
//! every value is a bound parameter (on ClickHouse, a literal the compiler formats from a
//! number: see `clickhouse/query.rs`), and the select lists of a grouped query. Each backend
//! supplies a [`Dialect`]: how it binds a value and spells an address test, a masked address,
//! the family of an address and a bit test.

use crate::query::{
    Counter, Either, Expr, Family, Field, IfSide, Key, Net, Output, Pred, Query, group_fields,
    side_columns,
};

/// A backend's SQL spelling and its bound parameters (in placeholder order).
pub(crate) trait Dialect {
    /// Binds an integer compared with (or computed against) `column`; returns its placeholder.
    fn int(&mut self, column: &'static str, v: i64) -> String;
    /// Binds the window bounds; returns their placeholders.
    fn window(&mut self, from_micros: i64, to_micros: i64) -> (String, String);
    /// `column` lies in `net` (a test an index on `column` serves).
    fn addr_in(&mut self, column: &'static str, net: &Net) -> String;
    /// The tests of `column` lying in one of `nets`, to be joined by `OR` (a backend may
    /// fold hosts into one `IN` list).
    fn addr_any(&mut self, column: &'static str, nets: &[Net]) -> Vec<String> {
        nets.iter().map(|n| self.addr_in(column, n)).collect()
    }
    /// Every bit of `mask` is set in `column`.
    fn all_bits(&mut self, column: &'static str, mask: i64) -> String {
        let m = self.int(column, mask);
        let m2 = self.int(column, mask);
        format!("({column} & {m}) = {m2}")
    }
    /// The address in `column` is of `family`.
    fn family(&self, column: &'static str, family: Family) -> String;
    /// The select expression of `column` with `key`'s prefix lengths applied.
    fn masked(&mut self, column: &'static str, key: &Key) -> String;
}

/// `WHERE` condition of the query's window and filter.
pub(crate) fn where_clause(d: &mut impl Dialect, q: &Query) -> String {
    let (from, to) = d.window(q.from_micros, q.to_micros);
    let mut w = format!("ts >= {from} AND ts <= {to}");
    if let Some(e) = &q.filter {
        w.push_str(" AND ");
        w.push_str(&expr(d, e));
    }
    w
}

fn expr(d: &mut impl Dialect, e: &Expr) -> String {
    match e {
        Expr::And(a, b) => format!("({} AND {})", expr(d, a), expr(d, b)),
        Expr::Or(a, b) => format!("({} OR {})", expr(d, a), expr(d, b)),
        Expr::Not(a) => format!("(NOT {})", expr(d, a)),
        Expr::Pred(p) => pred(d, p),
    }
}

fn any(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

fn pred(d: &mut impl Dialect, p: &Pred) -> String {
    match p {
        Pred::Addr { side, nets } => {
            let mut parts = Vec::new();
            for col in side_columns(*side, "src_addr", "dst_addr") {
                parts.extend(d.addr_any(col, nets));
            }
            any(parts)
        }
        Pred::Port { side, cmp, port } => any(side_columns(*side, "src_port", "dst_port")
            .into_iter()
            .map(|c| format!("{c} {} {}", cmp.sql(), d.int(c, i64::from(*port))))
            .collect()),
        Pred::PortIn { side, ports } => any(side_columns(*side, "src_port", "dst_port")
            .into_iter()
            .map(|c| {
                let list: Vec<String> = ports.iter().map(|p| d.int(c, i64::from(*p))).collect();
                format!("{c} IN ({})", list.join(", "))
            })
            .collect()),
        Pred::Protocol(n) => format!("protocol = {}", d.int("protocol", i64::from(*n))),
        Pred::Interface { side, cmp, index } => {
            let cols: &[&'static str] = match side {
                IfSide::In => &["input_if"],
                IfSide::Out => &["output_if"],
                IfSide::Either => &["input_if", "output_if"],
            };
            any(cols
                .iter()
                .map(|c| format!("{c} {} {}", cmp.sql(), d.int(c, i64::from(*index))))
                .collect())
        }
        Pred::Exporter(n) => d.addr_in("exporter", n),
        Pred::Flags(mask) => d.all_bits("tcp_flags", i64::from(*mask)),
        Pred::Counter {
            counter,
            cmp,
            value,
        } => {
            let c = match counter {
                Counter::Bytes => "bytes",
                Counter::Packets => "packets",
            };
            format!(
                "{c} {} {}",
                cmp.sql(),
                d.int(c, crate::counter_to_db(*value))
            )
        }
        Pred::Family(f) => d.family("src_addr", *f),
    }
}

/// The inner select of a grouped query: one row per flow (two with `either`, one per side) with
/// the key values as `k0, k1, ...` and `packets`, `bytes`; plus the number of key columns.
/// `side_table` is the backend's two-row table `s(side)` holding 0 and 1.
pub(crate) fn group_inner(
    d: &mut impl Dialect,
    q: &Query,
    prefix: &str,
    side_table: &str,
) -> (String, usize) {
    let Output::Groups { keys, either, .. } = &q.output else {
        return (String::new(), 0);
    };
    let mut cols = Vec::new();
    for (i, (field, key)) in group_fields(keys, *either).into_iter().enumerate() {
        let e = match (key, i, either) {
            (None, 0, Some(Either::Addr)) => {
                "CASE s.side WHEN 0 THEN src_addr ELSE dst_addr END".to_owned()
            }
            (None, _, _) => "CASE s.side WHEN 0 THEN src_port ELSE dst_port END".to_owned(),
            (Some(k), _, _) if k.is_masked() && is_addr(field) => {
                d.masked(crate::query::column(field), &k)
            }
            (Some(_), _, _) => crate::query::column(field).to_owned(),
        };
        cols.push(format!("{e} AS k{i}"));
    }
    let n = cols.len();
    let from = if either.is_some() {
        format!("{prefix}flows CROSS JOIN {side_table}")
    } else {
        format!("{prefix}flows")
    };
    let w = where_clause(d, q);
    (
        format!(
            "SELECT {}, packets, bytes FROM {from} WHERE {w}",
            cols.join(", ")
        ),
        n,
    )
}

/// Whether `f` holds an address.
pub(crate) fn is_addr(f: Field) -> bool {
    matches!(f, Field::SrcAddr | Field::DstAddr | Field::Exporter)
}

/// `k0, k1, ...` for `n` keys.
pub(crate) fn key_list(n: usize) -> String {
    (0..n)
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ascending tie-break on the keys, `addr_order` spelling an address key's order.
pub(crate) fn tie_break(fields: &[Field], addr_order: impl Fn(&str) -> String) -> String {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let k = format!("k{i}");
            if is_addr(*f) { addr_order(&k) } else { k }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fields of the key columns, in `k0, k1, ...` order.
pub(crate) fn key_fields(q: &Query) -> Vec<Field> {
    match &q.output {
        Output::Groups { keys, either, .. } => group_fields(keys, *either)
            .into_iter()
            .map(|(f, _)| f)
            .collect(),
        _ => Vec::new(),
    }
}
