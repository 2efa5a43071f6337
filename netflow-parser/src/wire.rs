//! Internal nom glue: set headers, checked lengths, big-endian unsigned integers of any size.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::be_u16;

/// A set (IPFIX) or flowset (v9) as framed by its 4-byte header: RFC 3954 §5.2 / RFC 7011 §3.3.2.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawSet<'a> {
    pub id: u16,
    /// The set body, after the 4-byte header, bounded by the set's length field.
    pub body: &'a [u8],
}

/// Reads one set header and cuts its body. Lengths below the header size are refused before any
/// subtraction; a length past the end of the input is a nom error.
#[inline]
pub(crate) fn set(i: &[u8]) -> IResult<&[u8], RawSet<'_>> {
    let (i, id) = be_u16(i)?;
    let (i, len) = nom::combinator::verify(be_u16, |&n: &u16| n >= 4).parse(i)?;
    let (i, body) = take(usize::from(len) - 4).parse(i)?;
    Ok((i, RawSet { id, body }))
}

/// Big-endian unsigned integer of 1..=8 bytes (RFC 7011 §6.2 reduced-size encoding; v9 counters
/// of any length). `None` for an empty slice or one longer than 8 bytes.
#[inline]
pub(crate) fn be_uint(b: &[u8]) -> Option<u64> {
    Some(match *b {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ if !b.is_empty() && b.len() <= 8 => b.iter().fold(0, |n, &x| n << 8 | u64::from(x)),
        _ => return None,
    })
}

/// Big-endian unsigned integer of `len` bytes (1..=8) at `at` in `rec`; `None` when `len` is 0
/// or more than 8, or the bytes are not all inside `rec`. The common lengths take a fixed-size
/// load instead of a loop.
#[inline(always)]
pub(crate) fn uint_at(rec: &[u8], at: usize, len: u16) -> Option<u64> {
    let b = rec.get(at..)?;
    match len {
        1 => b.first().map(|&x| u64::from(x)),
        2 => b
            .first_chunk::<2>()
            .map(|x| u64::from(u16::from_be_bytes(*x))),
        4 => b
            .first_chunk::<4>()
            .map(|x| u64::from(u32::from_be_bytes(*x))),
        8 => b.first_chunk::<8>().map(|x| u64::from_be_bytes(*x)),
        0 => None,
        n => be_uint(b.get(..usize::from(n))?),
    }
}

/// Reads a big-endian `u16` at a constant position of a fixed-size array (no panic path).
#[inline]
pub(crate) fn u16_at<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at a constant position of a fixed-size array (no panic path).
#[inline]
pub(crate) fn u32_at<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Offset of `part` inside `whole`, for error reports (`part` must be a sub-slice of `whole`).
#[inline]
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    nom::Offset::offset(whole, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn be_uint_all_lengths() {
        assert_eq!(be_uint(&[]), None);
        assert_eq!(be_uint(&[7]), Some(7));
        assert_eq!(be_uint(&[1, 2]), Some(0x0102));
        assert_eq!(be_uint(&[1, 2, 3]), Some(0x010203));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5]), Some(0x0102030405));
        assert_eq!(be_uint(&[0xff; 8]), Some(u64::MAX));
        assert_eq!(be_uint(&[0; 9]), None);
    }

    #[test]
    fn set_refuses_short_and_long_lengths() {
        assert!(set(&[1, 0, 0, 3]).is_err());
        assert!(set(&[1, 0, 0, 9, 0, 0]).is_err());
        let (rest, s) = set(&[1, 0, 0, 6, 0xaa, 0xbb, 0xcc]).unwrap();
        assert_eq!((s.id, s.body, rest), (256, &[0xaa, 0xbb][..], &[0xcc][..]));
    }
}
