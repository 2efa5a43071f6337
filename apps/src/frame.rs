//! The frames the collector writes to the named pipe and the writer reads: one received
//! datagram each, with the exporter's address and the receive time.
//!
//! # Format, version 1 (all integers big-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `NFpF` |
//! | 4 | format version, 1 |
//! | 5 | flags: bit 0 set when the address is IPv6 (else the first 4 address bytes are IPv4) |
//! | 6..8 | exporter UDP port |
//! | 8..16 | receive time, microseconds since the Unix epoch (signed) |
//! | 16..32 | exporter address |
//! | 32..36 | payload length, at most 65,535 |
//! | 36..40 | CRC-32 (IEEE) of bytes 4..36 and the payload |
//! | 40.. | the datagram |
//!
//! A collector killed in the middle of a frame leaves a cut frame in the pipe; the reader finds
//! the next magic, checks the CRC, and counts the bytes it skipped ([`ReaderStats`]), so a
//! damaged frame is never decoded as NetFlow. A frame of an unknown version is skipped the same
//! way (counted), so an older writer survives a newer collector.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"NFpF";
/// The version this module writes.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 40;
/// Largest payload a frame carries (a UDP datagram).
pub const MAX_PAYLOAD: usize = 65_535;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const FLAGS: usize = 5;
    pub const PORT: Range<usize> = 6..8;
    pub const TS: Range<usize> = 8..16;
    pub const ADDR: Range<usize> = 16..32;
    pub const LEN: Range<usize> = 32..36;
    pub const CRC: Range<usize> = 36..40;
    pub const CHECKED: Range<usize> = 4..36;
}

/// One received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The exporter (UDP source; IPv4-mapped IPv6 addresses are stored as IPv4).
    pub exporter: SocketAddr,
    /// Receive time, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The UDP payload: a slice of the collector's receive block, or the reader's copy.
    pub payload: bytes::Bytes,
}

/// Appends the frame of `d` to `out`. Payloads over [`MAX_PAYLOAD`] bytes are refused (UDP
/// cannot carry them).
pub fn encode(out: &mut Vec<u8>, d: &Datagram) -> Result<(), io::Error> {
    let len = u32::try_from(d.payload.len())
        .ok()
        .filter(|&l| l as usize <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "payload too long"))?;
    let mut h = [0u8; HEADER_LEN];
    h[field::MAGIC].copy_from_slice(&MAGIC);
    h[field::VERSION] = VERSION;
    match d.exporter.ip() {
        IpAddr::V4(a) => h[field::ADDR][..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => {
            h[field::FLAGS] = 1;
            h[field::ADDR].copy_from_slice(&a.octets());
        }
    }
    h[field::PORT].copy_from_slice(&d.exporter.port().to_be_bytes());
    h[field::TS].copy_from_slice(&d.ts_micros.to_be_bytes());
    h[field::LEN].copy_from_slice(&len.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[field::CHECKED]);
    crc.update(&d.payload);
    h[field::CRC].copy_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&d.payload);
    Ok(())
}

/// What a [`FrameReader`] skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames returned.
    pub frames: u64,
    /// Bytes skipped while looking for the next frame (cut or damaged frames).
    pub skipped_bytes: u64,
    /// Frames whose checksum did not match.
    pub bad_checksum: u64,
    /// Frames of a version this build does not read.
    pub bad_version: u64,
    /// Frame headers with an impossible length.
    pub bad_length: u64,
}

/// Reads frames from a byte stream (the pipe), resynchronizing after damage.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    stats: ReaderStats,
}

enum Parse {
    Frame(Datagram, usize),
    NeedMore,
    Skip(usize),
}

impl<R: Read> FrameReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: vec![0; 4 * (HEADER_LEN + MAX_PAYLOAD)],
            start: 0,
            end: 0,
            stats: ReaderStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Bytes read but not yet returned as a frame (the start of a frame still being written).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Drops buffered bytes (after the other side reconnected, a partial frame is garbage).
    pub fn reset(&mut self) {
        self.stats.skipped_bytes += (self.end - self.start) as u64;
        self.start = 0;
        self.end = 0;
    }

    /// The next frame; `Ok(None)` at end of stream (bytes of a cut last frame are counted as
    /// skipped). Read errors (including `WouldBlock`/`TimedOut` of a non-blocking stream)
    /// are passed on with the buffer intact.
    pub fn next_frame(&mut self) -> io::Result<Option<Datagram>> {
        loop {
            match parse(&self.buf[self.start..self.end], &mut self.stats) {
                Parse::Frame(d, used) => {
                    self.start += used;
                    self.stats.frames += 1;
                    return Ok(Some(d));
                }
                Parse::Skip(n) => {
                    self.start += n;
                    self.stats.skipped_bytes += n as u64;
                    continue;
                }
                Parse::NeedMore => {}
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.reset();
                return Ok(None);
            }
            self.end += n;
        }
    }
}

fn parse(b: &[u8], stats: &mut ReaderStats) -> Parse {
    // Find the magic; anything before it is junk.
    let Some(at) = b.windows(4).position(|w| w == MAGIC) else {
        // Keep up to 3 trailing bytes: they may be the start of a magic.
        let keep = b.len().min(3);
        return if b.len() > keep {
            Parse::Skip(b.len() - keep)
        } else {
            Parse::NeedMore
        };
    };
    if at > 0 {
        return Parse::Skip(at);
    }
    let Some(h) = b.first_chunk::<HEADER_LEN>() else {
        return Parse::NeedMore;
    };
    if h[field::VERSION] != VERSION {
        stats.bad_version += 1;
        return Parse::Skip(1);
    }
    let len = u32::from_be_bytes([h[32], h[33], h[34], h[35]]) as usize;
    if len > MAX_PAYLOAD {
        stats.bad_length += 1;
        return Parse::Skip(1);
    }
    let Some(payload) = b.get(HEADER_LEN..HEADER_LEN + len) else {
        return Parse::NeedMore;
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[field::CHECKED]);
    crc.update(payload);
    if crc.finalize().to_be_bytes() != h[36..40] {
        stats.bad_checksum += 1;
        return Parse::Skip(1);
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[field::ADDR]);
    let ip = if h[field::FLAGS] & 1 == 1 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    };
    let port = u16::from_be_bytes([h[6], h[7]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&h[field::TS]);
    Parse::Frame(
        Datagram {
            exporter: SocketAddr::new(ip, port),
            ts_micros: i64::from_be_bytes(ts),
            payload: bytes::Bytes::copy_from_slice(payload),
        },
        HEADER_LEN + len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(n: u8, v6: bool) -> Datagram {
        let ip: IpAddr = if v6 {
            "2001:db8::7".parse().expect("ip")
        } else {
            "192.0.2.9".parse().expect("ip")
        };
        Datagram {
            exporter: SocketAddr::new(ip, 2055 + u16::from(n)),
            ts_micros: 1_700_000_000_000_000 + i64::from(n),
            payload: vec![n; usize::from(n) * 3].into(),
        }
    }

    fn frames(ds: &[Datagram]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in ds {
            encode(&mut out, d).expect("encode");
        }
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<Datagram>, ReaderStats) {
        let mut r = FrameReader::new(bytes);
        let mut v = Vec::new();
        for _ in 0..10_000 {
            match r.next_frame().expect("read") {
                Some(d) => v.push(d),
                None => return (v, r.stats()),
            }
        }
        panic!("reader stuck in infinite loop");
    }

    #[test]
    fn test_round_trip_v4_v6_empty() {
        let ds = vec![dg(0, false), dg(1, true), dg(200, false)];
        let (got, st) = read_all(&frames(&ds));
        assert_eq!(got, ds);
        assert_eq!(st.frames, 3);
        assert_eq!(st.skipped_bytes, 0);
    }

    #[test]
    fn test_reads_byte_by_byte() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match (self.0.split_first(), buf.first_mut()) {
                    (Some((b, rest)), Some(out)) => {
                        *out = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let ds = vec![dg(5, true), dg(6, false)];
        let bytes = frames(&ds);
        let mut r = FrameReader::new(OneByte(&bytes));
        assert_eq!(r.next_frame().expect("r"), Some(ds[0].clone()));
        assert_eq!(r.next_frame().expect("r"), Some(ds[1].clone()));
        assert_eq!(r.next_frame().expect("r"), None);
    }

    #[test]
    fn test_cut_frame_then_good_frames_resync() {
        let ds = vec![dg(10, false), dg(11, true)];
        let whole = frames(&ds);
        let mut bytes = frames(&[dg(50, false)]);
        bytes.truncate(HEADER_LEN + 20); // collector killed mid-frame
        bytes.extend_from_slice(&whole);
        let (got, st) = read_all(&bytes);
        // The cut frame swallows the start of the next; the CRC rejects it, the reader resyncs.
        assert!(got.ends_with(&ds[1..]), "{got:?}");
        assert!(st.skipped_bytes > 0);
        assert!(got.iter().all(|d| ds.contains(d)));
    }

    #[test]
    fn test_garbage_and_corruption_are_skipped() {
        let ds = vec![dg(3, false), dg(4, false)];
        let mut bytes = b"garbage NF".to_vec();
        let mut f = frames(&ds);
        f[HEADER_LEN + 1] ^= 0xff; // corrupt the first payload
        bytes.extend_from_slice(&f);
        let (got, st) = read_all(&bytes);
        assert_eq!(got, vec![ds[1].clone()]);
        assert_eq!(st.bad_checksum, 1);
    }

    #[test]
    fn test_unknown_version_and_huge_length_skipped() {
        let mut f = frames(&[dg(3, false)]);
        f[4] = 2;
        let mut g = frames(&[dg(4, false)]);
        g[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
        f.extend_from_slice(&g);
        f.extend_from_slice(&frames(&[dg(5, false)]));
        let (got, st) = read_all(&f);
        assert_eq!(got, vec![dg(5, false)]);
        assert_eq!((st.bad_version, st.bad_length), (1, 1));
    }

    #[test]
    fn test_random_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678;
        let mut bytes = Vec::new();
        for i in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
            if i % 5000 == 0 {
                bytes.extend_from_slice(&MAGIC);
                bytes.push(1);
            }
        }
        let _ = read_all(&bytes);
    }

    #[test]
    fn test_oversized_payload_refused() {
        let d = Datagram {
            payload: vec![0; MAX_PAYLOAD + 1].into(),
            ..dg(1, false)
        };
        assert!(encode(&mut Vec::new(), &d).is_err());
    }
}
