//! [`crate::query::Query`] on SQLite: one statement with numbered `?N` parameters, stepped row by
//! row. Addresses are 4- or 16-byte blobs, so a prefix is a blob range of that length (served
//! by the address indexes of schema 6) and a masked address is the `netflow_mask` function
//! registered on the connection.

use std::net::IpAddr;
use std::ops::ControlFlow;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row};

use crate::StoreError;
use crate::query::{Family, Field, Group, Key, Net, Output, Query, QueryRow, Totals, Value};
use crate::query_sql::{self, Dialect};

struct Sqlite {
    params: Vec<SqlValue>,
}

impl Sqlite {
    fn bind(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }
}

fn addr_blob(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Dialect for Sqlite {
    fn int(&mut self, _column: &'static str, v: i64) -> String {
        self.bind(SqlValue::Integer(v))
    }

    fn window(&mut self, from_micros: i64, to_micros: i64) -> (String, String) {
        (
            self.bind(SqlValue::Integer(from_micros)),
            self.bind(SqlValue::Integer(to_micros)),
        )
    }

    fn addr_in(&mut self, column: &'static str, net: &Net) -> String {
        let (lo, hi) = net.bounds();
        if lo == hi {
            return format!("{column} = {}", self.bind(SqlValue::Blob(lo)));
        }
        // a 16-byte blob can sort between two 4-byte bounds: the length test keeps the family
        let len = lo.len();
        let lo = self.bind(SqlValue::Blob(lo));
        let hi = self.bind(SqlValue::Blob(hi));
        format!("({column} >= {lo} AND {column} <= {hi} AND length({column}) = {len})")
    }

    fn addr_any(&mut self, column: &'static str, nets: &[Net]) -> Vec<String> {
        // hosts in one IN list: a chain of 1000 ORs is deeper than SQLite's expression limit
        let mut hosts = Vec::new();
        let mut parts = Vec::new();
        for n in nets {
            let (lo, hi) = n.bounds();
            if lo == hi {
                hosts.push(self.bind(SqlValue::Blob(lo)));
            } else {
                parts.push(self.addr_in(column, n));
            }
        }
        if !hosts.is_empty() {
            parts.push(format!("{column} IN ({})", hosts.join(", ")));
        }
        parts
    }

    fn family(&self, column: &'static str, family: Family) -> String {
        match family {
            Family::V4 => format!("length({column}) = 4"),
            Family::V6 => format!("length({column}) = 16"),
        }
    }

    fn masked(&mut self, column: &'static str, key: &Key) -> String {
        let v4 = self.bind(SqlValue::Integer(i64::from(key.v4_bits)));
        let v6 = self.bind(SqlValue::Integer(i64::from(key.v6_bits)));
        format!("netflow_mask({column}, {v4}, {v6})")
    }
}

/// `netflow_mask(addr, v4_bits, v6_bits)`: the address blob with only its prefix kept.
fn register_mask(conn: &Connection) -> Result<(), StoreError> {
    conn.create_scalar_function(
        "netflow_mask",
        3,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let blob: Vec<u8> = ctx.get(0)?;
            let v4 = u8::try_from(ctx.get::<i64>(1)?).unwrap_or(32);
            let v6 = u8::try_from(ctx.get::<i64>(2)?).unwrap_or(128);
            let addr = if let Ok(b) = <[u8; 4]>::try_from(blob.as_slice()) {
                IpAddr::from(b)
            } else if let Ok(b) = <[u8; 16]>::try_from(blob.as_slice()) {
                IpAddr::from(b)
            } else {
                return Ok(blob);
            };
            Ok(addr_blob(crate::query::mask_addr(addr, v4, v6)))
        },
    )?;
    Ok(())
}

fn limit(l: Option<u64>) -> SqlValue {
    SqlValue::Integer(l.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)))
}

fn value(row: &Row<'_>, idx: usize, field: Field) -> Result<Value, StoreError> {
    let int = |c| crate::from_db::<u32>(c, row.get::<_, i64>(idx)?);
    Ok(match field {
        Field::SrcAddr | Field::DstAddr | Field::Exporter => {
            Value::Addr(crate::sqlite::addr_from_row(row, idx, "address")?)
        }
        Field::SrcPort | Field::DstPort => {
            Value::Port(crate::from_db("port", row.get::<_, i64>(idx)?)?)
        }
        Field::Protocol => Value::Protocol(crate::from_db("protocol", row.get::<_, i64>(idx)?)?),
        Field::InputIf | Field::OutputIf => Value::Interface(int("interface")?),
    })
}

/// Runs `q` (validated) on `conn` with tables of `prefix`.
pub(crate) fn run(
    conn: &Connection,
    prefix: &str,
    q: &Query,
    f: &mut dyn FnMut(QueryRow<'_>) -> ControlFlow<()>,
) -> Result<Totals, StoreError> {
    let mut d = Sqlite { params: Vec::new() };
    // A deferred transaction reads one snapshot (WAL) for the rows and the totals.
    let tx = conn.unchecked_transaction()?;
    let totals = match &q.output {
        Output::Flows { limit: lim } => {
            let w = query_sql::where_clause(&mut d, q);
            let l = d.bind(limit(*lim));
            let sql = format!(
                "SELECT {} FROM {prefix}flows WHERE {w} ORDER BY ts DESC, exporter LIMIT {l}",
                crate::schema::flow_column_list()
            );
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(d.params.iter()))?;
            let mut t = Totals::default();
            let mut stopped = false;
            while let Some(row) = rows.next()? {
                let fl = crate::sqlite::flow_from_row(row)?;
                t.add(&fl);
                if f(QueryRow::Flow(&fl)).is_break() {
                    stopped = true;
                    break;
                }
            }
            if lim.is_some() || stopped {
                t = flow_totals(&tx, prefix, q)?;
            }
            t
        }
        Output::Groups {
            order,
            limit: lim,
            either,
            ..
        } => {
            register_mask(&tx)?;
            let fields = query_sql::key_fields(q);
            let (inner, n) = query_sql::group_inner(
                &mut d,
                q,
                prefix,
                "(SELECT 0 AS side UNION ALL SELECT 1 AS side) AS s",
            );
            let keys = query_sql::key_list(n);
            let ties = query_sql::tie_break(&fields, |k| format!("length({k}), {k}"));
            let l = d.bind(limit(*lim));
            let sql = format!(
                "SELECT {keys}, count(*) AS flows, sum(packets) AS packets, sum(bytes) AS bytes, \
                 sum(count(*)) OVER (), sum(sum(packets)) OVER (), sum(sum(bytes)) OVER () \
                 FROM ({inner}) GROUP BY {keys} ORDER BY {} DESC, {ties} LIMIT {l}",
                crate::query::order_column(*order)
            );
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(d.params.iter()))?;
            let mut vals = Vec::with_capacity(n);
            let mut t = None;
            while let Some(row) = rows.next()? {
                vals.clear();
                for (i, field) in fields.iter().enumerate() {
                    vals.push(value(row, i, *field)?);
                }
                let c = |i: usize, name| crate::from_db::<u64>(name, row.get::<_, i64>(n + i)?);
                if t.is_none() {
                    let share = if either.is_some() { 2 } else { 1 };
                    t = Some(Totals::new(
                        c(3, "flows")? / share,
                        c(4, "packets")? / share,
                        c(5, "bytes")? / share,
                    ));
                }
                let g = Group {
                    keys: &vals,
                    flows: c(0, "flows")?,
                    packets: c(1, "packets")?,
                    bytes: c(2, "bytes")?,
                };
                if f(QueryRow::Group(g)).is_break() {
                    break;
                }
            }
            t.unwrap_or_default()
        }
    };
    tx.commit()?;
    Ok(totals)
}

/// Flows, packets and bytes of every flow the window and filter match.
fn flow_totals(conn: &Connection, prefix: &str, q: &Query) -> Result<Totals, StoreError> {
    let mut d = Sqlite { params: Vec::new() };
    let w = query_sql::where_clause(&mut d, q);
    let sql = format!(
        "SELECT count(*), coalesce(sum(packets), 0), coalesce(sum(bytes), 0) FROM {prefix}flows WHERE {w}"
    );
    let (a, b, c): (i64, i64, i64) =
        conn.query_row(&sql, rusqlite::params_from_iter(d.params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(Totals::new(
        crate::from_db("flows", a)?,
        crate::from_db("packets", b)?,
        crate::from_db("bytes", c)?,
    ))
}
