//! `netflow-generate`: send realistic NetFlow v5/v9 test traffic; see `--help`.
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use netflow_apps::generator::{self, Options, Prefix};

/// Send NetFlow v5 or v9 flows (IPv4, and IPv6 with v9) to a collector, from one UDP socket per
/// exporter address, at a steady rate; optionally print each flow sent as the JSON line
/// `netflow-decode` prints.
#[derive(Parser, Debug)]
#[command(name = "netflow-generate", version)]
struct Args {
    /// Collector address.
    #[arg(long, default_value = "127.0.0.1:2055")]
    target: SocketAddr,
    /// NetFlow version: 5 or 9.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(5..=9))]
    netflow_version: u16,
    /// Exporter addresses to send from (comma-separated; any 127.x.y.z works on loopback).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    exporters: Vec<IpAddr>,
    /// Interfaces per exporter (indexes 1..=N).
    #[arg(long, default_value_t = 4)]
    interfaces: u32,
    /// Source address pool (comma-separated prefixes).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10.0.0.0/24,2001:db8::/120"
    )]
    src_pool: Vec<Prefix>,
    /// Destination address pool (comma-separated prefixes).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "192.0.2.0/26,2001:db8:1::/124"
    )]
    dst_pool: Vec<Prefix>,
    /// Percentage of IPv6 flows (v9).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
    ipv6_percent: u8,
    /// Percentage of egress flows (v9).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u8).range(0..=100))]
    egress_percent: u8,
    /// Flows per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this many flows.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Random seed (same seed, same flows).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Flows per datagram (v5: at most 30).
    #[arg(long, default_value_t = 18)]
    flows_per_packet: usize,
    /// Longest flow duration in seconds (each flow starts up to this long before it is sent;
    /// 0: flows start and end when sent).
    #[arg(long, default_value_t = 30.0)]
    max_flow_duration: f64,
    /// Print every flow sent as a JSON line on stdout.
    #[arg(long)]
    print: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut o = Options::new(a.target);
    o.version = a.netflow_version;
    o.exporters = a.exporters;
    o.interfaces = a.interfaces;
    o.src_pool = a.src_pool;
    o.dst_pool = a.dst_pool;
    o.ipv6_percent = a.ipv6_percent;
    o.egress_percent = a.egress_percent;
    o.rate = a.rate;
    o.count = a.count;
    o.duration = a
        .duration
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(Duration::from_secs_f64);
    o.seed = a.seed;
    o.flows_per_packet = a.flows_per_packet;
    if a.max_flow_duration.is_finite() && a.max_flow_duration >= 0.0 {
        o.max_flow_duration = Duration::from_secs_f64(a.max_flow_duration);
    }
    let stop = match netflow_apps::app::stop_flag() {
        Ok(s) => s,
        Err(e) => return netflow_apps::app::exit_code("netflow-generate", Err(e)),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let r = generator::run(&o, a.print.then_some(&mut out as &mut dyn Write), &stop);
    let _ = out.flush();
    match r {
        Ok(s) => {
            eprintln!(
                "netflow-generate: sent {} flows ({} bytes) in {} datagrams, {} send errors",
                s.flows, s.bytes, s.packets, s.send_errors
            );
            ExitCode::SUCCESS
        }
        Err(e) => netflow_apps::app::exit_code("netflow-generate", Err(e)),
    }
}
