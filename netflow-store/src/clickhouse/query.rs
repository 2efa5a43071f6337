//! [`crate::query::Query`] on ClickHouse: one `SELECT … FORMAT RowBinary` per query, the
//! filter, `GROUP BY`, `ORDER BY` and `LIMIT` computed by the server (on a `Distributed`
//! table, the grouping runs on each shard and only partial sums travel), the rows streamed back
//! at their fixed width; and one small totals query over the same rows.
//!
//! # Values without parameters
//!
//! 18.16 has no query parameters (`{name:Type}` came later), so values are literals in the SQL
//! text. None of them comes from text the user typed: the filter compiler
//! ([`crate::query_sql`]) hands this dialect only Rust integers (`i64`, formatted as decimal
//! digits with an optional minus sign) and [`IpAddr`]s (formatted as 32 hexadecimal digits
//! inside `unhex('…')`). Table names come from the validated configuration. There is no
//! string the user controls that could reach the SQL, so nothing to escape.
//!
//! # The same snapshot, the same answers
//!
//! Both statements see the batches of one [`super::read::View`] (rows of uncommitted or newer
//! batches are left out by `seq`), so the rows and the totals agree as on the transactional
//! backends. Addresses are the stored 16 bytes and a family bit (see `rowbinary.rs`); they
//! sort as on PostgreSQL and SQLite: IPv4 first, then by the bytes.

use std::net::IpAddr;
use std::ops::ControlFlow;

use super::ClickHouseStore;
use super::pushdown::family as family_key;
use super::rowbinary::{FLOW_ROW_LEN, Reader, addr_from16, addr16};
use crate::partition::{MAX_TS_MICROS, MIN_TS_MICROS};
use crate::query::{Family, Field, Group, Key, Net, Output, Query, QueryRow, Totals, Value};
use crate::query_sql::{self, Dialect};
use crate::{Flow, StoreError};

/// The first 12 bytes of a stored IPv4 address (`::ffff:a.b.c.d`).
const MAPPED_PREFIX: &str = "unhex('00000000000000000000FFFF')";
/// Statements longer than this get the server's size limits raised for them.
const DEFAULT_MAX_QUERY_SIZE: usize = 256 * 1024;

/// The ClickHouse spelling of the shared filter compiler (see the module docs: every value is
/// a number or an address, formatted here).
struct Ch;

/// The `v6_mapped` bit of an address column (see `rowbinary.rs`).
fn v6_bit(column: &str) -> u8 {
    match column {
        "exporter" => 1,
        "src_addr" => 2,
        _ => 4,
    }
}

/// The 16-byte literal of stored address bytes.
fn bytes_literal(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("toFixedString(unhex('{hex}'), 16)")
}

/// `column` holds an IPv6 address (not an IPv4 one stored mapped).
fn is_v6(column: &str) -> String {
    format!(
        "(substring({column}, 1, 12) != {MAPPED_PREFIX} OR bitAnd(v6_mapped, {}) != 0)",
        v6_bit(column)
    )
}

/// The stored bytes of the first and last address of `net`.
fn stored_bounds(net: &Net) -> ([u8; 16], [u8; 16]) {
    let (lo, hi) = net.bounds();
    let stored = |b: Vec<u8>| -> [u8; 16] {
        match <[u8; 4]>::try_from(b.as_slice()) {
            Ok(a) => addr16(IpAddr::from(a)).0,
            Err(_) => <[u8; 16]>::try_from(b.as_slice()).unwrap_or([0; 16]),
        }
    };
    (stored(lo), stored(hi))
}

/// Whether stored bytes in `lo..=hi` may be an IPv4 address's (`::ffff:0.0.0.0/96`).
fn overlaps_v4(lo: &[u8; 16], hi: &[u8; 16]) -> bool {
    let first = addr16(IpAddr::from([0, 0, 0, 0])).0;
    let last = addr16(IpAddr::from([255, 255, 255, 255])).0;
    lo <= &last && hi >= &first
}

/// The family condition an address test on `column` of `net`'s family needs.
fn family_cond(column: &str, v4: bool, lo: &[u8; 16], hi: &[u8; 16]) -> Option<String> {
    if v4 {
        Some(format!("bitAnd(v6_mapped, {}) = 0", v6_bit(column)))
    } else {
        overlaps_v4(lo, hi).then(|| is_v6(column))
    }
}

/// Masks keeping the first `bits` of a 64-bit half starting at bit `from` of the address.
fn half_mask(bits: u8, from: u32) -> u64 {
    let keep = u32::from(bits).saturating_sub(from).min(64);
    u64::MAX.checked_shl(64 - keep).unwrap_or(0)
}

impl Dialect for Ch {
    fn int(&mut self, _column: &'static str, v: i64) -> String {
        v.to_string()
    }

    fn window(&mut self, from_micros: i64, to_micros: i64) -> (String, String) {
        let t = |us: i64| us.clamp(MIN_TS_MICROS, MAX_TS_MICROS).to_string();
        (t(from_micros), t(to_micros))
    }

    fn addr_in(&mut self, column: &'static str, net: &Net) -> String {
        let (lo, hi) = stored_bounds(net);
        let test = if lo == hi {
            format!("{column} = {}", bytes_literal(&lo))
        } else {
            format!(
                "{column} >= {} AND {column} <= {}",
                bytes_literal(&lo),
                bytes_literal(&hi)
            )
        };
        match family_cond(column, net.addr.is_ipv4(), &lo, &hi) {
            Some(f) => format!("({test} AND {f})"),
            None => format!("({test})"),
        }
    }

    fn addr_any(&mut self, column: &'static str, nets: &[Net]) -> Vec<String> {
        // hosts in one IN list per family condition: short SQL, one set lookup per row
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut parts = Vec::new();
        for n in nets {
            let (lo, hi) = stored_bounds(n);
            match (lo == hi, n.addr.is_ipv4(), overlaps_v4(&lo, &hi)) {
                (true, true, _) => v4.push(bytes_literal(&lo)),
                (true, false, false) => v6.push(bytes_literal(&lo)),
                _ => parts.push(self.addr_in(column, n)),
            }
        }
        if !v4.is_empty() {
            parts.push(format!(
                "({column} IN ({}) AND bitAnd(v6_mapped, {}) = 0)",
                v4.join(", "),
                v6_bit(column)
            ));
        }
        if !v6.is_empty() {
            parts.push(format!("{column} IN ({})", v6.join(", ")));
        }
        parts
    }

    fn all_bits(&mut self, column: &'static str, mask: i64) -> String {
        format!("bitAnd({column}, {mask}) = {mask}")
    }

    fn family(&self, column: &'static str, family: Family) -> String {
        match family {
            Family::V4 => format!("(NOT {})", is_v6(column)),
            Family::V6 => is_v6(column),
        }
    }

    fn masked(&mut self, column: &'static str, key: &Key) -> String {
        // the two big-endian halves as UInt64, masked, and put back as bytes
        let half = |from: i32| {
            format!(
                "reinterpretAsUInt64(reverse(substring({column}, {}, 8)))",
                from
            )
        };
        let bytes = |v: String| format!("reverse(toFixedString(reinterpretAsString({v}), 8))");
        let (h6, l6) = (half_mask(key.v6_bits, 0), half_mask(key.v6_bits, 64));
        let l4 = u64::MAX << 32 | half_mask(key.v4_bits, 0) >> 32;
        format!(
            "if({}, toFixedString(concat({}, {}), 16), toFixedString(concat(substring({column}, \
             1, 8), {}), 16))",
            is_v6(column),
            bytes(format!("bitAnd({}, {h6})", half(1))),
            bytes(format!("bitAnd({}, {l6})", half(9))),
            bytes(format!("bitAnd({}, {l4})", half(9))),
        )
    }
}

/// How a key column is selected and read back.
#[derive(Clone, Copy)]
struct KeyCol {
    field: Field,
    /// Bytes of the column(s) in a row.
    width: usize,
}

fn key_width(field: Field) -> usize {
    match field {
        Field::SrcAddr | Field::DstAddr | Field::Exporter => 17,
        Field::SrcPort | Field::DstPort => 2,
        Field::Protocol => 1,
        Field::InputIf | Field::OutputIf => 4,
    }
}

fn read_value(r: &mut Reader<'_>, field: Field) -> Result<Value, StoreError> {
    Ok(match field {
        Field::SrcAddr | Field::DstAddr | Field::Exporter => {
            let b = r.fixed16()?;
            Value::Addr(addr_from16(b, r.u8()? != 0))
        }
        Field::SrcPort | Field::DstPort => Value::Port(r.u16()?),
        Field::Protocol => Value::Protocol(r.u8()?),
        Field::InputIf | Field::OutputIf => Value::Interface(r.u32()?),
    })
}

/// The grouped statement's select list, group list and tie-break, with the key columns.
fn group_sql(d: &mut Ch, q: &Query) -> (String, String, String, Vec<KeyCol>) {
    let Output::Groups { keys, either, .. } = &q.output else {
        return Default::default();
    };
    let (mut select, mut group, mut ties, mut cols) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (field, key)) in crate::query::group_fields(keys, *either)
        .into_iter()
        .enumerate()
    {
        let k = format!("k{i}");
        let col = crate::query::column(field);
        let expr = match (key, either) {
            // each flow twice, once per side (the alias is defined once: a second arrayJoin
            // would multiply the rows again)
            (None, Some(crate::query::Either::Addr)) => {
                "if((arrayJoin([0, 1]) AS side) = 0, src_addr, dst_addr)".to_owned()
            }
            (None, _) => "if((arrayJoin([0, 1]) AS side) = 0, src_port, dst_port)".to_owned(),
            (Some(k), _) if k.is_masked() && query_sql::is_addr(field) => d.masked(col, &k),
            (Some(_), _) => col.to_owned(),
        };
        select.push(format!("{expr} AS {k}"));
        group.push(k.clone());
        if query_sql::is_addr(field) {
            let bit = if key.is_none() {
                "if(side = 0, 2, 4)".to_owned()
            } else {
                v6_bit(col).to_string()
            };
            select.push(format!("toUInt8(bitAnd(v6_mapped, {bit}) != 0) AS {k}b"));
            group.push(format!("{k}b"));
            ties.push(format!("{}, {k}", family_key(&k, &format!("{k}b"))));
        } else {
            ties.push(k);
        }
        cols.push(KeyCol {
            field,
            width: key_width(field),
        });
    }
    (select.join(", "), group.join(", "), ties.join(", "), cols)
}

fn limit(l: Option<u64>) -> String {
    l.map_or(String::new(), |n| format!(" LIMIT {n}"))
}

impl ClickHouseStore {
    /// Runs `q` (validated): see the module docs.
    pub(super) fn run_query(
        &self,
        q: &Query,
        f: &mut dyn FnMut(QueryRow<'_>) -> ControlFlow<()>,
    ) -> Result<Totals, StoreError> {
        let Some(view) = self.view()? else {
            return Ok(Totals::default());
        };
        let t = &self.t;
        let (from, to) = Ch.window(q.from_micros, q.to_micros);
        let w = format!(
            "{} AND seq GLOBAL IN (SELECT seq FROM {t}batches WHERE seq <= {} AND flows > 0 \
             AND max_ts >= {from} AND min_ts <= {to})",
            query_sql::where_clause(&mut Ch, q),
            view.seq
        );
        let totals = self.totals(&w)?;
        if totals.flows == 0 {
            return Ok(totals);
        }
        match &q.output {
            Output::Flows { limit: lim } => {
                let sql = format!(
                    "SELECT {} FROM {t}flows WHERE {w} ORDER BY ts DESC, {}, exporter{} \
                     FORMAT RowBinary",
                    super::flow_column_list(),
                    family_key("exporter", "bitAnd(v6_mapped, 1)"),
                    limit(*lim)
                );
                self.http.query_rows_with(
                    &sql,
                    FLOW_ROW_LEN,
                    &size_settings(&sql),
                    &mut |row| {
                        let flow: Flow = Reader::new(row).flow()?;
                        Ok(f(QueryRow::Flow(&flow)))
                    },
                )?;
            }
            Output::Groups {
                order, limit: lim, ..
            } => {
                let (select, group, ties, cols) = group_sql(&mut Ch, q);
                let order = match order {
                    crate::query::Order::Flows => "nflows",
                    crate::query::Order::Packets => "npackets",
                    crate::query::Order::Bytes => "nbytes",
                };
                let sql = format!(
                    "SELECT {select}, count() AS nflows, sum(packets) AS npackets, \
                     sum(bytes) AS nbytes FROM {t}flows WHERE {w} GROUP BY {group} \
                     ORDER BY {order} DESC, {ties}{} FORMAT RowBinary",
                    limit(*lim)
                );
                let row_len = cols.iter().map(|c| c.width).sum::<usize>() + 24;
                let mut vals = Vec::with_capacity(cols.len());
                self.http
                    .query_rows_with(&sql, row_len, &size_settings(&sql), &mut |row| {
                        let mut r = Reader::new(row);
                        vals.clear();
                        for c in &cols {
                            vals.push(read_value(&mut r, c.field)?);
                        }
                        let g = Group {
                            keys: &vals,
                            flows: r.u64()?,
                            packets: r.u64()?,
                            bytes: r.u64()?,
                        };
                        Ok(f(QueryRow::Group(g)))
                    })?;
            }
        }
        Ok(totals)
    }

    /// Flows, packets and bytes the condition `w` matches. Sums beyond `i64::MAX` are an
    /// error, as on the other backends (whose sums are `bigint`).
    fn totals(&self, w: &str) -> Result<Totals, StoreError> {
        let sql = format!(
            "SELECT count(), sum(packets), sum(bytes), greatest(sum(toFloat64(packets)), \
             sum(toFloat64(bytes))) FROM {}flows WHERE {w} FORMAT RowBinary",
            self.t
        );
        let reply = self.http.query_with(&sql, &size_settings(&sql))?;
        let mut r = Reader::new(&reply);
        let (flows, packets, bytes) = (r.u64()?, r.u64()?, r.u64()?);
        // the float sum tells a UInt64 sum that wrapped around from one that did not
        let approx = f64::from_bits(r.u64()?);
        let max = i64::MAX as u64;
        if approx >= 1.8e19 || packets > max || bytes > max {
            return Err(StoreError::Query(
                "the matching flows' byte or packet sum exceeds 2^63 - 1",
            ));
        }
        Ok(Totals::new(flows, packets, bytes))
    }
}

/// The size limits a statement of this length needs (none below the defaults).
fn size_settings(sql: &str) -> Vec<(&'static str, String)> {
    if sql.len() < DEFAULT_MAX_QUERY_SIZE / 2 {
        return Vec::new();
    }
    let n = sql.len().saturating_mul(2);
    vec![
        ("max_query_size", n.to_string()),
        ("max_ast_elements", n.to_string()),
        ("max_expanded_ast_elements", n.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_half_masks() {
        assert_eq!(half_mask(0, 0), 0);
        assert_eq!(half_mask(16, 0), 0xffff_0000_0000_0000);
        assert_eq!(half_mask(64, 0), u64::MAX);
        assert_eq!(half_mask(128, 0), u64::MAX);
        assert_eq!(half_mask(48, 64), 0);
        assert_eq!(half_mask(72, 64), 0xff00_0000_0000_0000);
        assert_eq!(half_mask(128, 64), u64::MAX);
    }

    #[test]
    fn test_literals_are_only_hex_and_digits() {
        let net = Net {
            addr: "2001:db8::1".parse().unwrap(),
            len: 32,
        };
        let sql = Ch.addr_in("src_addr", &net);
        assert_eq!(
            sql,
            "(src_addr >= toFixedString(unhex('20010DB8000000000000000000000000'), 16) AND \
             src_addr <= toFixedString(unhex('20010DB8FFFFFFFFFFFFFFFFFFFFFFFF'), 16))"
        );
        // an IPv6 range over ::ffff:0:0/96 keeps IPv4 rows out
        let all = Net {
            addr: "::".parse().unwrap(),
            len: 0,
        };
        assert!(
            Ch.addr_in("dst_addr", &all)
                .contains("bitAnd(v6_mapped, 4) != 0")
        );
        let v4 = Net::host("10.0.0.1".parse().unwrap());
        assert_eq!(
            Ch.addr_any("exporter", &[v4, v4]),
            [
                "(exporter IN (toFixedString(unhex('00000000000000000000FFFF0A000001'), 16), \
              toFixedString(unhex('00000000000000000000FFFF0A000001'), 16)) AND \
              bitAnd(v6_mapped, 1) = 0)"
            ]
        );
        assert_eq!(Ch.window(i64::MIN, i64::MAX).0, MIN_TS_MICROS.to_string());
    }
}
