//! IPFIX (RFC 7011): the message header. Sets are framed like v9 flowsets ([`FlowSets`]).

use crate::error::DecodeError;
use crate::header::Header;
use crate::v9::FlowSets;
use crate::wire::{u16_at, u32_at};

/// Byte positions of the IPFIX message header (RFC 7011 §3.1).
pub(crate) mod field {
    pub const HEADER_LEN: usize = 16;
    pub const VERSION: usize = 0;
    pub const LENGTH: usize = 2;
    pub const EXPORT_TIME: usize = 4;
    pub const SEQUENCE: usize = 8;
    pub const DOMAIN: usize = 12;
}

/// Set id of template sets (RFC 7011 §3.3.2).
pub const TEMPLATE_SET: u16 = 2;
/// Set id of options template sets.
pub const OPTIONS_TEMPLATE_SET: u16 = 3;

/// A validated IPFIX message header followed by its sets.
///
/// [`IpfixPacket::parse`] checks the version and that the message length lies between the header
/// size and the datagram size (bytes after the message are ignored). Accessors never panic.
#[derive(Debug, Clone, Copy)]
pub struct IpfixPacket<'a> {
    hdr: &'a [u8; field::HEADER_LEN],
    body: &'a [u8],
}

impl<'a> IpfixPacket<'a> {
    /// Validates the IPFIX header of a datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<IpfixPacket<'a>, DecodeError> {
        let Some((hdr, _)) = datagram.split_first_chunk::<{ field::HEADER_LEN }>() else {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: field::HEADER_LEN - datagram.len(),
            });
        };
        let version = u16_at(hdr, field::VERSION);
        if version != 10 {
            return Err(DecodeError::Version(version));
        }
        let length = usize::from(u16_at(hdr, field::LENGTH));
        let Some(message) = datagram
            .get(..length)
            .filter(|m| m.len() >= field::HEADER_LEN)
        else {
            return Err(DecodeError::BadLength {
                offset: field::LENGTH,
                declared: length,
                actual: datagram.len(),
            });
        };
        let body = message.get(field::HEADER_LEN..).unwrap_or(&[]);
        Ok(IpfixPacket { hdr, body })
    }

    /// The header facts (`count` is 0; `source_id` is the observation domain id).
    pub fn header(&self) -> Header {
        Header {
            version: 10,
            count: 0,
            sys_uptime_ms: None,
            export_secs: u32_at(self.hdr, field::EXPORT_TIME),
            export_nanos: 0,
            sequence: u32_at(self.hdr, field::SEQUENCE),
            source_id: u32_at(self.hdr, field::DOMAIN),
            sampling: 0,
        }
    }

    /// The message length from the header.
    pub fn length(&self) -> u16 {
        u16_at(self.hdr, field::LENGTH)
    }

    /// The sets, framed by their length fields.
    pub fn sets(&self) -> FlowSets<'a> {
        FlowSets::new(field::HEADER_LEN, self.body)
    }
}
