//! [`crate::query::Query`] on PostgreSQL: one prepared statement with `$N` parameters (typed as
//! the columns they meet), run in a read-only repeatable-read transaction and streamed with
//! `query_raw`. The window's `ts` bounds let the planner skip every hourly partition outside
//! it; a prefix is an `inet` range, which the address btrees of schema 6 serve; a masked
//! address is `network(set_masklen(..))`.

use std::net::IpAddr;
use std::ops::ControlFlow;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row};

use crate::partition::{MAX_TS_MICROS, MIN_TS_MICROS};
use crate::query::{Family, Field, Group, Key, Net, Output, Query, QueryRow, Totals, Value};
use crate::query_sql::{self, Dialect};
use crate::{Flow, StoreError};

type Param = Box<dyn ToSql + Sync>;

struct Pg {
    params: Vec<Param>,
}

impl Pg {
    fn bind(&mut self, v: Param) -> String {
        self.params.push(v);
        format!("${}", self.params.len())
    }
}

impl Dialect for Pg {
    fn int(&mut self, column: &'static str, v: i64) -> String {
        // each value typed as its column, so that no cast hides an index
        let p: Param = match column {
            "src_port" | "dst_port" => Box::new(i32::try_from(v).unwrap_or(i32::MAX)),
            "protocol" | "tcp_flags" | "direction" => {
                Box::new(i16::try_from(v).unwrap_or(i16::MAX))
            }
            _ => Box::new(v),
        };
        self.bind(p)
    }

    fn window(&mut self, from_micros: i64, to_micros: i64) -> (String, String) {
        let t = |us: i64| {
            super::sql::micros_to_time(us.clamp(MIN_TS_MICROS, MAX_TS_MICROS))
                .unwrap_or(std::time::UNIX_EPOCH)
        };
        (
            self.bind(Box::new(t(from_micros))),
            self.bind(Box::new(t(to_micros))),
        )
    }

    fn addr_in(&mut self, column: &'static str, net: &Net) -> String {
        let (lo, hi) = net.bounds();
        let addr = |b: Vec<u8>| -> IpAddr {
            match <[u8; 4]>::try_from(b.as_slice()) {
                Ok(a) => IpAddr::from(a),
                Err(_) => IpAddr::from(<[u8; 16]>::try_from(b.as_slice()).unwrap_or([0; 16])),
            }
        };
        let (lo, hi) = (addr(lo), addr(hi));
        if lo == hi {
            return format!("{column} = {}", self.bind(Box::new(lo)));
        }
        // stored addresses are hosts (/32, /128): inet order is then family, then address
        let lo = self.bind(Box::new(lo));
        let hi = self.bind(Box::new(hi));
        format!("({column} >= {lo} AND {column} <= {hi})")
    }

    fn family(&self, column: &'static str, family: Family) -> String {
        match family {
            Family::V4 => format!("family({column}) = 4"),
            Family::V6 => format!("family({column}) = 6"),
        }
    }

    fn masked(&mut self, column: &'static str, key: &Key) -> String {
        let v4 = self.bind(Box::new(i32::from(key.v4_bits)));
        let v6 = self.bind(Box::new(i32::from(key.v6_bits)));
        format!(
            "CASE family({column}) WHEN 4 THEN network(set_masklen({column}, {v4}))::inet \
             ELSE network(set_masklen({column}, {v6}))::inet END"
        )
    }
}

fn limit(l: Option<u64>) -> Param {
    Box::new(l.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
}

fn counter(row: &Row, idx: usize, column: &'static str) -> Result<u64, StoreError> {
    crate::from_db(column, row.try_get::<_, i64>(idx)?)
}

fn value(row: &Row, idx: usize, field: Field) -> Result<Value, StoreError> {
    Ok(match field {
        Field::SrcAddr | Field::DstAddr | Field::Exporter => Value::Addr(row.try_get(idx)?),
        Field::SrcPort | Field::DstPort => {
            Value::Port(crate::from_db("port", row.try_get::<_, i32>(idx)?.into())?)
        }
        Field::Protocol => Value::Protocol(crate::from_db(
            "protocol",
            row.try_get::<_, i16>(idx)?.into(),
        )?),
        Field::InputIf | Field::OutputIf => {
            Value::Interface(crate::from_db("interface", row.try_get::<_, i64>(idx)?)?)
        }
    })
}

fn flow_from_row(row: &Row) -> Result<Flow, StoreError> {
    let small = |i: usize, c: &'static str| -> Result<u8, StoreError> {
        crate::from_db(c, row.try_get::<_, i16>(i)?.into())
    };
    let port = |i: usize| -> Result<u16, StoreError> {
        crate::from_db("port", row.try_get::<_, i32>(i)?.into())
    };
    Ok(Flow {
        ts_micros: super::sql::time_to_micros(row.try_get(0)?)?,
        exporter: row.try_get(1)?,
        input_if: crate::from_db("input_if", row.try_get(2)?)?,
        output_if: crate::from_db("output_if", row.try_get(3)?)?,
        direction: small(4, "direction")?,
        protocol: small(5, "protocol")?,
        src_addr: row.try_get(6)?,
        dst_addr: row.try_get(7)?,
        src_port: port(8)?,
        dst_port: port(9)?,
        bytes: counter(row, 10, "bytes")?,
        packets: counter(row, 11, "packets")?,
        tcp_flags: small(12, "tcp_flags")?,
        ..Flow::default()
    })
}

fn params(p: &[Param]) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
    p.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync))
}

/// Runs `q` (validated) on `client` with tables of `prefix`.
pub(crate) fn run(
    client: &mut Client,
    prefix: &str,
    q: &Query,
    f: &mut dyn FnMut(QueryRow<'_>) -> ControlFlow<()>,
) -> Result<Totals, StoreError> {
    let mut d = Pg { params: Vec::new() };
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let totals = match &q.output {
        Output::Flows { limit: lim } => {
            let w = query_sql::where_clause(&mut d, q);
            let l = d.bind(limit(*lim));
            let sql = format!(
                "SELECT {} FROM {prefix}flows WHERE {w} ORDER BY ts DESC, exporter LIMIT {l}",
                crate::schema::flow_column_list()
            );
            let stmt = tx.prepare(&sql)?;
            let mut t = Totals::default();
            let mut stopped = false;
            {
                let mut rows = tx.query_raw(&stmt, params(&d.params))?;
                while let Some(row) = rows.next()? {
                    let fl = flow_from_row(&row)?;
                    t.add(&fl);
                    if f(QueryRow::Flow(&fl)).is_break() {
                        stopped = true;
                        break;
                    }
                }
            }
            if lim.is_some() || stopped {
                let mut d = Pg { params: Vec::new() };
                let w = query_sql::where_clause(&mut d, q);
                let row = tx.query_one(
                    &format!(
                        "SELECT count(*), coalesce(sum(packets), 0)::bigint, \
                         coalesce(sum(bytes), 0)::bigint FROM {prefix}flows WHERE {w}"
                    ),
                    &params(&d.params).collect::<Vec<_>>(),
                )?;
                t = Totals::new(
                    counter(&row, 0, "flows")?,
                    counter(&row, 1, "packets")?,
                    counter(&row, 2, "bytes")?,
                );
            }
            t
        }
        Output::Groups {
            order,
            limit: lim,
            either,
            ..
        } => {
            let fields = query_sql::key_fields(q);
            let (inner, n) =
                query_sql::group_inner(&mut d, q, prefix, "(VALUES (0), (1)) AS s(side)");
            let keys = query_sql::key_list(n);
            let ties = query_sql::tie_break(&fields, str::to_owned);
            let l = d.bind(limit(*lim));
            let sql = format!(
                "SELECT {keys}, count(*) AS flows, sum(packets)::bigint AS packets, \
                 sum(bytes)::bigint AS bytes, (sum(count(*)) OVER ())::bigint, \
                 (sum(sum(packets)) OVER ())::bigint, (sum(sum(bytes)) OVER ())::bigint \
                 FROM ({inner}) AS i GROUP BY {keys} ORDER BY {} DESC, {ties} LIMIT {l}",
                crate::query::order_column(*order)
            );
            let stmt = tx.prepare(&sql)?;
            let mut rows = tx.query_raw(&stmt, params(&d.params))?;
            let mut vals = Vec::with_capacity(n);
            let mut t = None;
            while let Some(row) = rows.next()? {
                vals.clear();
                for (i, field) in fields.iter().enumerate() {
                    vals.push(value(&row, i, *field)?);
                }
                if t.is_none() {
                    let share = if either.is_some() { 2 } else { 1 };
                    t = Some(Totals::new(
                        counter(&row, n + 3, "flows")? / share,
                        counter(&row, n + 4, "packets")? / share,
                        counter(&row, n + 5, "bytes")? / share,
                    ));
                }
                let g = Group {
                    keys: &vals,
                    flows: counter(&row, n, "flows")?,
                    packets: counter(&row, n + 1, "packets")?,
                    bytes: counter(&row, n + 2, "bytes")?,
                };
                if f(QueryRow::Group(g)).is_break() {
                    break;
                }
            }
            drop(rows);
            t.unwrap_or_default()
        }
    };
    tx.commit()?;
    Ok(totals)
}
