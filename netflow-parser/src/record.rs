//! Data records as zero-copy views over a set, read through a compiled [`Template`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::{FieldId, FieldSpec};
use crate::flow::Flow;
use crate::header::FlowContext;
use crate::template::{SlotId, Template, TemplateKind};
use crate::time::{ntp_to_unix_ms, uptime_to_unix_ms};
use crate::wire::be_uint;

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
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The template describing this record.
    pub fn template(&self) -> &'a Template {
        self.template
    }

    /// Whether this is an options record (scope + option fields) rather than a flow record.
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
    pub fn fields(&self) -> Fields<'a> {
        Fields {
            record: *self,
            index: 0,
        }
    }

    #[inline]
    fn slot(&self, s: SlotId) -> Option<&'a [u8]> {
        self.template.slot_bytes(self.data, s)
    }

    #[inline]
    fn slot_uint(&self, s: SlotId) -> Option<u64> {
        self.slot(s).and_then(be_uint)
    }

    /// Source address: `IPV4_SRC_ADDR` (8) or else `IPV6_SRC_ADDR` (27).
    pub fn src_addr(&self) -> Option<IpAddr> {
        addr(self.slot(SlotId::Src4), self.slot(SlotId::Src6))
    }

    /// Destination address: `IPV4_DST_ADDR` (12) or else `IPV6_DST_ADDR` (28).
    pub fn dst_addr(&self) -> Option<IpAddr> {
        addr(self.slot(SlotId::Dst4), self.slot(SlotId::Dst6))
    }

    /// `L4_SRC_PORT` (7).
    pub fn src_port(&self) -> Option<u16> {
        self.slot_uint(SlotId::SrcPort).map(|v| v as u16)
    }

    /// `L4_DST_PORT` (11).
    pub fn dst_port(&self) -> Option<u16> {
        self.slot_uint(SlotId::DstPort).map(|v| v as u16)
    }

    /// `PROTOCOL` (4).
    pub fn protocol(&self) -> Option<u8> {
        self.slot_uint(SlotId::Protocol).map(|v| v as u8)
    }

    /// `IN_BYTES` (1, octetDeltaCount), or else `IN_PERMANENT_BYTES` (85, octetTotalCount).
    pub fn bytes(&self) -> Option<u64> {
        self.slot_uint(SlotId::Bytes)
            .or_else(|| self.slot_uint(SlotId::BytesTotal))
    }

    /// `IN_PKTS` (2, packetDeltaCount), or else `IN_PERMANENT_PKTS` (86, packetTotalCount).
    pub fn packets(&self) -> Option<u64> {
        self.slot_uint(SlotId::Packets)
            .or_else(|| self.slot_uint(SlotId::PacketsTotal))
    }

    /// `INPUT_SNMP` (10), 2 or 4 bytes (or any length up to 4).
    pub fn input_if(&self) -> Option<u32> {
        self.slot_uint(SlotId::InputIf).map(|v| v as u32)
    }

    /// `OUTPUT_SNMP` (14).
    pub fn output_if(&self) -> Option<u32> {
        self.slot_uint(SlotId::OutputIf).map(|v| v as u32)
    }

    /// `DIRECTION` (61): 0 ingress, 1 egress.
    pub fn direction(&self) -> Option<u8> {
        self.slot_uint(SlotId::Direction).map(|v| v as u8)
    }

    /// `TCP_FLAGS` (6); of a 2-byte IPFIX tcpControlBits, the low byte (FIN..CWR).
    pub fn tcp_flags(&self) -> Option<u8> {
        self.slot_uint(SlotId::TcpFlags).map(|v| (v & 0xff) as u8)
    }

    /// `SAMPLING_INTERVAL` (34), as in options records.
    pub fn sampling_interval(&self) -> Option<u32> {
        self.slot_uint(SlotId::SamplingInterval).map(|v| v as u32)
    }

    /// Flow start and end in Unix milliseconds, from whichever time fields the template has:
    /// absolute ms (152/153), s (150/151), NTP µs/ns (154..157), or sysUptime-relative
    /// FIRST/LAST_SWITCHED (22/21) against the header's uptime and export time (or IPFIX
    /// systemInitTimeMilliseconds 160). `(0, 0)` when unknown.
    pub fn times(&self, ctx: &FlowContext) -> (u64, u64) {
        let pick = |ms: SlotId, s: SlotId, us: SlotId, ns: SlotId, up: SlotId| -> u64 {
            if let Some(v) = self.slot_uint(ms) {
                return v;
            }
            if let Some(v) = self.slot_uint(s) {
                return v * 1000;
            }
            if let Some(v) = self.slot_uint(us).or_else(|| self.slot_uint(ns)) {
                return ntp_to_unix_ms(v);
            }
            let Some(t) = self.slot_uint(up) else {
                return 0;
            };
            let t = t as u32;
            if let Some(init) = self.slot_uint(SlotId::SystemInitMillis) {
                return init.saturating_add(u64::from(t));
            }
            match ctx.header.sys_uptime_ms {
                Some(uptime) => uptime_to_unix_ms(ctx.header.export_ms(), uptime, t),
                None => 0,
            }
        };
        (
            pick(
                SlotId::StartMillis,
                SlotId::StartSecs,
                SlotId::StartMicros,
                SlotId::StartNanos,
                SlotId::FirstSwitched,
            ),
            pick(
                SlotId::EndMillis,
                SlotId::EndSecs,
                SlotId::EndMicros,
                SlotId::EndNanos,
                SlotId::LastSwitched,
            ),
        )
    }

    /// The normalized flow of this record, or `None` when it is an options record or carries no
    /// source and destination address (such records are not flows; count them).
    #[inline]
    pub fn flow(&self, ctx: &FlowContext) -> Option<Flow> {
        if self.is_options() {
            return None;
        }
        let src_addr = self.src_addr()?;
        let dst_addr = self.dst_addr()?;
        let (start_ms, end_ms) = self.times(ctx);
        Some(Flow {
            ts_micros: ctx.ts_micros,
            exporter: ctx.exporter,
            input_if: self.input_if().unwrap_or(0),
            output_if: self.output_if().unwrap_or(0),
            direction: self.direction().unwrap_or(Flow::INGRESS),
            protocol: self.protocol().unwrap_or(0),
            src_addr,
            dst_addr,
            src_port: self.src_port().unwrap_or(0),
            dst_port: self.dst_port().unwrap_or(0),
            bytes: self.bytes().unwrap_or(0),
            packets: self.packets().unwrap_or(0),
            tcp_flags: self.tcp_flags().unwrap_or(0),
            sampling_interval: ctx.sampling_interval.max(1),
            start_ms,
            end_ms,
        })
    }
}

fn addr(v4: Option<&[u8]>, v6: Option<&[u8]>) -> Option<IpAddr> {
    if let Some(&[a, b, c, d]) = v4 {
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let b: [u8; 16] = v6?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}

/// Iterator over `(spec, bytes)` of a record's fields; see [`Record::fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    record: Record<'a>,
    index: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (FieldSpec, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
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
