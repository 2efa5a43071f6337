//! Data records as zero-copy views over a set, read through a compiled [`Template`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::{FieldId, FieldSpec};
use crate::flow::Flow;
use crate::header::RecordOrigin;
use crate::template::{Duration, SlotId, Template, TemplateKind, TimeSource};
use crate::time::{ntp_to_unix_ms, uptime_to_unix_ms};
use crate::v5::V5Record;
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

    /// Flow start and end in Unix milliseconds, from whichever time fields the template has:
    /// absolute ms (152/153), s (150/151), NTP µs/ns (154..157), or sysUptime-relative
    /// FIRST/LAST_SWITCHED (22/21) against the header's uptime and export time (or IPFIX
    /// systemInitTimeMilliseconds 160), or µs before the export time (158/159); a duration
    /// (161/162) gives the one the template lacks. `(0, 0)` when unknown.
    #[inline]
    pub fn times(&self, ctx: &RecordOrigin) -> (u64, u64) {
        let [start, end] = self.template.time_sources();
        let (start, end) = (self.time(start, ctx), self.time(end, ctx));
        if self.template.duration() == Duration::None {
            return (start, end);
        }
        self.complete_with_duration(start, end)
    }

    /// [`Record::times`] without the duration (161/162) step: what [`Record::flow_raw`] uses.
    #[inline(always)]
    fn raw_times(&self, ctx: &RecordOrigin) -> (u64, u64) {
        let [start, end] = self.template.time_sources();
        (self.time(start, ctx), self.time(end, ctx))
    }

    /// The time a template lacks, from its duration field (161/162); kept out of line so
    /// that the common templates' hot loop stays small.
    #[inline(never)]
    fn complete_with_duration(&self, start: u64, end: u64) -> (u64, u64) {
        let ms = |slot: SlotId, micros: bool| {
            let d = self.slot_uint(slot).unwrap_or(0);
            if micros { d / 1000 } else { d }
        };
        match self.template.duration() {
            Duration::None => (start, end),
            Duration::GivesStart { .. } if end == 0 => (0, 0),
            Duration::GivesStart { slot, micros } => (end.saturating_sub(ms(slot, micros)), end),
            Duration::GivesEnd { .. } if start == 0 => (0, 0),
            Duration::GivesEnd { slot, micros } => (start, start.saturating_add(ms(slot, micros))),
        }
    }

    #[inline(always)]
    fn time(&self, source: TimeSource, ctx: &RecordOrigin) -> u64 {
        // Fast path: one load (a Wide slot reads as 0 where `slot_uint` gives `None`).
        if let Some(w) = self.template.wide() {
            let rd = |s: SlotId| w[s as usize].read(self.data);
            match (source, ctx.header.sys_uptime_ms) {
                (TimeSource::None, _) => return 0,
                (TimeSource::Millis(s), _) => return rd(s),
                (TimeSource::Secs(s), _) => return rd(s).saturating_mul(1000),
                (TimeSource::Ntp(s), _) => return ntp_to_unix_ms(rd(s)),
                (TimeSource::DeltaMicros(s), _) => {
                    return ctx.export_ms.saturating_sub(rd(s) / 1000);
                }
                (TimeSource::Uptime(s), Some(uptime)) => {
                    return uptime_to_unix_ms(ctx.export_ms, uptime, rd(s) as u32);
                }
                // IPFIX: relative to systemInitTimeMilliseconds learned from options data.
                (TimeSource::Uptime(s), None) => {
                    return ctx
                        .system_init_ms
                        .map_or(0, |init| init.saturating_add(rd(s)));
                }
                _ => {}
            }
        }
        match source {
            TimeSource::None => 0,
            TimeSource::Millis(s) => self.slot_uint(s).unwrap_or(0),
            TimeSource::Secs(s) => self.slot_uint(s).unwrap_or(0).saturating_mul(1000),
            TimeSource::Ntp(s) => self.slot_uint(s).map_or(0, ntp_to_unix_ms),
            TimeSource::DeltaMicros(s) => self
                .slot_uint(s)
                .map_or(0, |d| ctx.export_ms.saturating_sub(d / 1000)),
            TimeSource::Uptime(s) => match (
                self.slot_uint(s),
                ctx.header.sys_uptime_ms,
                ctx.system_init_ms,
            ) {
                (Some(t), Some(uptime), _) => uptime_to_unix_ms(ctx.export_ms, uptime, t as u32),
                // IPFIX: relative to systemInitTimeMilliseconds learned from options data.
                (Some(t), None, Some(init)) => init.saturating_add(t),
                _ => 0,
            },
            TimeSource::InitPlusUptime(s) => {
                match (self.slot_uint(SlotId::SystemInitMillis), self.slot_uint(s)) {
                    (Some(init), Some(t)) => init.saturating_add(t),
                    _ => 0,
                }
            }
        }
    }

    /// The normalized flow of this record, or `None` when it is an options record or carries no
    /// source and destination address (such records are not flows; count them).
    ///
    /// Its `sampling_interval` is the context's (the exporter's or domain's rate). A record that
    /// names its sampler (FLOW_SAMPLER_ID 48, selectorId 302) gets that sampler's rate through
    /// [`DataSet::flow`](crate::DataSet::flow) and [`DecodedDatagram::flows`](crate::DecodedDatagram::flows).
    #[inline(always)]
    pub fn flow(&self, ctx: &RecordOrigin) -> Option<Flow> {
        let mut f = self.flow_raw(ctx)?;
        if self.template.duration() != Duration::None {
            (f.start_ms, f.end_ms) = self.complete_with_duration(f.start_ms, f.end_ms);
        }
        Some(f)
    }

    /// [`Record::flow`] for templates without a duration field (161/162), which the caller
    /// checked once per set: the hot loop of `Flows::fold`.
    #[inline(always)]
    pub(crate) fn flow_raw(&self, ctx: &RecordOrigin) -> Option<Flow> {
        if self.template.is_v5()
            && let Some(r) = self.data.first_chunk::<48>()
        {
            return Some(V5Record(r).flow(ctx));
        }
        if self.is_options() {
            return None;
        }
        let src_addr = self.src_addr()?;
        let dst_addr = self.dst_addr()?;
        let (start_ms, end_ms) = self.raw_times(ctx);
        let sampling_interval = ctx.sampling_interval.max(1);
        if let Some(w) = self.template.wide() {
            // Fast path: one load per field, absent fields read as 0.
            let rec = self.data;
            let rd = |s: SlotId| w[s as usize].read(rec);
            return Some(Flow {
                ts_micros: ctx.ts_micros,
                exporter: ctx.exporter,
                input_if: rd(SlotId::InputIf) as u32,
                output_if: rd(SlotId::OutputIf) as u32,
                direction: rd(SlotId::Direction) as u8,
                protocol: rd(SlotId::Protocol) as u8,
                src_addr,
                dst_addr,
                src_port: rd(SlotId::SrcPort) as u16,
                dst_port: rd(SlotId::DstPort) as u16,
                bytes: rd(SlotId::Bytes),
                packets: rd(SlotId::Packets),
                tcp_flags: (rd(SlotId::TcpFlags) & 0xff) as u8,
                sampling_interval,
                start_ms,
                end_ms,
            });
        }
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
            sampling_interval,
            start_ms,
            end_ms,
        })
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
