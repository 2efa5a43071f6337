//! How `netflow-query` prints rows as they come from the store (nothing is buffered but the
//! line being written): a table for people, CSV, or one JSON object per line.

use std::io::{self, Write};

use grafolean_client::protocol_keyword;
use netflow_store::Flow;
use netflow_store::query::{Group, Value};

use super::time::iso;
use crate::bot::table::human_bytes;

/// Output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with human units (bytes as kB, MB, ...).
    Table,
    /// Comma-separated values with a header line; numbers in full.
    Csv,
    /// One JSON object per row (newline-delimited JSON); numbers in full.
    Ndjson,
}

/// The column names of the raw flow listing (the decode tool's JSON keys plus `ts`).
pub const FLOW_COLUMNS: [&str; 13] = [
    "ts",
    "exporter",
    "src_addr",
    "dst_addr",
    "src_port",
    "dst_port",
    "protocol",
    "bytes",
    "packets",
    "input_if",
    "output_if",
    "direction",
    "tcp_flags",
];

/// A protocol as shown: its IANA keyword (`TCP`), or the number when it has none.
pub fn protocol_name(p: u8) -> String {
    protocol_keyword(p).map_or_else(|| p.to_string(), str::to_owned)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Protocol(p) => protocol_name(*p),
        v => v.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// TCP flags as nfdump's letters (`.AP.SF` style, eight positions CEUAPRSF).
pub fn flag_letters(f: u8) -> String {
    "CEUAPRSF"
        .chars()
        .enumerate()
        .map(|(i, c)| if f & (0x80 >> i) != 0 { c } else { '.' })
        .collect()
}

/// `10.0.0.1:443`, `[2001:db8::1]:443`.
fn endpoint(a: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(a, port).to_string()
}

/// Writes the rows of one result to `out`.
pub struct Printer<'a> {
    out: &'a mut dyn Write,
    format: Format,
    /// Group key names (`srcip`, ...); empty for the flow listing.
    keys: Vec<&'static str>,
    header_done: bool,
}

impl std::fmt::Debug for Printer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer")
            .field("format", &self.format)
            .field("keys", &self.keys)
            .finish()
    }
}

fn key_width(name: &str) -> usize {
    match name {
        "srcip" | "dstip" | "ip" | "exporter" => 24,
        "proto" => 9,
        _ => 7,
    }
}

impl<'a> Printer<'a> {
    /// A printer of groups keyed by `keys` (names as in the output), or of flows when empty.
    pub fn new(out: &'a mut dyn Write, format: Format, keys: Vec<&'static str>) -> Printer<'a> {
        Printer {
            out,
            format,
            keys,
            header_done: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if self.header_done {
            return Ok(());
        }
        self.header_done = true;
        match (self.format, self.keys.is_empty()) {
            (Format::Ndjson, _) => Ok(()),
            (Format::Csv, true) => writeln!(self.out, "{}", FLOW_COLUMNS.join(",")),
            (Format::Csv, false) => {
                writeln!(self.out, "{},flows,packets,bytes", self.keys.join(","))
            }
            (Format::Table, true) => writeln!(
                self.out,
                "{:<27} {:<9} {:>45} -> {:<45} {:>10} {:>10} {:<8} {:>6} {:>6}  exporter",
                "ts", "proto", "src", "dst", "packets", "bytes", "flags", "in", "out"
            ),
            (Format::Table, false) => {
                let mut line = String::new();
                for k in &self.keys {
                    line.push_str(&format!("{:<w$} ", k, w = key_width(k)));
                }
                writeln!(
                    self.out,
                    "{line}{:>10} {:>12} {:>10}",
                    "flows", "packets", "bytes"
                )
            }
        }
    }

    /// Writes a group.
    pub fn group(&mut self, g: &Group<'_>) -> io::Result<()> {
        self.header()?;
        let vals: Vec<String> = g.keys.iter().map(value_text).collect();
        match self.format {
            Format::Csv => {
                let v: Vec<String> = vals.iter().map(|v| csv_field(v)).collect();
                writeln!(
                    self.out,
                    "{},{},{},{}",
                    v.join(","),
                    g.flows,
                    g.packets,
                    g.bytes
                )
            }
            Format::Ndjson => {
                let mut line = String::from("{");
                for (k, v) in self.keys.iter().zip(&vals) {
                    line.push_str(&format!("\"{k}\":{},", json_string(v)));
                }
                writeln!(
                    self.out,
                    "{line}\"flows\":{},\"packets\":{},\"bytes\":{}}}",
                    g.flows, g.packets, g.bytes
                )
            }
            Format::Table => {
                let mut line = String::new();
                for (k, v) in self.keys.iter().zip(&vals) {
                    line.push_str(&format!("{:<w$} ", v, w = key_width(k)));
                }
                writeln!(
                    self.out,
                    "{line}{:>10} {:>12} {:>10}",
                    g.flows,
                    g.packets,
                    human_bytes(g.bytes)
                )
            }
        }
    }

    /// Writes a flow.
    pub fn flow(&mut self, f: &Flow) -> io::Result<()> {
        self.header()?;
        let ts = iso(f.ts_micros);
        match self.format {
            Format::Csv => writeln!(
                self.out,
                "{ts},{},{},{},{},{},{},{},{},{},{},{},{}",
                f.exporter,
                f.src_addr,
                f.dst_addr,
                f.src_port,
                f.dst_port,
                f.protocol,
                f.bytes,
                f.packets,
                f.input_if,
                f.output_if,
                f.direction,
                f.tcp_flags
            ),
            Format::Ndjson => {
                write!(
                    self.out,
                    "{{\"ts\":\"{ts}\",\"exporter\":\"{}\"",
                    f.exporter
                )?;
                crate::flowjson::write_record_fields(&mut self.out, f)
            }
            Format::Table => writeln!(
                self.out,
                "{ts:<27} {:<9} {:>45} -> {:<45} {:>10} {:>10} {:<8} {:>6} {:>6}  {}",
                protocol_name(f.protocol),
                endpoint(f.src_addr, f.src_port),
                endpoint(f.dst_addr, f.dst_port),
                f.packets,
                human_bytes(f.bytes),
                flag_letters(f.tcp_flags),
                f.input_if,
                f.output_if,
                f.exporter
            ),
        }
    }

    /// Ends the result: the header of an empty result (CSV, table), then a blank line between
    /// results of a table or CSV.
    pub fn finish(&mut self, more_follow: bool) -> io::Result<()> {
        self.header()?;
        if more_follow && self.format != Format::Ndjson {
            writeln!(self.out)?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_formats_of_a_group() {
        let keys = [Value::Addr("10.0.0.1".parse().unwrap()), Value::Protocol(6)];
        let g = Group {
            keys: &keys,
            flows: 12,
            packets: 340,
            bytes: 51234,
        };
        let mut out = Vec::new();
        {
            let mut p = Printer::new(&mut out, Format::Ndjson, vec!["srcip", "proto"]);
            p.group(&g).unwrap();
            p.finish(false).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"srcip\":\"10.0.0.1\",\"proto\":\"TCP\",\"flows\":12,\"packets\":340,\"bytes\":51234}\n"
        );
        let mut out = Vec::new();
        {
            let mut p = Printer::new(&mut out, Format::Csv, vec!["srcip", "proto"]);
            p.group(&g).unwrap();
            p.finish(false).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "srcip,proto,flows,packets,bytes\n10.0.0.1,TCP,12,340,51234\n"
        );
        let mut out = Vec::new();
        {
            let mut p = Printer::new(&mut out, Format::Table, vec!["srcip", "proto"]);
            p.group(&g).unwrap();
            p.finish(false).unwrap();
        }
        let t = String::from_utf8(out).unwrap();
        assert!(t.contains("51.2 kB") && t.contains("TCP"), "{t}");
        assert_eq!(flag_letters(0x12), "...A..S.");
        assert_eq!(json_string("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
