//! Decode NetFlow v5/v9/IPFIX from a pcap or pcapng file into JSON lines.
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Decode every NetFlow v5/v9/IPFIX datagram of a pcap or pcapng capture with one template cache,
/// in capture order, and print one JSON object per flow on stdout (counters as exported,
/// before sampling renormalization; options records are not printed; an IPFIX biflow record
/// prints its forward half, then its reverse half). A summary line goes to stderr. Use it to check the decoder against your own router's export.
#[derive(Parser, Debug)]
#[command(name = "netflow-decode", version)]
struct Args {
    /// The capture file (pcap or pcapng; Ethernet, Linux cooked or raw IP).
    file: PathBuf,
    /// Decode only UDP datagrams sent to this port.
    #[arg(long)]
    port: Option<u16>,
    /// Key exporters by address and source port (several exporters behind one address).
    #[arg(long)]
    key_by_port: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut log = std::io::stderr().lock();
    let result =
        netflow_apps::decode::run(&args.file, args.port, args.key_by_port, &mut out, &mut log)
            .and_then(|s| out.flush().map(|_| s).map_err(Into::into));
    match result {
        Ok(summary) => {
            let _ = writeln!(log, "netflow-decode: {summary}");
            ExitCode::SUCCESS
        }
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(log, "netflow-decode: {e:#}");
            ExitCode::FAILURE
        }
    }
}
