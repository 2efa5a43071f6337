//! Shared by the integration tests: locating `shared/captures` and reading the oracle files.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

/// `../shared/captures` beside the repository (override with `NETFLOW_CAPTURES`). Missing
/// captures fail the test: they are part of what CI checks.
pub fn captures_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NETFLOW_CAPTURES") {
        return PathBuf::from(d);
    }
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/captures");
    assert!(
        d.is_dir(),
        "captures not found at {} (set NETFLOW_CAPTURES)",
        d.display()
    );
    d
}

/// One datagram of an oracle file: exporter address and UDP payload.
#[derive(Debug)]
pub struct Datagram {
    pub exporter: IpAddr,
    pub payload: Vec<u8>,
}

pub fn oracle(name: &str) -> Vec<Datagram> {
    let text =
        std::fs::read_to_string(captures_dir().join(format!("{name}.oracle.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let exp = v["exporter"].as_str().unwrap();
            let ip = if let Some(rest) = exp.strip_prefix('[') {
                &rest[..rest.find(']').unwrap()]
            } else {
                &exp[..exp.rfind(':').unwrap()]
            };
            let hex = v["payload_hex"].as_str().unwrap();
            let payload = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            Datagram {
                exporter: ip.parse().unwrap(),
                payload,
            }
        })
        .collect()
}

pub fn expected(name: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(captures_dir().join(format!("{name}.expected.jsonl"))).unwrap();
    let mut v: Vec<String> = text
        .lines()
        .map(|l| canonical(&serde_json::from_str(l).unwrap()))
        .collect();
    v.sort();
    v
}

/// A JSON object as a string with sorted keys, for multiset comparison.
pub fn canonical(v: &Value) -> String {
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    keys.iter()
        .map(|k| format!("{k}={}", obj[*k]))
        .collect::<Vec<_>>()
        .join(",")
}

/// The flows of a decoded datagram, read three ways that must agree: external iteration
/// (`next`), internal iteration (`for_each`, which picks a reader per set), and one `next`
/// followed by `for_each` on the rest. Returns them.
pub fn flows_checked(decoded: &netflow_wire::DecodedDatagram<'_>) -> Vec<netflow_wire::Flow> {
    let by_next: Vec<_> = decoded.flows().collect();
    let mut by_fold = Vec::new();
    decoded.flows().for_each(|f| by_fold.push(f));
    assert_eq!(by_fold, by_next, "for_each and next disagree");
    let mut it = decoded.flows();
    let mut mixed: Vec<_> = it.next().into_iter().collect();
    it.for_each(|f| mixed.push(f));
    assert_eq!(mixed, by_next, "next then for_each disagrees");
    by_next
}

/// Runs softflowd (Debian package `softflowd`; `.ci/run` installs it) on input-traffic.pcap
/// with `args` (e.g. `["-v", "10", "-b"]`), exporting to a socket on 127.0.0.1; returns what
/// it sent, in order. Missing softflowd fails the test.
pub fn softflowd(args: &[&str]) -> Vec<Datagram> {
    use std::net::UdpSocket;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let sf = std::path::Path::new("/usr/sbin/softflowd");
    assert!(
        sf.exists(),
        "softflowd is missing: apt-get install -y softflowd (Debian package softflowd)"
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    // -a: times from the pcap; -d: stay in the foreground, exit at the end of the file.
    let status = Command::new(sf)
        .args(["-a", "-d", "-r"])
        .arg(captures_dir().join("input-traffic.pcap"))
        .args(args)
        .args(["-n", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run softflowd");
    assert!(status.success(), "softflowd {args:?} failed");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        out.push(Datagram {
            exporter: from.ip(),
            payload: buf[..n].to_vec(),
        });
    }
    assert!(!out.is_empty(), "softflowd {args:?} sent nothing");
    out
}

/// A small deterministic generator (no dependency on a random crate).
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One mutation of `p`: bit flips, a cut, a rewritten 16-bit length or count field, a
/// rewritten field length or id inside a template record, or several of these.
pub fn mutate(p: &[u8], rng: &mut Lcg) -> Vec<u8> {
    let mut m = p.to_vec();
    for _ in 0..1 + rng.below(3) {
        if m.is_empty() {
            break;
        }
        match rng.below(5) {
            0 => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => m.truncate(rng.below(m.len())),
            2 => {
                // A length, count or set length: an even offset, an extreme or random value.
                let i = rng.below(m.len() / 2) * 2;
                let v: u16 = match rng.below(4) {
                    0 => 0,
                    1 => 0xffff,
                    2 => 4,
                    _ => rng.next_u64() as u16,
                };
                if i + 1 < m.len() {
                    m[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            3 => {
                // Inside a template record (after the headers): a field id or length.
                let i = 20 + rng.below(m.len().saturating_sub(20) / 2) * 2;
                if i + 1 < m.len() {
                    let v = [0u16, 1, 0xffff, 0x8000 | 1, 65535 - 3][rng.below(5)];
                    m[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            _ => {
                let i = rng.below(m.len());
                m[i] = rng.next_u64() as u8;
            }
        }
    }
    m
}
