//! The JSON line the decode tool and the generator print for each flow record.

use std::io::{self, Write};

use netflow_wire::{Flow, Header};

/// Writes one flow as a JSON object on one line, keys in this order: `exporter`, `version`,
/// `source_id`, `sequence`, `template_id`, `src_addr`, `dst_addr`, `src_port`, `dst_port`,
/// `protocol`, `bytes`, `packets`, `input_if`, `output_if`, `direction`, `tcp_flags`.
/// `source_id` and `template_id` are left out for v5. Counters are written as given.
pub fn write_flow(
    out: &mut impl Write,
    header: &Header,
    template_id: u16,
    f: &Flow,
) -> io::Result<()> {
    write!(
        out,
        "{{\"exporter\":\"{}\",\"version\":{}",
        f.exporter, header.version
    )?;
    if header.version != 5 {
        write!(out, ",\"source_id\":{}", header.source_id)?;
    }
    write!(out, ",\"sequence\":{}", header.sequence)?;
    if header.version != 5 {
        write!(out, ",\"template_id\":{template_id}")?;
    }
    write_record_fields(out, f)
}

/// Ends a flow's JSON object: `,"src_addr":...,"tcp_flags":N}` and the newline, the record
/// fields every JSON line of ours shares (the decode tool, the generator, netflow-query).
pub fn write_record_fields(out: &mut impl Write, f: &Flow) -> io::Result<()> {
    writeln!(
        out,
        ",\"src_addr\":\"{}\",\"dst_addr\":\"{}\",\"src_port\":{},\"dst_port\":{},\"protocol\":{},\"bytes\":{},\"packets\":{},\"input_if\":{},\"output_if\":{},\"direction\":{},\"tcp_flags\":{}}}",
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
    )
}
