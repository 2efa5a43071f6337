//! The filter expression of `netflow-query`: a subset of nfdump's filter grammar, parsed with
//! nom into the store's [`Expr`], case-insensitive. An error names the line and column, what
//! was expected and the token found: `filter:1:10: expected a port number after 'dst port',
//! found 'https'`.
//!
//! ```text
//! expr  := term ("or" term)*
//! term  := unary ("and" unary)*
//! unary := "not" unary | "(" expr ")" | test
//! test  := [src|dst] (ip|host) (ADDR | in [ADDR ...])     [src|dst] net CIDR
//!        | [src|dst] port ([CMP] N | in [N ...])          proto (tcp|udp|icmp|NAME|N)
//!        | [in|out] if [CMP] N                            exporter ADDR|CIDR  (router ip ADDR)
//!        | flags FLAGS                                    (bytes|packets) [CMP] N[k|M|G]
//!        | ipv4 | inet | ipv6 | inet6 | any
//! CMP   := = == != < <= > >= eq ne lt le gt ge            FLAGS: letters of FSRPAUEC (X all)
//! ```

use std::net::IpAddr;

use grafolean_client::protocol_keyword;
use netflow_store::query::{Cmp, Counter, Expr, Family, IfSide, Net, Pred, Side};
use nom::IResult;
use nom::bytes::complete::take_while1;
use nom::character::complete::multispace0;

/// A filter that does not parse: where, what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter:{line}:{column}: expected {expected}{}, found {found}", after.as_ref().map(|a| format!(" after '{a}'")).unwrap_or_default())]
pub struct FilterError {
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based, in characters).
    pub column: usize,
    /// What the grammar wanted there.
    pub expected: String,
    /// The words before it that asked for it (`dst port`), if any.
    pub after: Option<String>,
    /// The token found, quoted, or `end of filter`.
    pub found: String,
}

/// The internal nom error: the rest of the input where it happened, and the expectation.
#[derive(Debug)]
struct PErr<'a> {
    at: &'a str,
    expected: String,
    after: Option<String>,
}

impl<'a> nom::error::ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _kind: nom::error::ErrorKind) -> Self {
        PErr {
            at: input,
            expected: "a filter term".to_owned(),
            after: None,
        }
    }
    fn append(_input: &'a str, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

/// Longest list accepted in `in [...]`.
const MAX_LIST: usize = netflow_store::query::MAX_LIST;
/// Deepest nesting of parentheses and `not`.
const MAX_DEPTH: usize = 64;

fn fail<'a, T>(at: &'a str, expected: &str, after: Option<&str>) -> Res<'a, T> {
    Err(nom::Err::Failure(PErr {
        at,
        expected: expected.to_owned(),
        after: after.map(str::to_owned),
    }))
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-')
}

/// The next word (letters, digits, `.:/_-`) after optional blanks; `at` is where it starts.
fn word(i: &str) -> Res<'_, (&str, &str)> {
    let (i, _) = multispace0(i)?;
    let at = i;
    let (i, w) = take_while1(is_word_char)(i)?;
    Ok((i, (at, w)))
}

/// Consumes the keyword `k` (any case) if it comes next.
fn keyword<'a>(i: &'a str, k: &str) -> Option<&'a str> {
    match word(i) {
        Ok((rest, (_, w))) if w.eq_ignore_ascii_case(k) => Some(rest),
        _ => None,
    }
}

/// Consumes the punctuation `p` (after optional blanks) if it comes next.
fn punct<'a>(i: &'a str, p: &str) -> Option<&'a str> {
    let t = i.trim_start();
    t.strip_prefix(p)
}

fn skip_ws(i: &str) -> &str {
    i.trim_start()
}

/// Parses a whole filter.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    let r = expr(text, 0).and_then(|(rest, e)| {
        let rest = skip_ws(rest);
        if rest.is_empty() {
            Ok(e)
        } else {
            Err(nom::Err::Failure(PErr {
                at: rest,
                expected: "'and', 'or' or the end of the filter".to_owned(),
                after: None,
            }))
        }
    });
    r.map_err(|e| match e {
        nom::Err::Error(p) | nom::Err::Failure(p) => to_error(text, p),
        nom::Err::Incomplete(_) => to_error(
            text,
            PErr {
                at: "",
                expected: "more".to_owned(),
                after: None,
            },
        ),
    })
}

fn to_error(text: &str, p: PErr<'_>) -> FilterError {
    let at = skip_ws(p.at);
    let offset = text.len().saturating_sub(at.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let found = if at.is_empty() {
        "end of filter".to_owned()
    } else {
        let tok: String = match at.chars().next() {
            Some(c) if is_word_char(c) => at.chars().take_while(|&c| is_word_char(c)).collect(),
            Some(c) => c.to_string(),
            None => String::new(),
        };
        format!("'{}'", tok.chars().take(40).collect::<String>())
    };
    FilterError {
        line,
        column,
        expected: p.expected,
        after: p.after,
        found,
    }
}

fn expr(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, mut left) = term(i, depth)?;
    while let Some(rest) = keyword(i, "or") {
        let (rest, right) = term(rest, depth)?;
        left = Expr::Or(Box::new(left), Box::new(right));
        i = rest;
    }
    Ok((i, left))
}

fn term(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, mut left) = unary(i, depth)?;
    while let Some(rest) = keyword(i, "and") {
        let (rest, right) = unary(rest, depth)?;
        left = Expr::And(Box::new(left), Box::new(right));
        i = rest;
    }
    Ok((i, left))
}

fn unary(i: &str, depth: usize) -> Res<'_, Expr> {
    if depth >= MAX_DEPTH {
        return fail(i, "fewer nested parentheses or 'not's", None);
    }
    if let Some(rest) = keyword(i, "not") {
        let (rest, e) = unary(rest, depth + 1)?;
        return Ok((rest, Expr::Not(Box::new(e))));
    }
    if let Some(rest) = punct(i, "(") {
        let (rest, e) = expr(rest, depth + 1)?;
        let Some(rest) = punct(rest, ")") else {
            return fail(rest, "')'", None);
        };
        return Ok((rest, e));
    }
    test(i)
}

/// `Expr::Pred` or the tautology `any` (as `not` of nothing: bytes >= 0).
fn test(i: &str) -> Res<'_, Expr> {
    let Ok((rest, (at, w))) = word(i) else {
        return fail(i, "a filter term", None);
    };
    let lw = w.to_ascii_lowercase();
    let pred = |rest, p| Ok((rest, Expr::Pred(p)));
    match lw.as_str() {
        "src" | "dst" => {
            let side = if lw == "src" { Side::Src } else { Side::Dst };
            let Ok((rest2, (_, w2))) = word(rest) else {
                return fail(rest, "'ip', 'net' or 'port'", Some(&lw));
            };
            let l2 = w2.to_ascii_lowercase();
            let after = format!("{lw} {l2}");
            match l2.as_str() {
                "ip" | "host" => addr_test(rest2, side, &after),
                "net" => net_test(rest2, side, &after),
                "port" => port_test(rest2, side, &after),
                _ => fail(rest, "'ip', 'net' or 'port'", Some(&lw)),
            }
        }
        "ip" | "host" => addr_test(rest, Side::Either, &lw),
        "net" => net_test(rest, Side::Either, &lw),
        "port" => port_test(rest, Side::Either, &lw),
        "proto" => {
            let Ok((rest2, (_, v))) = word(rest) else {
                return fail(rest, "a protocol name or number", Some("proto"));
            };
            match protocol(v) {
                Some(n) => pred(rest2, Pred::Protocol(n)),
                None => fail(rest, "a protocol name or number", Some("proto")),
            }
        }
        "in" | "out" => {
            let side = if lw == "in" { IfSide::In } else { IfSide::Out };
            let Some(rest2) = keyword(rest, "if") else {
                return fail(rest, "'if'", Some(&lw));
            };
            if_test(rest2, side, &format!("{lw} if"))
        }
        "if" => if_test(rest, IfSide::Either, "if"),
        "exporter" => exporter(rest, "exporter"),
        "router" => {
            let Some(rest2) = keyword(rest, "ip") else {
                return fail(rest, "'ip'", Some("router"));
            };
            exporter(rest2, "router ip")
        }
        "flags" => {
            let Ok((rest2, (_, v))) = word(rest) else {
                return fail(rest, "TCP flags (letters of FSRPAUEC)", Some("flags"));
            };
            match flags(v) {
                Some(m) => pred(rest2, Pred::Flags(m)),
                None => fail(rest, "TCP flags (letters of FSRPAUEC)", Some("flags")),
            }
        }
        "bytes" | "packets" => {
            let counter = if lw == "bytes" {
                Counter::Bytes
            } else {
                Counter::Packets
            };
            let (rest, cmp) = comparison(rest);
            let Ok((rest2, (_, v))) = word(rest) else {
                return fail(rest, "a number (k, M, G: thousands)", Some(&lw));
            };
            match scaled(v) {
                Some(value) => pred(
                    rest2,
                    Pred::Counter {
                        counter,
                        cmp,
                        value,
                    },
                ),
                None => fail(rest, "a number (k, M, G: thousands)", Some(&lw)),
            }
        }
        "ipv4" | "inet" => pred(rest, Pred::Family(Family::V4)),
        "ipv6" | "inet6" => pred(rest, Pred::Family(Family::V6)),
        "any" => pred(
            rest,
            Pred::Counter {
                counter: Counter::Bytes,
                cmp: Cmp::Ge,
                value: 0,
            },
        ),
        _ => fail(
            at,
            "a filter term (ip, net, port, proto, if, exporter, flags, bytes, packets, ipv4, ipv6, not, '(')",
            None,
        ),
    }
}

/// `in [A B ...]` or a single value, each parsed by `one`.
fn list_or_one<'a, T>(
    i: &'a str,
    after: &str,
    what: &str,
    one: impl Fn(&str) -> Option<T>,
) -> Res<'a, Vec<T>> {
    if let Some(rest) = keyword(i, "in") {
        let after_in = format!("{after} in");
        let Some(mut rest) = punct(rest, "[") else {
            return fail(rest, "'['", Some(&after_in));
        };
        let mut v = Vec::new();
        loop {
            if let Some(r) = punct(rest, "]") {
                if v.is_empty() {
                    return fail(rest, what, Some(&after_in));
                }
                return Ok((r, v));
            }
            if let Some(r) = punct(rest, ",") {
                rest = r;
                continue;
            }
            let Ok((r, (_, w))) = word(rest) else {
                return fail(rest, &format!("{what} or ']'"), Some(&after_in));
            };
            let Some(x) = one(w) else {
                return fail(rest, &format!("{what} or ']'"), Some(&after_in));
            };
            if v.len() >= MAX_LIST {
                return fail(rest, &format!("at most {MAX_LIST} values"), Some(&after_in));
            }
            v.push(x);
            rest = r;
        }
    }
    let Ok((rest, (_, w))) = word(i) else {
        return fail(i, what, Some(after));
    };
    match one(w) {
        Some(x) => Ok((rest, vec![x])),
        None => fail(i, what, Some(after)),
    }
}

fn addr_test<'a>(i: &'a str, side: Side, after: &str) -> Res<'a, Expr> {
    let (rest, nets) = list_or_one(i, after, "an IP address", |w| {
        cidr(w).or_else(|| w.parse::<IpAddr>().ok().map(Net::host))
    })?;
    Ok((rest, Expr::Pred(Pred::Addr { side, nets })))
}

fn net_test<'a>(i: &'a str, side: Side, after: &str) -> Res<'a, Expr> {
    let Ok((rest, (_, w))) = word(i) else {
        return fail(i, "a prefix like 10.0.0.0/8", Some(after));
    };
    match cidr(w) {
        Some(n) => Ok((
            rest,
            Expr::Pred(Pred::Addr {
                side,
                nets: vec![n],
            }),
        )),
        None => fail(i, "a prefix like 10.0.0.0/8", Some(after)),
    }
}

fn port_test<'a>(i: &'a str, side: Side, after: &str) -> Res<'a, Expr> {
    if keyword(i, "in").is_some() {
        let (rest, ports) = list_or_one(i, after, "a port number", |w| w.parse::<u16>().ok())?;
        return Ok((rest, Expr::Pred(Pred::PortIn { side, ports })));
    }
    let (rest, cmp) = comparison(i);
    let Ok((rest2, (_, w))) = word(rest) else {
        return fail(rest, "a port number", Some(after));
    };
    match w.parse::<u16>() {
        Ok(port) => Ok((rest2, Expr::Pred(Pred::Port { side, cmp, port }))),
        Err(_) => fail(rest, "a port number", Some(after)),
    }
}

fn if_test<'a>(i: &'a str, side: IfSide, after: &str) -> Res<'a, Expr> {
    let (rest, cmp) = comparison(i);
    let Ok((rest2, (_, w))) = word(rest) else {
        return fail(rest, "an interface index", Some(after));
    };
    match w.parse::<u32>() {
        Ok(index) => Ok((rest2, Expr::Pred(Pred::Interface { side, cmp, index }))),
        Err(_) => fail(rest, "an interface index", Some(after)),
    }
}

fn exporter<'a>(i: &'a str, after: &str) -> Res<'a, Expr> {
    let Ok((rest, (_, w))) = word(i) else {
        return fail(i, "an IP address", Some(after));
    };
    match cidr(w).or_else(|| w.parse::<IpAddr>().ok().map(Net::host)) {
        Some(n) => Ok((rest, Expr::Pred(Pred::Exporter(n)))),
        None => fail(i, "an IP address", Some(after)),
    }
}

/// An optional comparison operator (default `=`).
fn comparison(i: &str) -> (&str, Cmp) {
    let t = skip_ws(i);
    for (op, c) in [
        ("==", Cmp::Eq),
        ("!=", Cmp::Ne),
        ("<=", Cmp::Le),
        (">=", Cmp::Ge),
        ("=", Cmp::Eq),
        ("<", Cmp::Lt),
        (">", Cmp::Gt),
    ] {
        if let Some(r) = t.strip_prefix(op) {
            return (r, c);
        }
    }
    for (k, c) in [
        ("eq", Cmp::Eq),
        ("ne", Cmp::Ne),
        ("lt", Cmp::Lt),
        ("le", Cmp::Le),
        ("gt", Cmp::Gt),
        ("ge", Cmp::Ge),
    ] {
        if let Some(r) = keyword(i, k) {
            return (r, c);
        }
    }
    (i, Cmp::Eq)
}

/// `ADDR/LEN`.
fn cidr(w: &str) -> Option<Net> {
    let (a, l) = w.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    (len <= if addr.is_ipv4() { 32 } else { 128 }).then_some(Net { addr, len })
}

/// A protocol number or IANA keyword (`tcp`, `udp`, `icmp`, `ipv6-icmp`, `gre`, ...).
pub fn protocol(w: &str) -> Option<u8> {
    if let Ok(n) = w.parse::<u8>() {
        return Some(n);
    }
    if w.eq_ignore_ascii_case("icmp6") {
        return Some(58);
    }
    (0..=255u8).find(|&n| protocol_keyword(n).is_some_and(|k| k.eq_ignore_ascii_case(w)))
}

/// TCP flag letters to their bit mask: F 1, S 2, R 4, P 8, A 16, U 32, E 64, C 128, X all.
fn flags(w: &str) -> Option<u8> {
    let mut m = 0u8;
    for c in w.chars() {
        m |= match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            'X' => 0xff,
            _ => return None,
        };
    }
    (m != 0).then_some(m)
}

/// `N`, `Nk`, `NM`, `NG` (powers of 1000, as nfdump).
fn scaled(w: &str) -> Option<u64> {
    let (digits, mul) = match w.chars().last()? {
        'k' | 'K' => (&w[..w.len() - 1], 1_000),
        'm' | 'M' => (&w[..w.len() - 1], 1_000_000),
        'g' | 'G' => (&w[..w.len() - 1], 1_000_000_000),
        _ => (w, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse(s).expect_err(s).to_string()
    }

    #[test]
    fn test_error_names_column_token_and_expectation() {
        assert_eq!(
            err("proto tcp and dst port https"),
            "filter:1:24: expected a port number after 'dst port', found 'https'"
        );
        assert_eq!(
            err("src ip 10.0.0.300"),
            "filter:1:8: expected an IP address after 'src ip', found '10.0.0.300'"
        );
        assert_eq!(
            err("port 80 443"),
            "filter:1:9: expected 'and', 'or' or the end of the filter, found '443'"
        );
        assert!(
            err("(port 80").contains("expected ')'"),
            "{}",
            err("(port 80")
        );
        assert!(err("proto").contains("found end of filter"));
        assert!(err("net 10.0.0.0/33").contains("filter:1:5: expected a prefix"));
        assert!(err("ip in [10.0.0.1 x]").contains("found 'x'"));
        assert!(err("ip in []").contains("expected an IP address"));
        assert!(err("frobnicate").starts_with("filter:1:1: expected a filter term"));
        assert!(err("port 80 and\n  bogus").starts_with("filter:2:3:"));
        let deep = "(".repeat(100) + "port 1" + &")".repeat(100);
        assert!(err(&deep).contains("nested"));
    }

    #[test]
    fn test_grammar_forms() {
        let ok = |s: &str| parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let p = |e: Expr| match e {
            Expr::Pred(p) => p,
            other => panic!("not a predicate: {other:?}"),
        };
        assert_eq!(
            p(ok("DST PORT > 1023")),
            Pred::Port {
                side: Side::Dst,
                cmp: Cmp::Gt,
                port: 1023
            }
        );
        assert_eq!(p(ok("proto TCP")), Pred::Protocol(6));
        assert_eq!(p(ok("proto icmp")), Pred::Protocol(1));
        assert_eq!(p(ok("proto 47")), Pred::Protocol(47));
        assert_eq!(p(ok("flags SA")), Pred::Flags(0x12));
        assert_eq!(
            p(ok("bytes >= 1M")),
            Pred::Counter {
                counter: Counter::Bytes,
                cmp: Cmp::Ge,
                value: 1_000_000
            }
        );
        assert_eq!(
            p(ok("ip in [10.0.0.1, 2001:db8::/32]")),
            Pred::Addr {
                side: Side::Either,
                nets: vec![
                    Net::host("10.0.0.1".parse().unwrap()),
                    Net {
                        addr: "2001:db8::".parse().unwrap(),
                        len: 32
                    }
                ]
            }
        );
        assert_eq!(
            p(ok("port in [ 80 443 ]")),
            Pred::PortIn {
                side: Side::Either,
                ports: vec![80, 443]
            }
        );
        assert_eq!(
            p(ok("in if 3")),
            Pred::Interface {
                side: IfSide::In,
                cmp: Cmp::Eq,
                index: 3
            }
        );
        assert_eq!(
            p(ok("router ip 192.0.2.1")),
            Pred::Exporter(Net::host("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(p(ok("ipv6")), Pred::Family(Family::V6));
        // precedence: not > and > or
        let e = ok("not flags A and port 1 or ipv4");
        let Expr::Or(l, _) = e else {
            panic!("or on top")
        };
        let Expr::And(n, _) = *l else {
            panic!("and below")
        };
        assert!(matches!(*n, Expr::Not(_)));
        ok("(src net 10.0.0.0/8 or dst ip 2001:db8::1) and not (proto udp and port 53)");
    }

    #[test]
    fn test_injection_attempts_are_filter_errors() {
        // every value position, with SQL in it
        for s in [
            "src ip 10.0.0.1'; DROP TABLE netflow_flows; --",
            "src ip '10.0.0.1' OR 1=1",
            "net 10.0.0.0/8 OR 1=1",
            "dst port 443; DELETE FROM netflow_flows",
            "port in [80, 443) OR (1=1]",
            "proto tcp' OR '1'='1",
            "in if 1 OR 1=1",
            "exporter 127.0.0.1\" OR \"\"=\"",
            "flags S' --",
            "bytes > 1k); DROP TABLE x; --",
            "packets > 1 UNION SELECT 1",
            "ip in [10.0.0.1 ; DROP TABLE x]",
        ] {
            assert!(parse(s).is_err(), "{s} parsed");
        }
    }
}
