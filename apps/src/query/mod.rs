//! `netflow-query`: forensic queries over the stored flows with nfdump's habits (`-t`, `-s
//! srcip/bytes`, `-n`, `-A`, `-c`, a filter expression), run inside the store the other
//! binaries write ([`netflow_store::FlowRead::query`]).
//!
//! [`filter`] parses the filter, [`time`] the time window, [`output`] prints the rows as they
//! stream in; [`run`] ties them together.

pub mod filter;
pub mod output;
pub mod time;

use std::io::Write;
use std::ops::ControlFlow;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use netflow_store::query::{Either, Field, Key, Order, Output, Query, QueryRow, Totals};

use crate::Error;
use crate::config::StoreArgs;
use output::{Format, Printer};

/// The filter grammar and examples, shown by `--help`.
pub const GRAMMAR: &str = "\
FILTER (a subset of nfdump's grammar, case-insensitive; words may be separate arguments):
  src ip ADDR | dst ip ADDR | ip ADDR          address (ip: either side; host = ip)
  ip in [ADDR|CIDR ...]                        any of a list (also src/dst ip in [...])
  src net CIDR | dst net CIDR | net CIDR       prefix, e.g. net 10.0.0.0/8
  src port N | dst port N | port N             port; also port > 1023, port in [80 443]
  proto tcp|udp|icmp|NAME|N                    IP protocol by IANA keyword or number
  in if N | out if N | if N                    interface index (also > < comparisons)
  exporter ADDR|CIDR (router ip ADDR)          the exporting device
  flags S | flags SA | not flags A             TCP flags all set (F S R P A U E C, X all)
  bytes > N[k|M|G] | packets > N[k|M|G]        counters (k, M, G: 1000, 10^6, 10^9)
  ipv4 | ipv6                                  address family (inet, inet6)
  not X | X and Y | X or Y | ( X )             not before and before or
Comparisons: = == != < <= > >= (or eq ne lt le gt ge).

STATISTICS (-s STAT[/ORDER]): srcip dstip ip srcport dstport port proto inif outif exporter
  record (one row per conversation: srcip dstip srcport dstport proto, or the -A keys);
  ORDER flows (default) packets bytes. ip and port count a flow for both of its sides.
AGGREGATION (-A KEYS): srcip dstip srcport dstport proto inif outif exporter, addresses
  with a prefix: srcip4/24, dstip6/64.

EXAMPLES:
  netflow-query                                       the last hour's flows, newest first
  netflow-query --last 15m -s srcip/bytes -n 20       top 20 sources by bytes
  netflow-query -t 2026/12/06.14:00:00-2026/12/06.15:00:00 -s record/bytes 'dst port 443'
  netflow-query -s dstport 'src ip 10.0.0.5 and not proto icmp'
  netflow-query -A srcip4/24,dstip -c 50 'net 10.0.0.0/8 and bytes > 1M'
  netflow-query -o ndjson -s ip 'ip in [192.0.2.1 192.0.2.7]' | jq .

Times are UTC unless they carry an offset. The summary line (flows, packets, bytes matched,
window) goes to stderr. Exit status: 0 when the query ran (even with no rows), 2 on a usage,
time or filter error, 1 when the store cannot be opened or read.";

/// Query the stored flows the way nfdump does: a time window, a filter expression, top-N
/// statistics or the flows themselves. The query runs inside the store (SQLite, PostgreSQL or
/// ClickHouse, the same settings as the other binaries).
#[derive(Parser, Debug)]
#[command(name = "netflow-query", version, after_long_help = GRAMMAR)]
pub struct QueryCli {
    /// Filter expression (see FILTER below); several arguments are joined with spaces.
    pub filter: Vec<String>,
    /// Time window START[-END]: 2026/12/06.14:00:00 (nfdump) or 2026-12-06T14:00:00Z (ISO
    /// 8601); END defaults to now. Default: the last hour.
    #[arg(short = 't', long = "time", value_name = "START[-END]")]
    pub time: Option<String>,
    /// The window ending now: 90s, 15m, 2h, 7d.
    #[arg(long, value_name = "DURATION", conflicts_with = "time")]
    pub last: Option<String>,
    /// Top-N statistic STAT[/ORDER], repeatable (see STATISTICS below).
    #[arg(short = 's', long = "stat", value_name = "STAT[/ORDER]")]
    pub stat: Vec<String>,
    /// Rows of each statistic (0: all).
    #[arg(short = 'n', long = "top", default_value_t = 10, value_name = "N")]
    pub top: u64,
    /// Aggregate the flows by these keys (comma-separated, see AGGREGATION below).
    #[arg(short = 'A', long = "aggregate", value_name = "KEYS")]
    pub aggregate: Option<String>,
    /// Order of -A groups: flows, packets or bytes.
    #[arg(
        short = 'O',
        long = "order",
        value_name = "ORDER",
        default_value = "flows"
    )]
    pub order: String,
    /// Most flows (or -A groups) listed.
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Where the flows are stored.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A mistake in the command line (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn order(s: &str) -> Result<Order, UsageError> {
    match s.to_ascii_lowercase().as_str() {
        "flows" => Ok(Order::Flows),
        "packets" => Ok(Order::Packets),
        "bytes" => Ok(Order::Bytes),
        o => Err(UsageError(format!(
            "unknown order '{o}' (expected flows, packets or bytes)"
        ))),
    }
}

/// A named key: its column name and what it groups by.
fn named_key(name: &str) -> Option<(&'static str, Field)> {
    Some(match name {
        "srcip" => ("srcip", Field::SrcAddr),
        "dstip" => ("dstip", Field::DstAddr),
        "srcport" => ("srcport", Field::SrcPort),
        "dstport" => ("dstport", Field::DstPort),
        "proto" => ("proto", Field::Protocol),
        "inif" => ("inif", Field::InputIf),
        "outif" => ("outif", Field::OutputIf),
        "exporter" | "router" => ("exporter", Field::Exporter),
        _ => return None,
    })
}

/// Parses `-A srcip4/24,dstip,...` into key names and keys.
pub fn parse_aggregation(s: &str) -> Result<Vec<(&'static str, Key)>, UsageError> {
    let mut keys: Vec<(&'static str, Key)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let item = item.to_ascii_lowercase();
        let bad = || {
            UsageError(format!(
                "-A: unknown key '{item}' (expected srcip dstip srcport dstport proto inif outif \
                 exporter, or srcip4/N srcip6/N dstip4/N dstip6/N)"
            ))
        };
        let (base, v4, v6) = match item.split_once('/') {
            Some((b, bits)) => {
                let bits: u8 = bits.parse().map_err(|_| bad())?;
                match b {
                    "srcip4" | "dstip4" if bits <= 32 => (&b[..5], Some(bits), None),
                    "srcip6" | "dstip6" if bits <= 128 => (&b[..5], None, Some(bits)),
                    _ => return Err(bad()),
                }
            }
            None => (item.as_str(), None, None),
        };
        let (name, field) = named_key(base).ok_or_else(bad)?;
        match keys.iter_mut().find(|(_, k)| k.field == field) {
            Some((_, k)) => {
                k.v4_bits = v4.unwrap_or(k.v4_bits);
                k.v6_bits = v6.unwrap_or(k.v6_bits);
            }
            None => {
                let mut k = Key::of(field);
                k.v4_bits = v4.unwrap_or(32);
                k.v6_bits = v6.unwrap_or(128);
                keys.push((name, k));
            }
        }
    }
    if keys.is_empty() {
        return Err(UsageError("-A: no keys given".into()));
    }
    Ok(keys)
}

/// One output of the command: what to ask the store and the column names of its rows.
#[derive(Debug)]
pub struct Plan {
    /// The query.
    pub query: Query,
    /// Column names of the group keys (empty for the flow listing).
    pub columns: Vec<&'static str>,
    /// Heading shown above it in the table format.
    pub title: String,
}

/// Turns the command line into the queries to run (no store needed): a usage error for a bad
/// time, filter, statistic or key.
pub fn plan(cli: &QueryCli, now_us: i64) -> Result<Vec<Plan>, UsageError> {
    let (from, to) = match (&cli.time, &cli.last) {
        (Some(t), _) => time::parse_window(t, now_us).map_err(UsageError)?,
        (None, Some(d)) => (
            now_us - time::parse_duration(d).map_err(|e| UsageError(format!("--last: {e}")))?,
            now_us,
        ),
        (None, None) => (now_us - 3_600_000_000, now_us),
    };
    let text = cli.filter.join(" ");
    let filter = if text.trim().is_empty() {
        None
    } else {
        Some(filter::parse(&text).map_err(|e| UsageError(e.to_string()))?)
    };
    let agg = cli
        .aggregate
        .as_deref()
        .map(parse_aggregation)
        .transpose()?;
    let limit = |n: u64| (n > 0).then_some(n);
    let query = |output| Query {
        from_micros: from,
        to_micros: to,
        filter: filter.clone(),
        output,
    };
    let mut plans = Vec::new();
    for s in &cli.stat {
        let (name, ord) = match s.split_once('/') {
            Some((n, o)) => (n.to_ascii_lowercase(), order(o)?),
            None => (s.to_ascii_lowercase(), Order::Flows),
        };
        let (columns, keys, either): (Vec<&'static str>, Vec<Key>, _) = match name.as_str() {
            "ip" => (vec!["ip"], vec![], Some(Either::Addr)),
            "port" => (vec!["port"], vec![], Some(Either::Port)),
            "record" => match &agg {
                Some(a) => (
                    a.iter().map(|(n, _)| *n).collect(),
                    a.iter().map(|(_, k)| *k).collect(),
                    None,
                ),
                None => (
                    vec!["srcip", "dstip", "srcport", "dstport", "proto"],
                    [
                        Field::SrcAddr,
                        Field::DstAddr,
                        Field::SrcPort,
                        Field::DstPort,
                        Field::Protocol,
                    ]
                    .map(Key::of)
                    .to_vec(),
                    None,
                ),
            },
            n => match named_key(n) {
                Some((c, f)) => (vec![c], vec![Key::of(f)], None),
                None => {
                    return Err(UsageError(format!(
                        "-s: unknown statistic '{n}' (expected srcip dstip ip srcport dstport \
                         port proto inif outif exporter record)"
                    )));
                }
            },
        };
        plans.push(Plan {
            title: format!(
                "Top {} {name} ordered by {}:",
                cli.top,
                s.split_once('/').map_or("flows", |(_, o)| o)
            ),
            columns,
            query: query(Output::Groups {
                keys,
                either,
                order: ord,
                limit: limit(cli.top),
            }),
        });
    }
    if plans.is_empty() {
        plans.push(match agg {
            Some(a) => Plan {
                title: "Aggregated flows:".into(),
                columns: a.iter().map(|(n, _)| *n).collect(),
                query: query(Output::Groups {
                    keys: a.iter().map(|(_, k)| *k).collect(),
                    either: None,
                    order: order(&cli.order)?,
                    limit: cli.count,
                }),
            },
            None => Plan {
                title: "Flows, newest first:".into(),
                columns: Vec::new(),
                query: query(Output::Flows { limit: cli.count }),
            },
        });
    }
    for p in &plans {
        p.query.validate().map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(plans)
}

/// Microseconds since the Unix epoch now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Opens the configured store; the error names the setting to fix.
pub fn open_store(args: &StoreArgs) -> Result<Box<dyn netflow_store::Store>, Error> {
    let cfg = args.store_config()?;
    let setting = match cfg.backend {
        netflow_store::Backend::Postgres(_) => "DB_HOST",
        netflow_store::Backend::Sqlite(_) => "DB_FILE",
        _ => "CLICKHOUSE_URL",
    };
    if let netflow_store::Backend::Sqlite(path) = &cfg.backend
        && !path.is_file()
    {
        return Err(Error::Setting(
            "DB_FILE",
            format!(
                "{}: no such file (the SQLite store the collector writes; set DB_FILE, or DB_HOST for PostgreSQL)",
                path.display()
            ),
        ));
    }
    netflow_store::open(&cfg)
        .map_err(|e| Error::Setting(setting, format!("cannot open {}: {e}", args.describe())))
}

/// Runs the plans on `store`, printing to `out`; returns the totals of the matching flows.
pub fn run(
    store: &mut dyn netflow_store::Store,
    plans: &[Plan],
    format: Format,
    out: &mut dyn Write,
) -> Result<Totals, anyhow::Error> {
    let mut totals = Totals::default();
    for (i, p) in plans.iter().enumerate() {
        if format == Format::Table && plans.len() > 1 {
            writeln!(out, "{}", p.title)?;
        }
        let mut printer = Printer::new(out, format, p.columns.clone());
        let mut failed: Option<std::io::Error> = None;
        totals = store.query(&p.query, &mut |row| {
            let r = match row {
                QueryRow::Group(g) => printer.group(&g),
                QueryRow::Flow(f) => printer.flow(f),
                _ => Ok(()),
            };
            match r {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        printer.finish(i + 1 < plans.len())?;
    }
    Ok(totals)
}

/// The summary line: flows, packets and bytes matched, and the window.
pub fn summary(t: &Totals, q: &Query) -> String {
    format!(
        "{} flows, {} packets, {} bytes ({}) matched in {} .. {}",
        t.flows,
        t.packets,
        t.bytes,
        crate::bot::table::human_bytes(t.bytes),
        time::iso(q.from_micros),
        time::iso(q.to_micros)
    )
}
