//! Value paths the backend accepts, and the original bot's segment encoding.
//!
//! The backend validates each path only after it has inserted the path row, and one bad
//! path fails the whole batch (`grafolean-api.md` §3.8). So a [`ValuePath`] can only be
//! built from a valid path: every path this crate sends was checked here first.
//!
//! # The rules (from the real backend)
//!
//! * Segments are separated by `.` and are never empty.
//! * A segment is built from `[A-Za-z0-9_-]` and the literal lowercase sequences `%2e` and
//!   `%3a`; the backend stores them as they are (`%` included), and Grafolean's NetFlow
//!   dashboards display `%2e` as `.`.
//! * A path must not start with `system.` (reserved for the backend's own statistics).
//! * A path is at most [`MAX_PATH_LEN`] bytes. The backend has no explicit limit, but fails
//!   with 500 near 2,700 bytes (a PostgreSQL index row limit); the longest path the NetFlow
//!   bot builds is under 200 bytes.
//!
//! # Segment encoding ([`Segment::encode`])
//!
//! Compatible with the original bot's `path_part_encode` for everything it encoded
//! correctly, and deterministic for what it sent broken:
//!
//! | input | output | example |
//! |---|---|---|
//! | `A-Z a-z 0-9 _ -` | unchanged | `TCP` |
//! | `.` | `%2e` | `10.0.0.1` → `10%2e0%2e0%2e1`, `AX.25` → `AX%2e25` |
//! | `:` | `%3a` | `2001:db8::1` → `2001%3adb8%3a%3a1` |
//! | space, `/` | `_` | `Mobility Header` → `Mobility_Header`, `TTP/IPTM` → `TTP_IPTM` |
//! | `+` | `plus` | `TP++` → `TPplusplus` |
//! | any other character | `_x` + two lowercase hex digits per UTF-8 byte | `%` → `_x25`, `č` → `_xc4_x8d` |
//! | empty string | `_` | |
//!
//! The mapping is readable, not reversible: it is meant for names shown on a dashboard.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Longest path (in bytes) that [`ValuePath`] accepts.
pub const MAX_PATH_LEN: usize = 1000;

/// Why a path or segment is not accepted. Offsets are byte offsets into the checked text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path or segment is empty.
    #[error("empty path")]
    Empty,
    /// Two dots in a row, or a dot at the start or the end.
    #[error("empty segment at byte {at}")]
    EmptySegment {
        /// Byte offset of the empty segment.
        at: usize,
    },
    /// A byte outside `[A-Za-z0-9_-]` (and not a `.` between segments).
    #[error("byte 0x{byte:02x} at byte {at} is not allowed")]
    InvalidByte {
        /// Byte offset.
        at: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A `%` that does not start the lowercase sequence `%2e` or `%3a`.
    #[error("'%' at byte {at} is not the start of %2e or %3a")]
    BadEscape {
        /// Byte offset of the `%`.
        at: usize,
    },
    /// The path starts with `system.`, which the backend reserves.
    #[error("paths must not start with 'system.'")]
    ReservedPrefix,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Length of the path.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks one segment; `base` is its offset in the whole path, for error positions.
fn check_segment(seg: &[u8], base: usize) -> Result<(), PathError> {
    if seg.is_empty() {
        return Err(PathError::EmptySegment { at: base });
    }
    let mut i = 0;
    while let Some(&b) = seg.get(i) {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => i += 1,
            b'%' => match seg.get(i + 1..i + 3) {
                Some(b"2e") | Some(b"3a") => i += 3,
                _ => return Err(PathError::BadEscape { at: base + i }),
            },
            _ => {
                return Err(PathError::InvalidByte {
                    at: base + i,
                    byte: b,
                });
            }
        }
    }
    Ok(())
}

/// Checks a whole path against the backend's rules.
fn check_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    if path.starts_with("system.") {
        return Err(PathError::ReservedPrefix);
    }
    let mut base = 0;
    for seg in path.as_bytes().split(|&b| b == b'.') {
        check_segment(seg, base)?;
        base += seg.len() + 1;
    }
    Ok(())
}

/// One valid path segment (no `.` inside, only accepted characters).
///
/// Build one from any text with [`Segment::encode`] (never fails), from an address with
/// [`Segment::ip`], from a number with `From`, or check an already encoded one with
/// [`Segment::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment(String);

impl Segment {
    /// Accepts `s` only if it already is a valid segment (e.g. `"topip"`, `"10%2e0%2e0%2e1"`).
    pub fn new(s: &str) -> Result<Segment, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        check_segment(s.as_bytes(), 0)?;
        Ok(Segment(s.to_owned()))
    }

    /// Encodes any text into a valid segment.
    ///
    /// # Encoding
    ///
    /// Compatible with the original bot's `path_part_encode` for everything it encoded
    /// correctly, and deterministic for what it sent broken:
    ///
    /// | input | output | example |
    /// |---|---|---|
    /// | `A-Z a-z 0-9 _ -` | unchanged | `TCP` |
    /// | `.` | `%2e` | `10.0.0.1` → `10%2e0%2e0%2e1`, `AX.25` → `AX%2e25` |
    /// | `:` | `%3a` | `2001:db8::1` → `2001%3adb8%3a%3a1` |
    /// | space, `/` | `_` | `Mobility Header` → `Mobility_Header`, `TTP/IPTM` → `TTP_IPTM` |
    /// | `+` | `plus` | `TP++` → `TPplusplus` |
    /// | any other character | `_x` + two lowercase hex digits per UTF-8 byte | `%` → `_x25`, `č` → `_xc4_x8d` |
    /// | empty string | `_` | |
    ///
    /// The mapping is readable, not reversible: it is meant for names shown on a dashboard.
    pub fn encode(s: &str) -> Segment {
        if s.is_empty() {
            return Segment("_".to_owned());
        }
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => out.push(c),
                '.' => out.push_str("%2e"),
                ':' => out.push_str("%3a"),
                ' ' | '/' => out.push('_'),
                '+' => out.push_str("plus"),
                _ => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("_x{b:02x}"));
                    }
                }
            }
        }
        Segment(out)
    }

    /// An IP address as the original bot encoded it: `10%2e0%2e0%2e1`, `2001%3adb8%3a%3a1`
    /// (the standard compressed, lowercase text form).
    pub fn ip(addr: IpAddr) -> Segment {
        Segment::encode(&addr.to_string())
    }

    /// The segment text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Segment {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

macro_rules! segment_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Segment {
            /// Decimal digits, e.g. an interface index or a port.
            fn from(n: $t) -> Segment {
                Segment(n.to_string())
            }
        }
    )*};
}
segment_from_int!(u8, u16, u32, u64, i64);

impl From<IpAddr> for Segment {
    fn from(addr: IpAddr) -> Segment {
        Segment::ip(addr)
    }
}

/// A value path the backend accepts, e.g. `netflow.1min.ingress.entity.42.topip.10%2e0%2e0%2e1`.
///
/// Invariant: the text satisfies every rule below; there is no way to build a `ValuePath`
/// that breaks them.
///
/// # The rules (from the real backend)
///
/// * Segments are separated by `.` and are never empty.
/// * A segment is built from `[A-Za-z0-9_-]` and the literal lowercase sequences `%2e` and
///   `%3a`; the backend stores them as they are (`%` included), and Grafolean's NetFlow
///   dashboards display `%2e` as `.`.
/// * A path must not start with `system.` (reserved for the backend's own statistics).
/// * A path is at most [`MAX_PATH_LEN`] bytes. The backend has no explicit limit, but fails
///   with 500 near 2,700 bytes (a PostgreSQL index row limit); the longest path the NetFlow
///   bot builds is under 200 bytes.
///
///
/// # Example
///
/// ```
/// use grafolean_client::{Segment, ValuePath};
/// use std::net::{IpAddr, Ipv4Addr};
///
/// let p = ValuePath::new("netflow.1min.ingress.entity")?
///     .child(&Segment::from(1374713224u32))?
///     .child(&Segment::new("topip")?)?
///     .child(&Segment::ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))))?;
/// assert_eq!(p.as_str(), "netflow.1min.ingress.entity.1374713224.topip.10%2e0%2e0%2e1");
/// assert!(ValuePath::new("probe.a/b").is_err());
/// assert!(ValuePath::new("system.stats").is_err());
/// # Ok::<(), grafolean_client::PathError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ValuePath(String);

impl ValuePath {
    /// Checks `path` against the backend's rules.
    pub fn new(path: &str) -> Result<ValuePath, PathError> {
        check_path(path)?;
        Ok(ValuePath(path.to_owned()))
    }

    /// Builds a path from segments (at least one).
    pub fn from_segments<'s>(
        segments: impl IntoIterator<Item = &'s Segment>,
    ) -> Result<ValuePath, PathError> {
        let mut out = String::new();
        for s in segments {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s.as_str());
        }
        check_path(&out)?;
        Ok(ValuePath(out))
    }

    /// This path with one more segment. Fails only if the result is too long.
    pub fn child(&self, segment: &Segment) -> Result<ValuePath, PathError> {
        let mut p = self.clone();
        p.push(segment)?;
        Ok(p)
    }

    /// Appends a segment in place. Fails (leaving `self` unchanged) only if too long.
    pub fn push(&mut self, segment: &Segment) -> Result<(), PathError> {
        let len = self.0.len() + 1 + segment.0.len();
        if len > MAX_PATH_LEN {
            return Err(PathError::TooLong {
                len,
                max: MAX_PATH_LEN,
            });
        }
        self.0.push('.');
        self.0.push_str(&segment.0);
        Ok(())
    }

    /// The path text, as sent to and stored by the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ValuePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<ValuePath, PathError> {
        ValuePath::new(s)
    }
}

impl TryFrom<&str> for ValuePath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<ValuePath, PathError> {
        ValuePath::new(s)
    }
}

impl fmt::Display for ValuePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ValuePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks a path with the backend's rules without building a [`ValuePath`].
pub fn validate_path(path: &str) -> Result<(), PathError> {
    check_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn test_accepts_what_the_backend_accepts() {
        for p in [
            "netflow.1min.ingress",
            "netflow.1min.ingress.entity.1374713224.if.3.topip.10%2e0%2e0%2e1",
            "netflow.1min.egress.entity.1.topconn.10%2e0%2e0%2e1.2001%3adb8%3a%3a1",
            "probe.a-b_c.D9",
            "systemx.foo",
            "system",
        ] {
            assert_eq!(ValuePath::new(p).map(|v| v.to_string()), Ok(p.to_owned()));
        }
    }

    #[test]
    fn test_rejects_what_the_backend_rejects() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("", Empty),
            (".probe", EmptySegment { at: 0 }),
            ("probe.", EmptySegment { at: 6 }),
            ("probe..x", EmptySegment { at: 6 }),
            ("probe.%2E", BadEscape { at: 6 }),
            ("probe.%3A", BadEscape { at: 6 }),
            ("probe.a%20b", BadEscape { at: 7 }),
            ("probe.%", BadEscape { at: 6 }),
            ("probe.%2", BadEscape { at: 6 }),
            ("probe.2001:db8::1", InvalidByte { at: 10, byte: b':' }),
            ("probe.a/b", InvalidByte { at: 7, byte: b'/' }),
            ("probe.a b", InvalidByte { at: 7, byte: b' ' }),
            ("probe.a+b", InvalidByte { at: 7, byte: b'+' }),
            ("probe.#", InvalidByte { at: 6, byte: b'#' }),
            ("probe.*", InvalidByte { at: 6, byte: b'*' }),
            ("probe.\u{10d}", InvalidByte { at: 6, byte: 0xc4 }),
            (
                "probe.newline\n",
                InvalidByte {
                    at: 13,
                    byte: b'\n',
                },
            ),
            ("system.foo", ReservedPrefix),
        ];
        for (p, e) in cases {
            assert_eq!(ValuePath::new(p), Err(*e), "{p:?}");
        }
        let long = "a".repeat(MAX_PATH_LEN + 1);
        assert_eq!(
            ValuePath::new(&long),
            Err(TooLong {
                len: MAX_PATH_LEN + 1,
                max: MAX_PATH_LEN
            })
        );
        assert!(ValuePath::new(&"a".repeat(MAX_PATH_LEN)).is_ok());
    }

    #[test]
    fn test_segment_encoding_matches_original() {
        let v4 = Segment::ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(v4.as_str(), "10%2e0%2e0%2e1");
        let v6 = Segment::ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        assert_eq!(v6.as_str(), "2001%3adb8%3a%3a1");
        assert_eq!(Segment::encode("AX.25").as_str(), "AX%2e25");
        assert_eq!(Segment::encode("IPv6-ICMP").as_str(), "IPv6-ICMP");
        assert_eq!(Segment::from(443u16).as_str(), "443");
    }

    #[test]
    fn test_segment_encoding_of_bad_names() {
        for (name, seg) in [
            ("TP++", "TPplusplus"),
            ("TTP/IPTM", "TTP_IPTM"),
            ("A/N", "A_N"),
            ("IS-IS over IPv4", "IS-IS_over_IPv4"),
            ("Mobility Header", "Mobility_Header"),
            ("50%", "50_x25"),
            ("\u{10d}", "_xc4_x8d"),
            ("", "_"),
        ] {
            let s = Segment::encode(name);
            assert_eq!(s.as_str(), seg);
            assert_eq!(Segment::new(s.as_str()), Ok(s));
        }
    }

    #[test]
    fn test_segment_new_rejects_dots() {
        assert_eq!(
            Segment::new("a.b"),
            Err(PathError::InvalidByte { at: 1, byte: b'.' })
        );
        assert_eq!(Segment::new(""), Err(PathError::Empty));
    }

    #[test]
    fn test_push_is_length_checked() {
        let mut p = ValuePath::new(&"a".repeat(MAX_PATH_LEN - 2)).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.push(&Segment::from(1u8)).is_ok());
        assert!(matches!(
            p.push(&Segment::from(1u8)),
            Err(PathError::TooLong { .. })
        ));
        assert_eq!(p.as_str().len(), MAX_PATH_LEN);
    }
}
