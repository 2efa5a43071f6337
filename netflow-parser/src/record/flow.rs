//! What a record becomes: its normalized [`Flow`], and for a biflow record (RFC 5103) the
//! reverse direction's flow too.

use super::Record;
use crate::flow::Flow;
use crate::header::RecordOrigin;
use crate::template::{Duration, SlotId, TimeSource};
use crate::time::{ntp_to_unix_ms, uptime_to_unix_ms};
use crate::v5::V5Record;

impl<'a> Record<'a> {
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
        complete(self.template.duration(), start, end, |s| self.slot_uint(s))
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
        // The same as `time_from(source, ctx, |s| self.slot_uint(s))`, spelled out: through
        // the closure the realistic v9 loop took 280 more instructions a packet (callgrind).
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
    /// source and destination address (such records are not flows; count them). For a biflow
    /// record it is the forward half, whatever its counters: [`Record::flows`] gives the halves
    /// that carry traffic, [`Record::reverse_flow`] the reverse one.
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
        if self.template.wide().is_some() {
            return self.flow_fixed(ctx);
        }
        let sampling_interval = ctx.sampling_interval.max(1);
        let src_addr = self.src_addr()?;
        let dst_addr = self.dst_addr()?;
        let (start_ms, end_ms) = self.raw_times(ctx);
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

    /// [`Record::flow_raw`] for a template whose slots all sit at fixed offsets
    /// ([`Template::wide`](crate::template::Template) is `Some`; the caller checked): one load
    /// per field, absent fields read as 0, the times through the general reader.
    #[inline(always)]
    pub(crate) fn flow_fixed(&self, ctx: &RecordOrigin) -> Option<Flow> {
        let rec = self.data;
        let w = self.template.wide()?;
        let rd = |s: SlotId| w[s as usize].read(rec);
        let [src, dst] = self.template.addrs();
        let (src_addr, dst_addr) = (src.read(rec)?, dst.read(rec)?);
        let (start_ms, end_ms) = self.raw_times(ctx);
        Some(Flow {
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
            sampling_interval: ctx.sampling_interval.max(1),
            start_ms,
            end_ms,
        })
    }

    /// The flows of this record, in order: none for an options record or one without
    /// addresses; one for a plain record ([`Record::flow`]); for a biflow record (RFC 5103,
    /// [`Template::is_biflow`](crate::template::Template::is_biflow)) the forward half and the
    /// reverse one ([`Record::reverse_flow`]), each when it carries traffic (bytes or packets
    /// not zero), and the forward one alone when neither does.
    ///
    /// A biflow record is still one data record: IPFIX sequence numbers count it once
    /// ([`DecodedDatagram::data_records`](crate::DecodedDatagram::data_records)).
    #[inline]
    pub fn flows(&self, ctx: &RecordOrigin) -> RecordFlows {
        match self.flow(ctx) {
            Some(f) => self.halves(f, ctx),
            None => RecordFlows::default(),
        }
    }

    /// The reverse half of a biflow record: the forward flow with addresses, ports and
    /// interfaces swapped, the other direction, and the reverse counters and TCP flags. Where
    /// the record has them, reverse interfaces, direction and times (reverse IEs 10, 14, 61,
    /// 21/22, 150..=162) are read instead; times it lacks are the forward ones. `None` for a
    /// record that is not a biflow one, is not a flow, or whose reverse bytes and packets are
    /// both zero (no traffic that way). Its sampling interval is the forward half's.
    #[inline]
    pub fn reverse_flow(&self, ctx: &RecordOrigin) -> Option<Flow> {
        self.template.reverse()?;
        self.reverse_of(&self.flow(ctx)?, ctx)
    }

    /// The halves of a record whose forward flow (sampling rate settled) is `forward`.
    #[inline]
    pub(crate) fn halves(&self, forward: Flow, ctx: &RecordOrigin) -> RecordFlows {
        match self.reverse_of(&forward, ctx) {
            None => RecordFlows::one(forward),
            Some(rev) if forward.bytes == 0 && forward.packets == 0 => RecordFlows::one(rev),
            Some(rev) => RecordFlows {
                first: Some(forward),
                second: Some(rev),
            },
        }
    }

    /// [`Record::reverse_flow`] from the forward half.
    #[inline]
    fn reverse_of(&self, fwd: &Flow, ctx: &RecordOrigin) -> Option<Flow> {
        let rev = self.template.reverse()?;
        let rd = |s: SlotId| self.template.reverse_uint(rev, self.data, s);
        let (bytes, packets) = (
            rd(SlotId::Bytes).unwrap_or(0),
            rd(SlotId::Packets).unwrap_or(0),
        );
        if bytes == 0 && packets == 0 {
            return None;
        }
        let [start, end] = rev.time_sources();
        let (mut start_ms, mut end_ms) = (time_from(start, ctx, rd), time_from(end, ctx, rd));
        if rev.duration() != Duration::None {
            (start_ms, end_ms) = complete(rev.duration(), start_ms, end_ms, rd);
        }
        // What the reverse fields do not give is the biflow's.
        if start == TimeSource::None && !matches!(rev.duration(), Duration::GivesStart { .. }) {
            start_ms = fwd.start_ms;
        }
        if end == TimeSource::None && !matches!(rev.duration(), Duration::GivesEnd { .. }) {
            end_ms = fwd.end_ms;
        }
        let other_way = if fwd.direction == Flow::EGRESS {
            Flow::INGRESS
        } else {
            Flow::EGRESS
        };
        Some(Flow {
            src_addr: fwd.dst_addr,
            dst_addr: fwd.src_addr,
            src_port: fwd.dst_port,
            dst_port: fwd.src_port,
            input_if: rd(SlotId::InputIf).map_or(fwd.output_if, |v| v as u32),
            output_if: rd(SlotId::OutputIf).map_or(fwd.input_if, |v| v as u32),
            direction: rd(SlotId::Direction).map_or(other_way, |v| v as u8),
            bytes,
            packets,
            tcp_flags: rd(SlotId::TcpFlags).map_or(0, |v| (v & 0xff) as u8),
            start_ms,
            end_ms,
            ..*fwd
        })
    }
}

/// A flow time from its source, `uint` reading a slot of the record (0 when unknown): the
/// reverse half's reader (the forward one, [`Record::time`], has a fast path of its own).
#[inline(always)]
fn time_from(source: TimeSource, ctx: &RecordOrigin, uint: impl Fn(SlotId) -> Option<u64>) -> u64 {
    match source {
        TimeSource::None => 0,
        TimeSource::Millis(s) => uint(s).unwrap_or(0),
        TimeSource::Secs(s) => uint(s).unwrap_or(0).saturating_mul(1000),
        TimeSource::Ntp(s) => uint(s).map_or(0, ntp_to_unix_ms),
        TimeSource::DeltaMicros(s) => uint(s).map_or(0, |d| ctx.export_ms.saturating_sub(d / 1000)),
        TimeSource::Uptime(s) => match (uint(s), ctx.header.sys_uptime_ms, ctx.system_init_ms) {
            (Some(t), Some(uptime), _) => uptime_to_unix_ms(ctx.export_ms, uptime, t as u32),
            // IPFIX: relative to systemInitTimeMilliseconds learned from options data.
            (Some(t), None, Some(init)) => init.saturating_add(t),
            _ => 0,
        },
        TimeSource::InitPlusUptime(s) => match (uint(SlotId::SystemInitMillis), uint(s)) {
            (Some(init), Some(t)) => init.saturating_add(t),
            _ => 0,
        },
    }
}

/// The time a direction lacks, from its duration field (161/162), `uint` reading its slots.
#[inline(always)]
fn complete(
    duration: Duration,
    start: u64,
    end: u64,
    uint: impl Fn(SlotId) -> Option<u64>,
) -> (u64, u64) {
    let ms = |slot: SlotId, micros: bool| {
        let d = uint(slot).unwrap_or(0);
        if micros { d / 1000 } else { d }
    };
    match duration {
        Duration::None => (start, end),
        Duration::GivesStart { .. } if end == 0 => (0, 0),
        Duration::GivesStart { slot, micros } => (end.saturating_sub(ms(slot, micros)), end),
        Duration::GivesEnd { .. } if start == 0 => (0, 0),
        Duration::GivesEnd { slot, micros } => (start, start.saturating_add(ms(slot, micros))),
    }
}

/// The flows of one record, in order (at most two); see [`Record::flows`].
#[derive(Debug, Clone, Default)]
pub struct RecordFlows {
    first: Option<Flow>,
    second: Option<Flow>,
}

impl RecordFlows {
    #[inline]
    fn one(f: Flow) -> RecordFlows {
        RecordFlows {
            first: Some(f),
            second: None,
        }
    }
}

impl Iterator for RecordFlows {
    type Item = Flow;

    #[inline]
    fn next(&mut self) -> Option<Flow> {
        self.first.take().or_else(|| self.second.take())
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.first.is_some()) + usize::from(self.second.is_some());
        (n, Some(n))
    }
}

impl ExactSizeIterator for RecordFlows {}
impl core::iter::FusedIterator for RecordFlows {}
