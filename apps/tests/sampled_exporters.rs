//! Sampled export from a real exporter: softflowd (Debian package `softflowd`) replays
//! input-traffic.pcap sampling 1 packet in 10, as NetFlow v5 (rate in the header), v9 and IPFIX
//! (rate in options data). The decoder learns the rate, and the renormalized bytes are within
//! the sampling error of the true traffic, which every unsampled exporter agrees on
//! (captures/README.md: IPv4 3,315,918 + IPv6 1,906,811 bytes).

mod common;

use common::captures;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use netflow_wire::{Decoder, Limits};

const TRUE_BYTES: u64 = 3_315_918 + 1_906_811;
const TRUE_V4_BYTES: u64 = 3_315_918;

/// Runs softflowd with `-s 10` for `version` into a local socket; returns the datagrams.
fn export(version: &str) -> Vec<Vec<u8>> {
    let sf = std::path::Path::new("/usr/sbin/softflowd");
    assert!(
        sf.exists(),
        "softflowd is missing: apt-get install -y softflowd (Debian package softflowd)"
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let status = Command::new(sf)
        .args(["-a", "-d", "-s", "10", "-r"])
        .arg(captures().join("input-traffic.pcap"))
        .args(["-v", version, "-n", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run softflowd");
    assert!(status.success(), "softflowd -v {version} failed");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    assert!(!out.is_empty(), "softflowd -v {version} sent nothing");
    out
}

#[test]
fn softflowd_sampled_v5_v9_ipfix_renormalize_to_the_true_traffic() {
    for (version, truth) in [("5", TRUE_V4_BYTES), ("9", TRUE_BYTES), ("10", TRUE_BYTES)] {
        let mut decoder = Decoder::new(Limits::default());
        let (mut raw, mut renormalized, mut flows) = (0u64, 0u64, 0u64);
        for d in export(version) {
            let decoded = decoder
                .decode(std::net::Ipv4Addr::LOCALHOST, 0, &d)
                .unwrap();
            for f in decoded.flows() {
                assert_eq!(f.sampling_interval, 10, "v{version}: {f:?}");
                flows += 1;
                raw += f.bytes;
                renormalized += f.renormalized().bytes;
            }
        }
        assert!(flows > 100, "v{version}: {flows} flows");
        assert_eq!(renormalized, raw * 10);
        let error = (renormalized as f64 - truth as f64).abs() / truth as f64;
        // Systematic 1-in-10 packet sampling of ~14k packets: a few percent.
        // v9/IPFIX came out at -3.5% here. softflowd's sampled v5 export carries about 1.5x the
        // IPv4 bytes its v9 export carries for the same -s 10 (raw v5 dOctets sum 489,287 vs
        // 323,140 in v9, read straight from the datagrams): +47.6% after renormalizing. That
        // is the exporter's doing; the decoder's part (rate 10 from the header, applied to
        // every flow) is checked above.
        let bound = if version == "5" { 0.60 } else { 0.10 };
        assert!(
            error < bound,
            "v{version}: renormalized {renormalized} bytes vs true {truth}: {:.1}% off",
            error * 100.0
        );
        eprintln!(
            "v{version}: {flows} sampled flows, {raw} bytes x10 = {renormalized} vs {truth} ({:+.1}%)",
            (renormalized as f64 / truth as f64 - 1.0) * 100.0
        );
    }
}
