//! Build a NetFlow v9 packet with the encoder, decode it back, and print what came out:
//! `cargo run -p netflow-examples --example round_trip`.

use netflow_wire::emit::Message;
use netflow_wire::{Decoder, FieldId, Flow, Header, Limits, template::FieldSpec};

fn main() -> Result<(), netflow_wire::DecodeError> {
    let template = [
        FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4),
        FieldSpec::new(FieldId::IPV4_DST_ADDR, 4),
        FieldSpec::new(FieldId::L4_SRC_PORT, 2),
        FieldSpec::new(FieldId::L4_DST_PORT, 2),
        FieldSpec::new(FieldId::PROTOCOL, 1),
        FieldSpec::new(FieldId::IN_BYTES, 8),
        FieldSpec::new(FieldId::IN_PKTS, 4),
    ];
    let header = Header {
        version: 9,
        sys_uptime_ms: Some(60_000),
        export_secs: 1_700_000_000,
        ..Header::default()
    };
    let flow = Flow {
        src_addr: [10, 0, 0, 1].into(),
        dst_addr: [192, 0, 2, 7].into(),
        src_port: 443,
        dst_port: 51000,
        protocol: 6,
        bytes: 1500,
        packets: 3,
        ..Flow::default()
    };
    let mut packet = Vec::new();
    let mut m = Message::new(&mut packet, &header);
    m.set(0).template(256, &template);
    m.set(256)
        .flow(&template, &flow, &header)
        .flow(&template, &flow, &header);
    let len = m.finish()?;
    println!("encoded a {len}-byte v9 packet: template 256 and 2 records");

    let mut decoder = Decoder::new(Limits::default());
    let decoded = decoder.decode(std::net::Ipv4Addr::LOCALHOST, 0, &packet)?;
    for f in decoded.flows() {
        println!(
            "{}:{} -> {}:{} proto {} {} bytes {} packets",
            f.src_addr, f.src_port, f.dst_addr, f.dst_port, f.protocol, f.bytes, f.packets
        );
    }
    Ok(())
}
