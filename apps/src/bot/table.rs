//! Without Grafolean: each window's aggregates as a readable table on stdout.

use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use grafolean_client::protocol_keyword;
use netflow_store::Store;
use tracing::warn;

use super::aggregate::{DIRECTIONS, DirAgg, Interval, SumKey, Sums, Window};
use crate::Error;

/// Bytes with a binary-free human unit: `999 B`, `1.5 kB`, `12.3 MB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1000.0;
    let mut u = 0;
    while v >= 999.95 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn proto_name(p: u8) -> String {
    protocol_keyword(p).map_or_else(|| format!("proto{p}"), str::to_owned)
}

fn list<K: SumKey>(m: &Sums<K>, n: usize, name: impl Fn(K) -> String) -> String {
    let v = m.top(n);
    if v.is_empty() {
        return "-".to_owned();
    }
    v.into_iter()
        .map(|(k, b)| format!("{} {}", name(k), human_bytes(b)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders one window: per exporter and direction the total, interfaces, top talkers,
/// protocols and destination ports.
pub fn render(w: &Window, after_micros: i64, upto_micros: i64) -> String {
    let mut s = String::new();
    let secs = (upto_micros - after_micros) as f64 / 1e6;
    let _ = writeln!(
        s,
        "=== NetFlow window of {secs:.0} s ending at {} (UTC), {} flows ===",
        crate::query::time::iso(upto_micros - upto_micros.rem_euclid(1_000_000)),
        w.flows()
    );
    let exporters = w.exporter_addrs();
    if exporters.is_empty() {
        let _ = writeln!(s, "(no flows)");
    }
    for a in exporters {
        let Some(dirs) = w.exporter(a) else { continue };
        for (di, dname) in DIRECTIONS.iter().enumerate() {
            let d: &DirAgg = &dirs[di];
            if d.flows == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "exporter {a:<39} {dname:<7} {:>10}  {} flows",
                human_bytes(d.bytes),
                d.flows
            );
            let mut ifs: Vec<(&u32, u64)> = d.ifaces.iter().map(|(k, v)| (k, v.bytes)).collect();
            ifs.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
            for (i, b) in ifs.iter().take(10) {
                let ia = &d.ifaces[*i];
                let _ = writeln!(
                    s,
                    "  if {i:<6} {:>10}  top: {}",
                    human_bytes(*b),
                    list(&ia.ips, 3, |ip: IpAddr| ip.to_string())
                );
            }
            let talker = if di == 0 { "sources" } else { "destinations" };
            let _ = writeln!(
                s,
                "  top {talker}: {}",
                list(&d.ips, 10, |ip: IpAddr| ip.to_string())
            );
            let _ = writeln!(s, "  protocols: {}", list(&d.protocols, 10, proto_name));
            let _ = writeln!(
                s,
                "  dst ports: {}",
                list(&d.dst_ports, 10, |p: u16| p.to_string())
            );
            let _ = writeln!(
                s,
                "  connections: {}",
                list(&d.conns, 5, |(x, y): (IpAddr, IpAddr)| format!("{x}->{y}"))
            );
        }
    }
    s
}

/// Prints a table every `every` until `stop`, each covering (previous end, max ts].
pub fn run(
    store: &mut dyn Store,
    every: Duration,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let job = format!("local-table/{}", Interval::M1.label());
    let mut next = Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() < next {
            continue;
        }
        next += every;
        let exporters: Vec<IpAddr> = match store.exporters() {
            Ok(x) => x.into_iter().map(|e| e.addr).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read exporters");
                continue;
            }
        };
        match super::aggregate_window(store, &job, Interval::M1, &exporters) {
            Ok(Some((w, read))) => {
                let _ = out.write_all(render(&w, read.after, read.upto).as_bytes());
                if read.late_flows > 0 {
                    let _ = writeln!(
                        out,
                        "({} late flows of earlier windows included)",
                        read.late_flows
                    );
                }
                let _ = out.flush();
                if let Err(e) = store.set_job_mark(&job, read.mark) {
                    warn!(error = %e, "cannot record the window end");
                }
            }
            Ok(None) => {
                let _ = writeln!(out, "=== no flows stored yet ===");
                let _ = out.flush();
            }
            Err(e) => warn!(error = %e, "cannot read the window"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netflow_wire::Flow;

    #[test]
    fn test_human_bytes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
        assert_eq!(human_bytes(u64::MAX), "18.4 EB");
    }

    #[test]
    fn test_render_mentions_everything() {
        let mut w = Window::new();
        w.add(&Flow {
            exporter: "192.0.2.1".parse().expect("ip"),
            src_addr: "10.0.0.1".parse().expect("ip"),
            dst_addr: "10.0.0.2".parse().expect("ip"),
            input_if: 3,
            protocol: 6,
            dst_port: 443,
            bytes: 1500,
            ..Flow::default()
        });
        let t = render(&w, 0, 60_000_000);
        for needle in [
            "192.0.2.1",
            "ingress",
            "1.5 kB",
            "if 3",
            "10.0.0.1",
            "TCP",
            "443",
            "10.0.0.1->10.0.0.2",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
    }
}
