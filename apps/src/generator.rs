//! `netflow-generate`: realistic NetFlow v5 or v9 test traffic, built with the parser crate's
//! encoder ([`netflow_wire::emit`]), sent over UDP from one socket per exporter address, and
//! optionally printed as the decode tool's JSON lines ([`crate::flowjson`]) so that a test can
//! compute the expected aggregates independently.
//!
//! Everything is drawn from a seeded generator: the same options and seed give the same flows
//! (only timestamps differ). Source addresses, destination ports and byte counts are skewed
//! (a few heavy hitters), so top-N lists are meaningful.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netflow_wire::emit::{self, Message};
use netflow_wire::{FieldId, Flow, Header, template::FieldSpec};

use crate::Error;

/// An address prefix of a pool, e.g. `10.0.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address prefix (like 10.0.0.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?
        };
        Ok(Prefix { addr, len })
    }
}

impl Prefix {
    /// Number of addresses, capped at 2^20 (pools larger than that are sampled in their first 2^20).
    fn size(self) -> u64 {
        let host_bits = u32::from(if self.addr.is_ipv4() { 32 } else { 128 } - self.len);
        1u64 << host_bits.min(20)
    }

    fn nth(self, i: u64) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(i as u32))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(u128::from(i)))),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to send.
    pub target: SocketAddr,
    /// 5 or 9.
    pub version: u16,
    /// Exporter addresses: one socket bound to each (all of 127.0.0.0/8 works on loopback).
    pub exporters: Vec<IpAddr>,
    /// Interfaces per exporter (indexes 1..=N).
    pub interfaces: u32,
    /// Source address pool.
    pub src_pool: Vec<Prefix>,
    /// Destination address pool.
    pub dst_pool: Vec<Prefix>,
    /// Percentage of IPv6 flows (v9 only; needs IPv6 prefixes in both pools).
    pub ipv6_percent: u8,
    /// Percentage of egress flows (v9 only; v5 has no direction).
    pub egress_percent: u8,
    /// Flows per second.
    pub rate: f64,
    /// Stop after this many flows.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Random seed.
    pub seed: u64,
    /// v9 source id / v5 engine (`type << 8 | id`).
    pub source_id: u32,
    /// Flows per datagram (v5 at most 30).
    pub flows_per_packet: usize,
    /// v9: send the templates every this many datagrams (and in the first).
    pub template_every: u64,
    /// Longest flow: each flow started up to this long before it is sent (0: every flow
    /// starts and ends when sent, so tools that filter on flow times agree with receive times).
    pub max_flow_duration: Duration,
}

impl Options {
    /// The demo traffic of `netflow --demo`: v9 at 200 flows/s from 127.0.0.1, forever.
    pub fn demo(target: SocketAddr) -> Options {
        Options {
            rate: 200.0,
            ..Options::new(target)
        }
    }

    /// Defaults: v9, exporter 127.0.0.1, 4 interfaces, small v4 and v6 pools, 1000 flows/s.
    pub fn new(target: SocketAddr) -> Options {
        let p = |s: &str| {
            s.parse::<Prefix>().unwrap_or(Prefix {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                len: 32,
            })
        };
        Options {
            target,
            version: 9,
            exporters: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            interfaces: 4,
            src_pool: vec![p("10.0.0.0/24"), p("2001:db8::/120")],
            dst_pool: vec![p("192.0.2.0/26"), p("2001:db8:1::/124")],
            ipv6_percent: 20,
            egress_percent: 30,
            rate: 1000.0,
            count: None,
            duration: None,
            seed: 1,
            source_id: 1,
            flows_per_packet: 18,
            template_every: 20,
            max_flow_duration: Duration::from_secs(30),
        }
    }
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams.
    pub packets: u64,
    /// Flow records.
    pub flows: u64,
    /// Sum of the flows' byte counters.
    pub bytes: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
}

/// splitmix64: small, fast, seeded; good enough for test traffic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    /// Skewed towards 0: the square of a uniform draw.
    fn skewed(&mut self, n: u64) -> u64 {
        let r = self.below(n);
        r * r / n.max(1)
    }
    fn percent(&mut self, p: u8) -> bool {
        self.below(100) < u64::from(p)
    }
}

const V4_TEMPLATE: u16 = 256;
const V6_TEMPLATE: u16 = 257;

fn template(v6: bool) -> [FieldSpec; 13] {
    let (src, dst, alen) = if v6 {
        (FieldId::IPV6_SRC_ADDR, FieldId::IPV6_DST_ADDR, 16)
    } else {
        (FieldId::IPV4_SRC_ADDR, FieldId::IPV4_DST_ADDR, 4)
    };
    [
        FieldSpec::new(src, alen),
        FieldSpec::new(dst, alen),
        FieldSpec::new(FieldId::L4_SRC_PORT, 2),
        FieldSpec::new(FieldId::L4_DST_PORT, 2),
        FieldSpec::new(FieldId::PROTOCOL, 1),
        FieldSpec::new(FieldId::TCP_FLAGS, 1),
        FieldSpec::new(FieldId::IN_BYTES, 8),
        FieldSpec::new(FieldId::IN_PKTS, 4),
        FieldSpec::new(FieldId::INPUT_SNMP, 4),
        FieldSpec::new(FieldId::OUTPUT_SNMP, 4),
        FieldSpec::new(FieldId::DIRECTION, 1),
        FieldSpec::new(FieldId::FIRST_SWITCHED, 4),
        FieldSpec::new(FieldId::LAST_SWITCHED, 4),
    ]
}

struct Exporter {
    addr: IpAddr,
    sock: UdpSocket,
    sequence: u32,
    packets: u64,
}

fn pick(rng: &mut Rng, pool: &[Prefix], v6: bool) -> Option<IpAddr> {
    let fam: Vec<&Prefix> = pool.iter().filter(|p| p.addr.is_ipv6() == v6).collect();
    let p = fam.get(rng.below(fam.len() as u64) as usize)?;
    Some(p.nth(rng.skewed(p.size())))
}

fn make_flow(rng: &mut Rng, o: &Options, exporter: IpAddr, now_ms: u64) -> Option<Flow> {
    let has_v6 =
        o.src_pool.iter().any(|p| p.addr.is_ipv6()) && o.dst_pool.iter().any(|p| p.addr.is_ipv6());
    let v6 = o.version != 5 && has_v6 && rng.percent(o.ipv6_percent);
    let src_addr = pick(rng, &o.src_pool, v6)?;
    let dst_addr = pick(rng, &o.dst_pool, v6)?;
    let protocol = match rng.below(100) {
        0..60 => 6,
        60..90 => 17,
        90..97 => {
            if v6 {
                58
            } else {
                1
            }
        }
        _ => 47,
    };
    let (src_port, dst_port) = if matches!(protocol, 6 | 17) {
        const COMMON: [u16; 7] = [443, 80, 53, 22, 123, 8080, 3306];
        let dst = if rng.percent(70) {
            COMMON[rng.skewed(COMMON.len() as u64) as usize]
        } else {
            1024 + rng.below(64_000) as u16
        };
        (1024 + rng.below(64_000) as u16, dst)
    } else {
        (0, 0)
    };
    let bytes = 40 + rng.skewed(3_000_000);
    let longest = u64::try_from(o.max_flow_duration.as_millis()).unwrap_or(u64::MAX);
    let start = now_ms.saturating_sub(rng.below(longest));
    Some(Flow {
        ts_micros: 0,
        exporter,
        input_if: 1 + rng.below(u64::from(o.interfaces.max(1))) as u32,
        output_if: 1 + rng.below(u64::from(o.interfaces.max(1))) as u32,
        direction: if o.version != 5 && rng.percent(o.egress_percent) {
            Flow::EGRESS
        } else {
            Flow::INGRESS
        },
        protocol,
        src_addr,
        dst_addr,
        src_port,
        dst_port,
        bytes,
        packets: (bytes / 800).max(1),
        tcp_flags: if protocol == 6 {
            (rng.next() & 0x3f) as u8
        } else {
            0
        },
        sampling_interval: 1,
        start_ms: start,
        end_ms: now_ms,
    })
}

fn now_unix() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Sends flows as `o` says until its count or duration is reached, or `stop`. Each flow sent
/// is printed to `print` as a JSON line, when given.
pub fn run(
    o: &Options,
    mut print: Option<&mut dyn Write>,
    stop: &AtomicBool,
) -> Result<Sent, Error> {
    if o.version != 5 && o.version != 9 {
        return Err(Error::Setting(
            "--version",
            format!("{} is not 5 or 9", o.version),
        ));
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return Err(Error::Setting(
            "--rate",
            "must be a positive number of flows per second".into(),
        ));
    }
    if o.exporters.is_empty() {
        return Err(Error::Setting(
            "--exporters",
            "at least one exporter address".into(),
        ));
    }
    if !o.src_pool.iter().any(|p| p.addr.is_ipv4()) || !o.dst_pool.iter().any(|p| p.addr.is_ipv4())
    {
        return Err(Error::Setting(
            "--src-pool/--dst-pool",
            "each pool needs an IPv4 prefix".into(),
        ));
    }
    let per_packet = o
        .flows_per_packet
        .clamp(1, if o.version == 5 { 30 } else { 200 });
    let mut exporters = Vec::new();
    for &a in &o.exporters {
        let sock = UdpSocket::bind(SocketAddr::new(a, 0))
            .map_err(Error::io(format!("cannot bind exporter address {a}")))?;
        sock.connect(o.target)
            .map_err(Error::io(format!("cannot reach {}", o.target)))?;
        exporters.push(Exporter {
            addr: a,
            sock,
            sequence: 0,
            packets: 0,
        });
    }
    let mut rng = Rng(o.seed);
    let started = Instant::now();
    let boot_ms = now_unix().as_millis() as u64 - 3_600_000;
    let mut sent = Sent::default();
    let mut buf = Vec::with_capacity(2048);
    let mut flows = Vec::with_capacity(per_packet);
    let mut out_err = None;
    let mut turn = 0usize;
    loop {
        if stop.load(Ordering::Relaxed)
            || o.count.is_some_and(|c| sent.flows >= c)
            || o.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let n = o
            .count
            .map_or(per_packet, |c| per_packet.min((c - sent.flows) as usize));
        let e = &mut exporters[turn % o.exporters.len()];
        turn += 1;
        let now = now_unix();
        let now_ms = now.as_millis() as u64;
        flows.clear();
        for _ in 0..n {
            if let Some(f) = make_flow(&mut rng, o, e.addr, now_ms) {
                flows.push(f);
            }
        }
        let header = Header {
            version: o.version,
            count: flows.len() as u16,
            sys_uptime_ms: Some(now_ms.saturating_sub(boot_ms) as u32),
            export_secs: now.as_secs() as u32,
            export_nanos: if o.version == 5 {
                now.subsec_nanos()
            } else {
                0
            },
            sequence: e.sequence,
            source_id: if o.version == 5 {
                o.source_id & 0xffff
            } else {
                o.source_id
            },
            sampling: 0,
        };
        buf.clear();
        if o.version == 5 {
            emit::v5(&mut buf, &header, &flows)
                .map_err(|e| Error::Setting("generator", e.to_string()))?;
        } else {
            let t4 = template(false);
            let t6 = template(true);
            let mut m = Message::new(&mut buf, &header);
            if e.packets % o.template_every.max(1) == 0 {
                m.set(0)
                    .template(V4_TEMPLATE, &t4)
                    .template(V6_TEMPLATE, &t6);
            }
            if flows.iter().any(|f| f.src_addr.is_ipv4()) {
                m.set(V4_TEMPLATE);
                for f in flows.iter().filter(|f| f.src_addr.is_ipv4()) {
                    m.flow(&t4, f, &header);
                }
            }
            if flows.iter().any(|f| f.src_addr.is_ipv6()) {
                m.set(V6_TEMPLATE);
                for f in flows.iter().filter(|f| f.src_addr.is_ipv6()) {
                    m.flow(&t6, f, &header);
                }
            }
            m.finish()
                .map_err(|e| Error::Setting("generator", e.to_string()))?;
        }
        match e.sock.send(&buf) {
            Ok(_) => {
                if let Some(mut w) = print.as_deref_mut() {
                    // v9 data sets are written v4 first, then v6: print in that order.
                    let order = flows
                        .iter()
                        .filter(|f| o.version == 5 || f.src_addr.is_ipv4())
                        .map(|f| (f, V4_TEMPLATE))
                        .chain(
                            flows
                                .iter()
                                .filter(|f| o.version != 5 && f.src_addr.is_ipv6())
                                .map(|f| (f, V6_TEMPLATE)),
                        );
                    for (f, t) in order {
                        if let Err(err) = crate::flowjson::write_flow(
                            &mut w,
                            &header,
                            if o.version == 5 { 0 } else { t },
                            f,
                        ) {
                            out_err = Some(err);
                        }
                    }
                }
                sent.packets += 1;
                sent.flows += flows.len() as u64;
                sent.bytes += flows.iter().map(|f| f.bytes).sum::<u64>();
            }
            Err(_) => sent.send_errors += 1,
        }
        if let Some(err) = out_err.take() {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(Error::Io("printing flows".into(), err));
        }
        e.packets += 1;
        e.sequence = if o.version == 5 {
            e.sequence.wrapping_add(flows.len() as u32)
        } else {
            e.sequence.wrapping_add(1)
        };
        // Pace: flow k is due at k / rate seconds.
        let due = Duration::from_secs_f64(sent.flows as f64 / o.rate);
        let el = started.elapsed();
        if due > el {
            std::thread::sleep((due - el).min(Duration::from_millis(200)));
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netflow_wire::{Decoder, Limits};

    fn capture(version: u16, n: u64) -> (Vec<Vec<u8>>, String) {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut o = Options::new(rx.local_addr().expect("addr"));
        o.version = version;
        o.count = Some(n);
        o.rate = 1e9;
        o.seed = 7;
        let mut printed = Vec::new();
        let stop = AtomicBool::new(false);
        let sent = run(&o, Some(&mut printed), &stop).expect("run");
        assert_eq!(sent.flows, n);
        let mut dgs = Vec::new();
        let mut buf = [0u8; 65536];
        for _ in 0..sent.packets {
            let k = rx.recv(&mut buf).expect("recv");
            dgs.push(buf[..k].to_vec());
        }
        (dgs, String::from_utf8(printed).expect("utf8"))
    }

    fn decode_print(dgs: &[Vec<u8>]) -> String {
        let mut d = Decoder::new(Limits::default());
        let mut out = Vec::new();
        for g in dgs {
            let x = d
                .decode(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, g)
                .expect("decode");
            assert!(x.issues().is_empty(), "{:?}", x.issues());
            for s in x.data_sets() {
                for f in s.flows() {
                    crate::flowjson::write_flow(&mut out, &x.header(), s.key().template_id, &f)
                        .expect("write");
                }
            }
        }
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn test_v9_print_matches_decoder() {
        let (dgs, printed) = capture(9, 500);
        assert_eq!(printed.lines().count(), 500);
        assert!(
            printed.contains("\"src_addr\":\"2001:db8::"),
            "some IPv6 flows"
        );
        assert!(printed.contains("\"direction\":1"));
        assert_eq!(decode_print(&dgs), printed);
    }

    #[test]
    fn test_v5_print_matches_decoder() {
        let (dgs, printed) = capture(5, 95);
        assert_eq!(printed.lines().count(), 95);
        assert!(!printed.contains("2001:db8"));
        assert_eq!(decode_print(&dgs), printed);
    }

    #[test]
    fn test_prefix_parse() {
        assert_eq!("10.0.0.0/24".parse::<Prefix>().map(|p| p.size()), Ok(256));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("x/1".parse::<Prefix>().is_err());
        assert_eq!(
            "2001:db8::/64".parse::<Prefix>().map(|p| p.size()),
            Ok(1 << 20)
        );
    }
}
