//! Data records as zero-copy views over a set, read through a compiled [`Template`]: this file
//! the view, its fields and the iterators; `flow` what a record becomes, its normalized flow
//! (two for a biflow record).

mod fixed;
mod flow;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::{FieldId, FieldSpec};
use crate::template::{SlotId, Template, TemplateKind};
use crate::wire::be_uint;

pub(crate) use fixed::{FixedReader, Windows};
pub use flow::RecordFlows;

/// One data record: its bytes and the template that describes them.
///
/// Built only by this crate's iterators, which guarantee that `bytes` is exactly one record of
/// `template` (for variable-length templates, that every field lies inside it). Accessors
/// therefore never panic; a field the template lacks reads as `None`.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    data: &'a [u8],
    template: &'a Template,
}

impl<'a> Record<'a> {
    pub(crate) fn new(data: &'a [u8], template: &'a Template) -> Record<'a> {
        Record { data, template }
    }

    /// The record's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The template describing this record.
    #[inline]
    pub fn template(&self) -> &'a Template {
        self.template
    }

    /// Whether this is an options record (scope + option fields) rather than a flow record.
    #[inline]
    pub fn is_options(&self) -> bool {
        matches!(self.template.kind(), TemplateKind::Options { .. })
    }

    /// The bytes of the first IANA (enterprise 0) field with this id, scope fields included.
    pub fn get(&self, id: FieldId) -> Option<&'a [u8]> {
        self.get_enterprise(0, id)
    }

    /// The bytes of the first field with this enterprise number and id.
    pub fn get_enterprise(&self, enterprise: u32, id: FieldId) -> Option<&'a [u8]> {
        let index = self
            .template
            .fields()
            .iter()
            .position(|f| f.id == id && f.enterprise == enterprise)?;
        self.template.field_bytes(self.data, index)
    }

    /// The first IANA field with this id as an unsigned integer (fields of 1..=8 bytes).
    pub fn uint(&self, id: FieldId) -> Option<u64> {
        self.get(id).and_then(be_uint)
    }

    /// Every field with its bytes, in record order.
    pub fn fields(&self) -> FieldValues<'a> {
        FieldValues {
            record: *self,
            index: 0,
            end: self.template.fields().len(),
        }
    }

    /// The scope fields of an options record (RFC 3954 §6.2, RFC 7011 §3.4.2.2); none for a
    /// data record. In v9 their ids are scope types (1 system, 2 interface, 3 line card,
    /// 4 cache, 5 template).
    pub fn scope(&self) -> FieldValues<'a> {
        FieldValues {
            record: *self,
            index: 0,
            end: self.scope_count(),
        }
    }

    /// The non-scope fields: all of a data record's, the option fields of an options record.
    pub fn options(&self) -> FieldValues<'a> {
        FieldValues {
            record: *self,
            index: self.scope_count(),
            end: self.template.fields().len(),
        }
    }

    fn scope_count(&self) -> usize {
        match self.template.kind() {
            TemplateKind::Data => 0,
            TemplateKind::Options { scope_fields } => usize::from(scope_fields),
        }
    }

    #[inline(always)]
    fn slot_uint(&self, s: SlotId) -> Option<u64> {
        self.template.slot_uint(self.data, s)
    }

    /// Source address: `IPV4_SRC_ADDR` (8) or else `IPV6_SRC_ADDR` (27).
    #[inline]
    pub fn src_addr(&self) -> Option<IpAddr> {
        self.addr(SlotId::Src4, SlotId::Src6)
    }

    /// Destination address: `IPV4_DST_ADDR` (12) or else `IPV6_DST_ADDR` (28).
    #[inline]
    pub fn dst_addr(&self) -> Option<IpAddr> {
        self.addr(SlotId::Dst4, SlotId::Dst6)
    }

    #[inline(always)]
    fn addr(&self, v4: SlotId, v6: SlotId) -> Option<IpAddr> {
        if let Some(a) = self.template.slot_array::<4>(self.data, v4) {
            return Some(IpAddr::V4(Ipv4Addr::from(*a)));
        }
        self.template
            .slot_array::<16>(self.data, v6)
            .map(|a| IpAddr::V6(Ipv6Addr::from(*a)))
    }

    /// `L4_SRC_PORT` (7).
    #[inline]
    pub fn src_port(&self) -> Option<u16> {
        self.slot_uint(SlotId::SrcPort).map(|v| v as u16)
    }

    /// `L4_DST_PORT` (11).
    #[inline]
    pub fn dst_port(&self) -> Option<u16> {
        self.slot_uint(SlotId::DstPort).map(|v| v as u16)
    }

    /// `PROTOCOL` (4).
    #[inline]
    pub fn protocol(&self) -> Option<u8> {
        self.slot_uint(SlotId::Protocol).map(|v| v as u8)
    }

    /// Bytes: `IN_BYTES` (1, octetDeltaCount), or else the first the template has of
    /// octetTotalCount (85), initiatorOctets (231, Cisco ASA NSEL's forward bytes) and
    /// `OUT_BYTES` (23, egress-only exports).
    #[inline]
    pub fn bytes(&self) -> Option<u64> {
        self.slot_uint(SlotId::Bytes)
    }

    /// Packets: `IN_PKTS` (2, packetDeltaCount), or else packetTotalCount (86),
    /// initiatorPackets (298) or `OUT_PKTS` (24).
    #[inline]
    pub fn packets(&self) -> Option<u64> {
        self.slot_uint(SlotId::Packets)
    }

    /// `INPUT_SNMP` (10), 2 or 4 bytes (or any length up to 4).
    #[inline]
    pub fn input_if(&self) -> Option<u32> {
        self.slot_uint(SlotId::InputIf).map(|v| v as u32)
    }

    /// `OUTPUT_SNMP` (14).
    #[inline]
    pub fn output_if(&self) -> Option<u32> {
        self.slot_uint(SlotId::OutputIf).map(|v| v as u32)
    }

    /// `DIRECTION` (61): 0 ingress, 1 egress.
    #[inline]
    pub fn direction(&self) -> Option<u8> {
        self.slot_uint(SlotId::Direction).map(|v| v as u8)
    }

    /// `TCP_FLAGS` (6); of a 2-byte IPFIX tcpControlBits, the low byte (FIN..CWR).
    #[inline]
    pub fn tcp_flags(&self) -> Option<u8> {
        self.slot_uint(SlotId::TcpFlags).map(|v| (v & 0xff) as u8)
    }

    /// The sampler a data record names: `FLOW_SAMPLER_ID` (48) or IPFIX `selectorId` (302).
    #[inline]
    pub fn sampler_id(&self) -> Option<u64> {
        self.slot_uint(SlotId::SamplerId)
            .or_else(|| self.slot_uint(SlotId::SelectorId))
    }

    /// `SAMPLING_INTERVAL` (34), as in options records.
    #[inline]
    pub fn sampling_interval(&self) -> Option<u32> {
        self.slot_uint(SlotId::SamplingInterval).map(|v| v as u32)
    }
}

/// Iterator over `(spec, bytes)` of a record's fields; see [`Record::fields`].
#[derive(Debug, Clone)]
pub struct FieldValues<'a> {
    record: Record<'a>,
    index: usize,
    end: usize,
}

impl<'a> Iterator for FieldValues<'a> {
    type Item = (FieldSpec, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.end {
            return None;
        }
        let spec = *self.record.template.fields().get(self.index)?;
        let bytes = self
            .record
            .template
            .field_bytes(self.record.data, self.index)?;
        self.index += 1;
        Some((spec, bytes))
    }
}

/// Iterator over the records of one data set; see [`DataSet::records`](crate::DataSet::records).
///
/// Fixed-length templates step by the record length (a remainder shorter than one record is
/// padding); variable-length templates find each record's end by walking its fields, and stop
/// at a record that would overrun the set (reported as [`DecodeError::RecordOverrun`](crate::DecodeError::RecordOverrun)
/// when the set was decoded).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    template: &'a Template,
}

impl<'a> Records<'a> {
    pub(crate) fn new(body: &'a [u8], template: &'a Template) -> Records<'a> {
        Records {
            rest: body,
            template,
        }
    }

    /// The bytes of the records not yet iterated.
    #[inline(always)]
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    #[inline]
    fn next(&mut self) -> Option<Record<'a>> {
        let len = match self.template.record_len() {
            Some(n) => n,
            None if self.rest.len() < self.template.min_record_len() => return None,
            None => match self.template.varlen_record_len(self.rest) {
                Some(n) => n,
                None => {
                    self.rest = &[];
                    return None;
                }
            },
        };
        if len == 0 || self.rest.len() < len {
            self.rest = &[];
            return None;
        }
        let (rec, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Record::new(rec, self.template))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.template.record_len() {
            Some(n) if n > 0 => (self.rest.len() / n, Some(self.rest.len() / n)),
            _ => (
                0,
                Some(self.rest.len() / self.template.min_record_len().max(1)),
            ),
        }
    }
}
