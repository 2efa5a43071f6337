//! NetFlow v9 (RFC 3954): the packet header and the flowset iterator, shared with IPFIX sets.

use crate::error::DecodeError;
use crate::header::Header;
use crate::wire::{self, u16_at, u32_at};

/// Byte positions of the v9 header (RFC 3954 §5.1).
pub(crate) mod field {
    pub const HEADER_LEN: usize = 20;
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 2;
    pub const SYS_UPTIME: usize = 4;
    pub const UNIX_SECS: usize = 8;
    pub const SEQUENCE: usize = 12;
    pub const SOURCE_ID: usize = 16;
}

/// Flowset id of template flowsets (RFC 3954 §5.2).
pub const TEMPLATE_SET: u16 = 0;
/// Flowset id of options template flowsets (RFC 3954 §6.1).
pub const OPTIONS_TEMPLATE_SET: u16 = 1;

/// A validated v9 packet header followed by its flowsets.
///
/// [`V9Packet::parse`] checks the header length and version; the flowsets are framed lazily by
/// [`V9Packet::sets`]. Accessors never panic.
#[derive(Debug, Clone, Copy)]
pub struct V9Packet<'a> {
    hdr: &'a [u8; field::HEADER_LEN],
    body: &'a [u8],
}

impl<'a> V9Packet<'a> {
    /// Validates the v9 header of a datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<V9Packet<'a>, DecodeError> {
        let Some((hdr, body)) = datagram.split_first_chunk::<{ field::HEADER_LEN }>() else {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: field::HEADER_LEN - datagram.len(),
            });
        };
        let version = u16_at(hdr, field::VERSION);
        if version != 9 {
            return Err(DecodeError::Version(version));
        }
        Ok(V9Packet { hdr, body })
    }

    /// The header facts.
    pub fn header(&self) -> Header {
        Header {
            version: 9,
            count: u16_at(self.hdr, field::COUNT),
            sys_uptime_ms: Some(u32_at(self.hdr, field::SYS_UPTIME)),
            export_secs: u32_at(self.hdr, field::UNIX_SECS),
            export_nanos: 0,
            sequence: u32_at(self.hdr, field::SEQUENCE),
            source_id: u32_at(self.hdr, field::SOURCE_ID),
            sampling: 0,
        }
    }

    /// The flowsets, framed by their length fields.
    pub fn sets(&self) -> FlowSets<'a> {
        FlowSets::new(field::HEADER_LEN, self.body)
    }
}

/// One flowset (v9) or set (IPFIX): id and body, with the body's offset in the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSet<'a> {
    /// Offset of the set header from the start of the datagram.
    pub offset: usize,
    /// The set id: templates, options templates, or a template id (>= 256) for data.
    pub id: u16,
    /// The body after the 4-byte set header.
    pub body: &'a [u8],
}

/// Iterator over the sets of a v9 or IPFIX packet.
///
/// Stops at the end of the packet. A set header with a length below 4 or past the end yields one
/// [`DecodeError::BadSetLength`] and then ends; fewer than 4 trailing bytes are taken as padding.
#[derive(Debug, Clone)]
pub struct FlowSets<'a> {
    /// Offset of `rest` in the datagram.
    pos: usize,
    rest: &'a [u8],
}

impl<'a> FlowSets<'a> {
    /// Sets found in `rest`, which starts `pos` bytes into the datagram.
    pub(crate) fn new(pos: usize, rest: &'a [u8]) -> FlowSets<'a> {
        FlowSets { pos, rest }
    }

    /// Offset in the datagram of what is not framed yet.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for FlowSets<'a> {
    type Item = Result<FlowSet<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            self.rest = &[];
            return None;
        }
        let offset = self.pos;
        match wire::set(self.rest) {
            Ok((rest, s)) => {
                self.pos += self.rest.len() - rest.len();
                self.rest = rest;
                Some(Ok(FlowSet {
                    offset,
                    id: s.id,
                    body: s.body,
                }))
            }
            Err(_) => {
                let id = u16::from_be_bytes([self.rest[0], self.rest[1]]);
                let length = u16::from_be_bytes([self.rest[2], self.rest[3]]);
                let remaining = self.rest.len();
                self.rest = &[];
                Some(Err(DecodeError::BadSetLength {
                    offset,
                    set_id: id,
                    length,
                    remaining,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const PACKET: [u8; 20 + 8 + 6 + 2] = [
        0, 9, 0, 2,         // version, count
        0, 0, 0, 100,       // sys_uptime
        0, 0, 0, 200,       // unix_secs
        0, 0, 0, 7,         // sequence
        0, 0, 0, 3,         // source id
        1, 0, 0, 8, 1, 2, 3, 4, // set 256, length 8
        1, 1, 0, 6, 9, 9,   // set 257, length 6
        0, 0,               // padding
    ];

    #[test]
    fn test_sets() {
        let p = V9Packet::parse(&PACKET).unwrap();
        assert_eq!((p.header().sequence, p.header().source_id), (7, 3));
        let sets: Vec<_> = p.sets().collect();
        assert_eq!(
            sets,
            vec![
                Ok(FlowSet {
                    offset: 20,
                    id: 256,
                    body: &[1, 2, 3, 4]
                }),
                Ok(FlowSet {
                    offset: 28,
                    id: 257,
                    body: &[9, 9]
                }),
            ]
        );
    }

    #[test]
    fn test_bad_set_length_ends_iteration() {
        for len in [0u8, 1, 3, 200] {
            let mut p = PACKET;
            p[23] = len;
            let v = V9Packet::parse(&p).unwrap();
            let mut sets = v.sets();
            assert!(matches!(
                sets.next(),
                Some(Err(DecodeError::BadSetLength {
                    offset: 20,
                    set_id: 256,
                    ..
                }))
            ));
            assert_eq!(sets.next(), None, "stuck after an error");
        }
    }
}
