//! The smallest collector: receive NetFlow v5/v9/IPFIX on a UDP port and print each flow.
//!
//! `cargo run -p netflow-examples --example listen -- [ADDR:PORT]` (default 127.0.0.1:2055),
//! then point an exporter at it, e.g. `softflowd -r capture.pcap -n 127.0.0.1:2055 -v 9`.

use std::net::UdpSocket;
use std::time::{SystemTime, UNIX_EPOCH};

use netflow_wire::{Decoder, Limits};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2055".into());
    let socket = UdpSocket::bind(&addr)?;
    eprintln!("listening on {addr}");
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        match decoder.decode(from.ip(), now, &buf[..n]) {
            Ok(decoded) => {
                for f in decoded.flows() {
                    println!(
                        "{} {}:{} -> {}:{} proto {} {} bytes {} packets",
                        f.exporter,
                        f.src_addr,
                        f.src_port,
                        f.dst_addr,
                        f.dst_port,
                        f.protocol,
                        f.bytes,
                        f.packets
                    );
                }
                for issue in decoded.issues() {
                    eprintln!("{from}: {issue}");
                }
            }
            Err(e) => eprintln!("{from}: {e}"),
        }
    }
}
