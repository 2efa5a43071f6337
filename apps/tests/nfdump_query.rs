//! `netflow-query` checked against nfdump: the same flows (the generator with fixed seeds, and
//! the real-exporter captures replayed) are sent both to `nfcapd` and to our all-in-one
//! collector; then each statistic, each filter form, combinations and a time window are asked
//! of `nfdump -R DIR ... -o csv` and of `netflow-query ... -o csv`, which must give the same
//! rows and numbers. On SQLite, on PostgreSQL and on ClickHouse.
//!
//! Deliberate differences, handled here and documented in the README:
//! * nfdump's time window `-t` keeps flows that started and ended inside it; ours keeps flows
//!   *received* inside it (the stored `ts`). The generator flows of the window check start and
//!   end when sent (`--max-flow-duration 0`), so both readings agree on them.
//! * ties: nfdump orders rows with equal numbers arbitrarily, we by key. A top-N is compared
//!   as: the same number of rows, the same sequence of the ordered numbers, and every row of
//!   ours in nfdump's full statistic (`-n 0`) with equal flows, packets and bytes.
//! * `-A srcip4/24` on IPv6 flows: nfdump masks IPv6 addresses too; we only with `srcip6/N`.
//!   The aggregation check filters `ipv4`.
//! * Protocols: nfdump names 58 `ICMP6`, we `IPv6-ICMP` (IANA); compared by number.
//! * ICMP type and code: nfcapd reads softflowd's v9 ICMP_TYPE field into the destination
//!   port (`8.0`); our decoder keeps the port fields only (0 there), so the raw listing of the
//!   captures leaves ICMP out. (pmacct puts them in the destination port itself: both agree.)

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{PgDb, Proc, TempDir, bin, captures, free_udp_port, wait_until};

fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: apt-get install -y --no-install-recommends nfdump (.ci/run installs it)")
        })
}

fn output(cmd: &mut Command, what: &str) -> (String, String) {
    let out = cmd
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{what}: {}\n{o}\n{e}", out.status);
    (o, e)
}

/// The captures replayed, each from an exporter address of its own (their template ids
/// collide). The sampled one is left out: we renormalize by the announced rate, nfcapd 1.7 does
/// not.
const CAPTURES: [&str; 7] = [
    "sf_v5.pcap",
    "sf_v5_noadjust.pcap",
    "sf_v9.pcap",
    "sf_v9_ip6.pcap",
    "sf_ipfix.pcap",
    "pm_v9.pcap",
    "pm_ipfix.pcap",
];

/// Both sides fed, collectors stopped.
struct Fed {
    _dir: TempDir,
    nf_dir: PathBuf,
    /// Environment of `netflow-query` for our store.
    env: Vec<(&'static str, String)>,
    /// `-t` of the window check: from between the two generator bursts to after the second.
    window_nfdump: String,
    window_iso: String,
}

fn nfdump_time(secs: u64) -> String {
    let out = Command::new("date")
        .env("TZ", "UTC")
        .args(["-d", &format!("@{secs}"), "+%Y/%m/%d.%H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn iso_time(secs: u64) -> String {
    let out = Command::new("date")
        .env("TZ", "UTC")
        .args(["-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn generate(port: u16, seed: u64, count: u64) {
    let (_, e) = output(
        Command::new(bin("netflow-generate")).args([
            "--target",
            &format!("127.0.0.1:{port}"),
            "--exporters",
            "127.0.0.1,127.0.0.2",
            "--count",
            &count.to_string(),
            "--rate",
            "20000",
            "--seed",
            &seed.to_string(),
            "--max-flow-duration",
            "0",
        ]),
        "netflow-generate",
    );
    assert!(e.contains(", 0 send errors"), "{e}");
}

fn replay(ports: [u16; 2]) {
    for (i, name) in CAPTURES.iter().enumerate() {
        let sock = UdpSocket::bind(format!("127.0.0.{}:0", 10 + i)).expect("bind replay socket");
        let mut n = 0u64;
        netflow_apps::capture::for_each_udp(&captures().join(name), |d| {
            if d.payload.len() < 4 {
                return;
            }
            for p in ports {
                sock.send_to(d.payload, ("127.0.0.1", p)).expect("send");
            }
            n += 1;
            if n.is_multiple_of(20) {
                thread::sleep(Duration::from_millis(2));
            }
        })
        .expect("read capture");
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// nfdump's totals: flows of the whole directory.
fn nfdump_flows(dir: &Path) -> u64 {
    let (o, _) = output(
        Command::new(tool("nfdump"))
            .arg("-R")
            .arg(dir)
            .args(["-s", "proto", "-o", "csv"]),
        "nfdump",
    );
    let last = o.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    last.split(',')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("nfdump summary")
}

fn feed(store_env: Vec<(&'static str, String)>) -> Fed {
    let dir = TempDir::new("nfquery");
    let nf_dir = dir.path().join("nfcapd");
    std::fs::create_dir_all(&nf_dir).expect("mkdir");
    let (nf_port, our_port) = (free_udp_port(), free_udp_port());
    let nf_log = std::fs::File::create(dir.path().join("nfcapd.log")).expect("log");
    let mut nfcapd: Child = Command::new(tool("nfcapd"))
        .arg("-w")
        .arg(&nf_dir)
        .args(["-p", &nf_port.to_string(), "-b", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(nf_log.try_clone().expect("log"))
        .stderr(nf_log)
        .spawn()
        .expect("start nfcapd");
    let mut env = store_env.clone();
    env.push(("NETFLOW_PORT", our_port.to_string()));
    let state = dir.path().display().to_string();
    let ours = Proc::start(
        "netflow",
        dir.path(),
        &env,
        &[
            "--listen",
            "127.0.0.1",
            "--table-interval",
            "3600",
            "--state-dir",
            &state,
        ],
    );
    ours.wait_for("listening for NetFlow", Duration::from_secs(20));
    wait_until("nfcapd to start", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.path().join("nfcapd.log")).is_ok_and(|l| l.contains("Startup"))
    });
    thread::sleep(Duration::from_millis(200));

    // burst A (seed 42) and the captures, then, after a whole second, burst B (seed 43)
    for p in [nf_port, our_port] {
        generate(p, 42, 3000);
    }
    replay([nf_port, our_port]);
    let t = now_secs();
    let mid = t.floor() as u64 + 1;
    thread::sleep(Duration::from_secs_f64(mid as f64 + 0.3 - t));
    for p in [nf_port, our_port] {
        generate(p, 43, 2000);
    }
    let end = now_secs().ceil() as u64 + 1;

    let _ = Command::new("kill")
        .args(["-TERM", &nfcapd.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while nfcapd.try_wait().expect("wait nfcapd").is_none() {
        assert!(Instant::now() < deadline, "nfcapd did not exit on SIGTERM");
        thread::sleep(Duration::from_millis(50));
    }
    let want = nfdump_flows(&nf_dir);
    assert!(want > 5000, "nfcapd stored only {want} flows");
    let mut qenv = store_env;
    qenv.push(("TZ", "UTC".into()));
    let fed = Fed {
        _dir: dir,
        nf_dir,
        env: qenv,
        window_nfdump: format!("{}-{}", nfdump_time(mid), nfdump_time(end)),
        window_iso: format!("{}-{}", iso_time(mid), iso_time(end)),
    };
    let mut got = 0;
    wait_until(
        "our store to hold nfcapd's flows",
        Duration::from_secs(30),
        || {
            got = fed.our_total();
            got >= want
        },
    );
    assert_eq!(got, want, "flows stored by us and by nfcapd");
    let status = ours.stop();
    assert!(status.success(), "netflow: {status}");
    fed
}

/// A statistic row: key (canonical text), flows, packets, bytes.
type Row = (String, u64, u64, u64);

fn canon(v: &str) -> String {
    let v = v.trim();
    if let Ok(a) = v.parse::<IpAddr>() {
        return a.to_string();
    }
    // nfdump writes ICMP "ports" as type.code
    if let Some((t, c)) = v.split_once('.')
        && let (Ok(t), Ok(c)) = (t.parse::<u16>(), c.parse::<u16>())
    {
        return (t * 256 + c).to_string();
    }
    if let Some(p) = netflow_apps::query::filter::protocol(v) {
        return p.to_string();
    }
    v.to_owned()
}

impl Fed {
    fn ours(&self, args: &[&str]) -> (String, String) {
        let mut cmd = Command::new(bin("netflow-query"));
        for k in [
            "DB_HOST",
            "DB_DATABASE",
            "DB_USERNAME",
            "DB_PASSWORD",
            "DB_FILE",
            "CLICKHOUSE_URL",
            "CLICKHOUSE_DATABASE",
            "CLICKHOUSE_USER",
            "CLICKHOUSE_PASSWORD",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["-o", "csv"])
            .args(args);
        output(&mut cmd, &format!("netflow-query {args:?}"))
    }

    fn our_total(&self) -> u64 {
        let (_, e) = self.ours(&["-s", "proto"]);
        e.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Our rows of a statistic or aggregation: the key columns joined by `,`.
    fn our_rows(&self, args: &[&str]) -> Vec<Row> {
        let (o, _) = self.ours(args);
        let mut lines = o.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        let n = header.len() - 3;
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                let key: Vec<String> = v[..n].iter().map(|x| canon(x)).collect();
                let num = |i: usize| v[n + i].parse::<u64>().expect("number");
                (key.join(","), num(0), num(1), num(2))
            })
            .collect()
    }

    fn nfdump(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(tool("nfdump"));
        cmd.arg("-R").arg(&self.nf_dir).args(args);
        output(&mut cmd, &format!("nfdump {args:?}")).0
    }

    /// nfdump's rows of an element statistic (`-o csv`: val, fl, pkt, byt columns).
    fn nfdump_stat(&self, stat: &str, n: &str, extra: &[&str]) -> Vec<Row> {
        let mut args = vec!["-s", stat, "-n", n, "-o", "csv"];
        args.extend(extra);
        let o = self.nfdump(&args);
        o.lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                let num = |i: usize| v[i].trim().parse::<u64>().expect("nfdump number");
                (canon(v[4]), num(5), num(7), num(9))
            })
            .collect()
    }

    /// nfdump's rows in `fmt:` with `keys` key fields then %fl, %pkt, %byt.
    fn nfdump_fmt(&self, keys: usize, args: &[&str]) -> Vec<Row> {
        let mut a = vec!["-q", "-N", "-6"];
        a.extend(args);
        let o = self.nfdump(&a);
        o.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                let key: Vec<String> = v[..keys].iter().map(|x| canon(x)).collect();
                let num = |i: usize| v[keys + i].trim().parse::<u64>().expect("nfdump number");
                (key.join(","), num(0), num(1), num(2))
            })
            .collect()
    }
}

fn metric(r: &Row, order: &str) -> u64 {
    match order {
        "bytes" => r.3,
        "packets" => r.2,
        _ => r.1,
    }
}

/// Top-N agreement (see the module docs on ties).
fn same_top(what: &str, ours: &[Row], top: &[Row], all: &[Row], order: &str) {
    assert!(
        !top.is_empty(),
        "{what}: nfdump found nothing; the check would be empty"
    );
    assert_eq!(
        ours.len(),
        top.len(),
        "{what}: rows\nours {ours:?}\nnfdump {top:?}"
    );
    let m = |v: &[Row]| v.iter().map(|r| metric(r, order)).collect::<Vec<_>>();
    assert_eq!(
        m(ours),
        m(top),
        "{what}: ordered {order}\nours {ours:?}\nnfdump {top:?}"
    );
    let all: BTreeMap<&str, &Row> = all.iter().map(|r| (r.0.as_str(), r)).collect();
    for r in ours {
        assert_eq!(
            all.get(r.0.as_str()),
            Some(&r),
            "{what}: our row {r:?} in nfdump's"
        );
    }
}

fn same_set(what: &str, mut ours: Vec<Row>, mut theirs: Vec<Row>) {
    assert!(
        !theirs.is_empty(),
        "{what}: nfdump found nothing; the check would be empty"
    );
    ours.sort();
    theirs.sort();
    let only_ours: Vec<&Row> = ours
        .iter()
        .filter(|r| !theirs.contains(r))
        .take(10)
        .collect();
    let only_theirs: Vec<&Row> = theirs
        .iter()
        .filter(|r| !ours.contains(r))
        .take(10)
        .collect();
    assert!(
        ours == theirs,
        "{what}: {} rows ours, {} nfdump's; only ours: {only_ours:?}; only nfdump's: {only_theirs:?}",
        ours.len(),
        theirs.len()
    );
}

fn compare(fed: &Fed) {
    // (statistic, order, top N, nfdump filter, our filter)
    let stats: [(&str, &str, &str, &str, &str); 12] = [
        ("srcip", "bytes", "10", "", ""),
        ("dstip", "packets", "10", "proto tcp", "proto tcp"),
        ("ip", "flows", "10", "net 192.0.2.0/26", "net 192.0.2.0/26"),
        ("srcport", "flows", "5", "dst port 443", "dst port 443"),
        ("dstport", "bytes", "10", "not proto icmp", "not proto icmp"),
        (
            "port",
            "flows",
            "10",
            "port > 1023 and proto udp",
            "port > 1023 and proto udp",
        ),
        ("proto", "flows", "0", "", ""),
        (
            "inif",
            "bytes",
            "0",
            "in if 2 or out if 3",
            "in if 2 or out if 3",
        ),
        (
            "outif",
            "packets",
            "0",
            "src net 10.0.0.0/25",
            "src net 10.0.0.0/25",
        ),
        ("router", "flows", "0", "bytes > 1M", "bytes > 1M"),
        (
            "srcip",
            "bytes",
            "10",
            "router ip 127.0.0.2 and packets < 100 and not flags A",
            "exporter 127.0.0.2 and packets < 100 and not flags A",
        ),
        (
            "dstip",
            "flows",
            "10",
            "ipv6 or ip in [192.0.2.1 192.0.2.7]",
            "ipv6 or ip in [192.0.2.1 192.0.2.7]",
        ),
    ];
    for (stat, order, n, nf_filter, our_filter) in stats {
        let so = format!("{stat}/{order}");
        let nf = |n| {
            let mut e = vec![];
            if !nf_filter.is_empty() {
                e.push(nf_filter);
            }
            fed.nfdump_stat(&so, n, &e)
        };
        let our_stat = if stat == "router" {
            format!("exporter/{order}")
        } else {
            so.clone()
        };
        let mut args = vec!["-s", our_stat.as_str(), "-n", n];
        if !our_filter.is_empty() {
            args.push(our_filter);
        }
        let what = format!("-s {so} -n {n} '{our_filter}'");
        same_top(&what, &fed.our_rows(&args), &nf(n), &nf("0"), order);
        eprintln!("agree: {what}");
    }

    // the time window: only burst B (received and, with no duration, started and ended in it)
    let so = "dstip/bytes";
    let nf_top = fed.nfdump_stat(so, "10", &["-t", &fed.window_nfdump]);
    let nf_all = fed.nfdump_stat(so, "0", &["-t", &fed.window_nfdump]);
    let ours = fed.our_rows(&["-s", so, "-n", "10", "-t", &fed.window_iso]);
    same_top(
        &format!("-t {} -s {so}", fed.window_iso),
        &ours,
        &nf_top,
        &nf_all,
        "bytes",
    );
    let ours_nf_form = fed.our_rows(&["-s", so, "-n", "10", "-t", &fed.window_nfdump]);
    assert_eq!(ours, ours_nf_form, "-t in nfdump's and in ISO form");
    let total: u64 = nf_all.iter().map(|r| r.1).sum();
    assert_eq!(total, 2000, "burst B alone is in the window");
    eprintln!("agree: -t {} -s {so}", fed.window_nfdump);

    // record: one row per conversation
    for (order, nf_filter, our_filter) in [
        ("bytes", "", ""),
        (
            "flows",
            "proto udp and dst port 53",
            "proto udp and dst port 53",
        ),
    ] {
        let so = format!("record/{order}");
        let fmt = "fmt:%sa,%da,%sp,%dp,%pr,%fl,%pkt,%byt";
        let run = |n: &str| {
            let mut a = vec!["-s", so.as_str(), "-n", n, "-o", fmt];
            if !nf_filter.is_empty() {
                a.push(nf_filter);
            }
            fed.nfdump_fmt(5, &a)
        };
        let mut args = vec!["-s", so.as_str(), "-n", "20"];
        if !our_filter.is_empty() {
            args.push(our_filter);
        }
        let what = format!("-s {so} -n 20 '{our_filter}'");
        same_top(&what, &fed.our_rows(&args), &run("20"), &run("0"), order);
        eprintln!("agree: {what}");
    }

    // -A aggregation with a prefix
    same_set(
        "-A srcip4/24,proto ipv4",
        fed.our_rows(&["-A", "srcip4/24,proto", "ipv4"]),
        fed.nfdump_fmt(
            2,
            &[
                "-A",
                "srcip4/24,proto",
                "-o",
                "fmt:%sa,%pr,%fl,%pkt,%byt",
                "ipv4",
            ],
        ),
    );
    eprintln!("agree: -A srcip4/24,proto ipv4");

    // the flows themselves, selective filter (also on the captures' exporters)
    for (nf_filter, our_filter) in [
        (
            "src ip 10.0.0.1 and dst port 443",
            "src ip 10.0.0.1 and dst port 443",
        ),
        (
            "(router ip 127.0.0.12 or router ip 127.0.0.16) and not proto icmp",
            "(exporter 127.0.0.12 or exporter 127.0.0.16) and not proto icmp",
        ),
    ] {
        let (o, _) = fed.ours(&[our_filter]);
        let ours: Vec<Row> = o
            .lines()
            .skip(1)
            .map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                // ts,exporter,src_addr,dst_addr,src_port,dst_port,protocol,bytes,packets,...
                let key = [v[2], v[3], v[4], v[5], v[6], v[1]].map(canon).join(",");
                (
                    key,
                    1,
                    v[8].parse().expect("packets"),
                    v[7].parse().expect("bytes"),
                )
            })
            .collect();
        let theirs = fed.nfdump_fmt(
            6,
            &["-o", "fmt:%sa,%da,%sp,%dp,%pr,%ra,%fl,%pkt,%byt", nf_filter],
        );
        same_set(&format!("flows of '{our_filter}'"), ours, theirs);
        eprintln!("agree: flows of '{our_filter}'");
    }
}

#[test]
fn nfdump_and_netflow_query_agree_on_sqlite() {
    let db = TempDir::new("nfquery-db");
    let file = db.path().join("flows.db").display().to_string();
    let fed = feed(vec![("DB_FILE", file)]);
    compare(&fed);
}

#[test]
fn nfdump_and_netflow_query_agree_on_postgresql() {
    let db = PgDb::new("nfquery");
    let fed = feed(db.env());
    compare(&fed);
}

#[test]
fn nfdump_and_netflow_query_agree_on_clickhouse() {
    let server = netflow_store::test_support::clickhouse::ClickHouseServer::shared();
    let db = netflow_store::test_support::clickhouse::TestDatabase::new(&server, "nfquery");
    let fed = feed(vec![
        ("CLICKHOUSE_URL", server.url()),
        ("CLICKHOUSE_DATABASE", db.name.clone()),
    ]);
    compare(&fed);
}
