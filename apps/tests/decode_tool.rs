//! `netflow-decode` on the real captures: its JSON lines equal the reference decoder's
//! normalized flows (as multisets), and its output format is exactly the documented one.

mod common;

use common::captures;

use std::collections::BTreeMap;
use std::process::Command;

/// Multiset of lines canonicalized (keys sorted) so that field order does not matter here.
fn multiset(text: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let obj: BTreeMap<_, _> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        *m.entry(format!("{obj:?}")).or_insert(0) += 1;
    }
    m
}

fn decode(name: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netflow-decode"))
        .arg(captures().join(format!("{name}.pcap")))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn every_capture_matches_the_reference() {
    for name in [
        "sf_v5",
        "sf_v5_noadjust",
        "sf_v9",
        "sf_v9_ip6",
        "pm_v9",
        "sf_ipfix",
        "sf_ipfix_sampled",
        "pm_ipfix",
    ] {
        let (stdout, stderr) = decode(name, &[]);
        let want =
            std::fs::read_to_string(captures().join(format!("{name}.expected.jsonl"))).unwrap();
        let (got, want) = (multiset(&stdout), multiset(&want));
        assert_eq!(
            got.values().sum::<usize>(),
            want.values().sum::<usize>(),
            "{name}: flow count"
        );
        assert!(got == want, "{name}: flows differ from the reference");
        assert!(
            stderr.contains("template misses 0, sets lost 0, errors 0"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn output_format_and_port_filter() {
    let (stdout, _) = decode("sf_v9", &["--port", "20509"]);
    let first = stdout.lines().next().unwrap();
    let keys: Vec<String> = first
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"').to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "exporter",
            "version",
            "source_id",
            "sequence",
            "template_id",
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
            "tcp_flags"
        ]
    );
    let (v5, _) = decode("sf_v5", &[]);
    assert!(!v5.lines().next().unwrap().contains("template_id"));
    // Another port: nothing decoded.
    let (none, stderr) = decode("sf_v9", &["--port", "1"]);
    assert!(none.is_empty());
    assert!(stderr.contains("packets 0"), "{stderr}");
}

#[test]
fn bad_file_is_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_netflow-decode"))
        .arg("/nonexistent.pcap")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent.pcap"));
    let help = Command::new(env!("CARGO_BIN_EXE_netflow-decode"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8(help.stdout).unwrap().contains("--port"));
}

#[test]
fn sampling_rate_is_printed_apart_from_the_raw_counters() {
    let (stdout, stderr) = decode("sf_ipfix_sampled", &[]);
    assert!(
        stderr.contains("sampling: exporter 127.0.0.1 v10 domain 0: 1 in 10 (options data)"),
        "{stderr}"
    );
    // Counters stay as exported: the same lines as the reference (checked above), no rate key.
    assert!(!stdout.contains("sampling"));
    let (_, stderr) = decode("sf_v9", &[]);
    assert!(stderr.contains("1 in 1 (options data)"), "{stderr}");
}
