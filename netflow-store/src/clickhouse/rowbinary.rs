//! ClickHouse's RowBinary format for the one row shape this crate stores: every value
//! little-endian at its fixed width, addresses as `FixedString(16)`, `String` as a LEB128 length
//! and the bytes. The same layout works on 18.16 and current releases (RowBinary has not
//! changed for these types).
//!
//! A flow row is [`FLOW_COLUMNS`] in order, [`FLOW_ROW_LEN`] bytes. Addresses are stored
//! IPv6-mapped (`::ffff:a.b.c.d` for IPv4), which is what current releases' `IPv6` type holds
//! too; an IPv6 address that merely looks IPv4-mapped is told apart by a bit in `v6_mapped`
//! (bit 0 exporter, 1 source, 2 destination), so every address reads back as it was written.

use std::net::{IpAddr, Ipv6Addr};

use crate::{Flow, StoreError, counter_to_db};

/// The stored columns of a flow, in row order, with their ClickHouse types; `seq` (the batch
/// number) last.
pub(crate) const FLOW_COLUMNS: [(&str, &str); 15] = [
    ("ts", "Int64"),
    ("exporter", "FixedString(16)"),
    ("input_if", "UInt32"),
    ("output_if", "UInt32"),
    ("direction", "UInt8"),
    ("protocol", "UInt8"),
    ("src_addr", "FixedString(16)"),
    ("dst_addr", "FixedString(16)"),
    ("src_port", "UInt16"),
    ("dst_port", "UInt16"),
    ("bytes", "UInt64"),
    ("packets", "UInt64"),
    ("tcp_flags", "UInt8"),
    ("v6_mapped", "UInt8"),
    ("seq", "UInt64"),
];

/// Bytes of one flow row.
pub(crate) const FLOW_ROW_LEN: usize = 8 + 16 + 4 + 4 + 1 + 1 + 16 + 16 + 2 + 2 + 8 + 8 + 1 + 1 + 8;

/// The 16 bytes stored for `a`, and whether it is an IPv6 address in IPv4-mapped form (which
/// the bytes alone would read back as IPv4).
pub(crate) fn addr16(a: IpAddr) -> ([u8; 16], bool) {
    match a {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), false),
        IpAddr::V6(v6) => (v6.octets(), v6.to_ipv4_mapped().is_some()),
    }
}

/// The address stored as `b`; `v6` for the IPv6 addresses that look IPv4-mapped.
pub(crate) fn addr_from16(b: [u8; 16], v6: bool) -> IpAddr {
    let a = Ipv6Addr::from(b);
    match a.to_ipv4_mapped() {
        Some(v4) if !v6 => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

/// Appends `f` as one flow row of batch `seq`.
pub(crate) fn put_flow(out: &mut Vec<u8>, f: &Flow, seq: u64) {
    let (exporter, ev6) = addr16(f.exporter);
    let (src, sv6) = addr16(f.src_addr);
    let (dst, dv6) = addr16(f.dst_addr);
    out.extend_from_slice(&f.ts_micros.to_le_bytes());
    out.extend_from_slice(&exporter);
    out.extend_from_slice(&f.input_if.to_le_bytes());
    out.extend_from_slice(&f.output_if.to_le_bytes());
    out.push(f.direction);
    out.push(f.protocol);
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&f.src_port.to_le_bytes());
    out.extend_from_slice(&f.dst_port.to_le_bytes());
    // saturated as on the other backends (see the crate docs)
    out.extend_from_slice(&counter_to_db(f.bytes).to_le_bytes());
    out.extend_from_slice(&counter_to_db(f.packets).to_le_bytes());
    out.push(f.tcp_flags);
    out.push(u8::from(ev6) | u8::from(sv6) << 1 | u8::from(dv6) << 2);
    out.extend_from_slice(&seq.to_le_bytes());
}

/// Appends a `String` value.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over a reply in RowBinary; every read checks the length first.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// A reply that ends inside a row or holds a value this crate never writes.
const SHORT: StoreError = StoreError::ClickHouseReply("RowBinary reply ends inside a row");

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(SHORT)?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, StoreError> {
        self.take().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, StoreError> {
        self.take().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        self.take().map(u64::from_le_bytes)
    }
    pub(crate) fn i64(&mut self) -> Result<i64, StoreError> {
        self.take().map(i64::from_le_bytes)
    }
    /// Two `UInt64` values (an aggregate and a count).
    pub(crate) fn u64_pair(&mut self) -> Result<(u64, u64), StoreError> {
        Ok((self.u64()?, self.u64()?))
    }
    pub(crate) fn fixed16(&mut self) -> Result<[u8; 16], StoreError> {
        self.take()
    }

    /// One flow row (as [`put_flow`] writes it); the batch number is skipped.
    pub(crate) fn flow(&mut self) -> Result<Flow, StoreError> {
        let ts_micros = self.i64()?;
        let exporter = self.fixed16()?;
        let input_if = self.u32()?;
        let output_if = self.u32()?;
        let direction = self.u8()?;
        let protocol = self.u8()?;
        let src = self.fixed16()?;
        let dst = self.fixed16()?;
        let src_port = self.u16()?;
        let dst_port = self.u16()?;
        let bytes = self.u64()?;
        let packets = self.u64()?;
        let tcp_flags = self.u8()?;
        let v6 = self.u8()?;
        let _seq = self.u64()?;
        Ok(Flow {
            ts_micros,
            exporter: addr_from16(exporter, v6 & 1 != 0),
            input_if,
            output_if,
            direction,
            protocol,
            src_addr: addr_from16(src, v6 & 2 != 0),
            dst_addr: addr_from16(dst, v6 & 4 != 0),
            src_port,
            dst_port,
            bytes,
            packets,
            tcp_flags,
            ..Flow::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_flow_round_trip_and_length() {
        let f = Flow {
            ts_micros: -5,
            exporter: "::ffff:192.0.2.1".parse().unwrap(),
            src_addr: "192.0.2.1".parse().unwrap(),
            dst_addr: "2001:db8::1".parse().unwrap(),
            input_if: u32::MAX,
            bytes: u64::MAX,
            ..Flow::default()
        };
        let mut buf = Vec::new();
        put_flow(&mut buf, &f, 7);
        assert_eq!(buf.len(), FLOW_ROW_LEN);
        let mut r = Reader::new(&buf);
        let back = r.flow().unwrap();
        assert!(r.is_empty());
        assert_eq!(
            back,
            Flow {
                bytes: i64::MAX as u64,
                ..f
            }
        );
        assert!(matches!(
            Reader::new(&buf[..FLOW_ROW_LEN - 1]).flow(),
            Err(StoreError::ClickHouseReply(_))
        ));
    }

    #[test]
    fn test_string_length_prefix() {
        let mut out = Vec::new();
        put_string(&mut out, &"x".repeat(300));
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
    }
}
