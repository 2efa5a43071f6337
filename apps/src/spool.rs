//! The writer's on-disk spool: batches of flows that could not be stored while the database
//! was unreachable and did not fit the memory bound. One file per batch, written to a
//! temporary name and renamed, read back oldest first.
//!
//! # File format (big-endian)
//!
//! `NFsp` magic, version `1u8`, flow count `u32`, then per flow: `ts_micros i64`, exporter,
//! `input_if u32`, `output_if u32`, `direction u8`, `protocol u8`, source and destination
//! address, `src_port u16`, `dst_port u16`, `bytes u64`, `packets u64`, `tcp_flags u8`; an
//! address is a family byte (4 or 6) and 16 bytes.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use netflow_wire::Flow;

const MAGIC: &[u8; 4] = b"NFsp";
const RECORD_LEN: usize = 8 + 17 + 4 + 4 + 1 + 1 + 17 + 17 + 2 + 2 + 8 + 8 + 1;

/// A directory of spooled batches.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    files: std::collections::VecDeque<(PathBuf, u64, usize)>,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) `dir`, listing batches left by an earlier run.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(u64, PathBuf, u64)> = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name
                .strip_prefix("batch-")
                .and_then(|s| s.strip_suffix(".nfspool"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                found.push((seq, e.path(), e.metadata()?.len()));
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        found.sort();
        let next_seq = found.last().map_or(0, |f| f.0 + 1);
        let bytes = found.iter().map(|f| f.2).sum();
        let files = found
            .into_iter()
            .map(|(_, p, len)| {
                let flows = (len.saturating_sub(9) / RECORD_LEN as u64) as usize;
                (p, len, flows)
            })
            .collect();
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes,
            files,
            next_seq,
        })
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is spooled.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Flows waiting on disk.
    pub fn flows(&self) -> usize {
        self.files.iter().map(|f| f.2).sum()
    }

    /// Writes a batch. `Ok(false)` when the spool is full (the caller counts the drop).
    pub fn push(&mut self, flows: &[Flow]) -> io::Result<bool> {
        let size = 9 + (flows.len() * RECORD_LEN) as u64;
        if self.bytes + size > self.max_bytes {
            return Ok(false);
        }
        let mut buf = Vec::with_capacity(size as usize);
        buf.extend_from_slice(MAGIC);
        buf.push(1);
        buf.extend_from_slice(&(flows.len() as u32).to_be_bytes());
        for f in flows {
            encode(&mut buf, f);
        }
        let name = format!("batch-{:016}.nfspool", self.next_seq);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        fs::write(&tmp, &buf)?;
        fs::rename(&tmp, &path)?;
        self.next_seq += 1;
        self.bytes += size;
        self.files.push_back((path, size, flows.len()));
        Ok(true)
    }

    /// Reads the oldest batch without removing it. A damaged file is removed and reported
    /// as `Err` (its flows are lost; the caller counts them).
    pub fn peek(&mut self) -> Option<io::Result<Vec<Flow>>> {
        let (path, size, _) = self.files.front()?.clone();
        let r = fs::read(&path).and_then(|b| {
            decode(&b)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged spool file"))
        });
        if r.is_err() {
            let _ = fs::remove_file(&path);
            self.files.pop_front();
            self.bytes = self.bytes.saturating_sub(size);
        }
        Some(r)
    }

    /// Removes the oldest batch (after it was stored).
    pub fn pop(&mut self) -> io::Result<()> {
        if let Some((path, size, _)) = self.files.pop_front() {
            self.bytes = self.bytes.saturating_sub(size);
            fs::remove_file(path)?;
        }
        Ok(())
    }
}

fn put_addr(buf: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => {
            buf.push(4);
            buf.extend_from_slice(&a.octets());
            buf.extend_from_slice(&[0; 12]);
        }
        IpAddr::V6(a) => {
            buf.push(6);
            buf.extend_from_slice(&a.octets());
        }
    }
}

fn encode(buf: &mut Vec<u8>, f: &Flow) {
    buf.extend_from_slice(&f.ts_micros.to_be_bytes());
    put_addr(buf, f.exporter);
    buf.extend_from_slice(&f.input_if.to_be_bytes());
    buf.extend_from_slice(&f.output_if.to_be_bytes());
    buf.push(f.direction);
    buf.push(f.protocol);
    put_addr(buf, f.src_addr);
    put_addr(buf, f.dst_addr);
    buf.extend_from_slice(&f.src_port.to_be_bytes());
    buf.extend_from_slice(&f.dst_port.to_be_bytes());
    buf.extend_from_slice(&f.bytes.to_be_bytes());
    buf.extend_from_slice(&f.packets.to_be_bytes());
    buf.push(f.tcp_flags);
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*a)
    }
    fn addr(&mut self) -> Option<IpAddr> {
        let [fam] = self.take::<1>()?;
        let a = self.take::<16>()?;
        match fam {
            4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(a))),
            _ => None,
        }
    }
}

fn decode(b: &[u8]) -> Option<Vec<Flow>> {
    let mut c = Cursor(b);
    if &c.take::<4>()? != MAGIC || c.take::<1>()? != [1] {
        return None;
    }
    let n = u32::from_be_bytes(c.take::<4>()?) as usize;
    if c.0.len() != n.checked_mul(RECORD_LEN)? {
        return None;
    }
    let mut flows = Vec::with_capacity(n);
    for _ in 0..n {
        flows.push(Flow {
            ts_micros: i64::from_be_bytes(c.take()?),
            exporter: c.addr()?,
            input_if: u32::from_be_bytes(c.take()?),
            output_if: u32::from_be_bytes(c.take()?),
            direction: c.take::<1>()?[0],
            protocol: c.take::<1>()?[0],
            src_addr: c.addr()?,
            dst_addr: c.addr()?,
            src_port: u16::from_be_bytes(c.take()?),
            dst_port: u16::from_be_bytes(c.take()?),
            bytes: u64::from_be_bytes(c.take()?),
            packets: u64::from_be_bytes(c.take()?),
            tcp_flags: c.take::<1>()?[0],
            ..Flow::default()
        });
    }
    Some(flows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(i: u8) -> Flow {
        Flow {
            ts_micros: 1_700_000_000_000_000 + i64::from(i),
            exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)),
            input_if: 3,
            output_if: 70_000,
            direction: 1,
            protocol: 17,
            src_addr: "2001:db8::1".parse().expect("ip"),
            dst_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)),
            src_port: 53,
            dst_port: 40_000,
            bytes: u64::MAX,
            packets: 7,
            tcp_flags: 0x1b,
            ..Flow::default()
        }
    }

    #[test]
    fn test_spool_round_trip_and_reopen() {
        let dir = std::env::temp_dir().join(format!("netflow-spool-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        let a: Vec<Flow> = (0..5).map(flow).collect();
        let b: Vec<Flow> = (5..7).map(flow).collect();
        assert!(s.push(&a).expect("push"));
        assert!(s.push(&b).expect("push"));
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert_eq!((s.len(), s.flows()), (2, 7));
        assert_eq!(s.peek().expect("some").expect("ok"), a);
        s.pop().expect("pop");
        assert_eq!(s.peek().expect("some").expect("ok"), b);
        s.pop().expect("pop");
        assert!(s.peek().is_none());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_spool_full_and_damaged() {
        let dir = std::env::temp_dir().join(format!("netflow-spool-test2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut s = Spool::open(&dir, 200).expect("open");
        assert!(!s.push(&(0..5).map(flow).collect::<Vec<_>>()).expect("push"));
        assert!(s.push(&[flow(1)]).expect("push"));
        let p = s.files[0].0.clone();
        fs::write(&p, b"NFsp\x01junk").expect("write");
        assert!(s.peek().expect("some").is_err());
        assert!(s.is_empty());
        assert!(decode(&[]).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
