//! Templates: parsed once on arrival, compiled into a [`Template`] with precomputed offsets.
//!
//! Reading a data record never dispatches on field types: the fields the normalized flow needs
//! are looked up once, when the template is compiled, into fixed slots.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32};

pub use crate::cache::{TemplateCache, TemplateUpdate};
use crate::error::{DecodeError, TemplateProblem};
pub use crate::field::FieldSpec;
pub use crate::key::TemplateKey;

use crate::field::FieldId;
use crate::wire::{be_uint, offset_in, uint_at};

/// Whether a template describes flow records or options records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// A data template (v9 flowset id 0, IPFIX set id 2).
    Data,
    /// An options template (v9 flowset id 1, IPFIX set id 3): the first `scope_fields` fields
    /// are scope fields. In v9 their ids are scope types (1 system, 2 interface, 3 line card,
    /// 4 cache, 5 template), not field types.
    Options {
        /// Number of scope fields at the start of the field list.
        scope_fields: u16,
    },
}

/// The fields the normalized flow and sampling need, each given a fixed slot at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum SlotId {
    Src4,
    Dst4,
    Src6,
    Dst6,
    SrcPort,
    DstPort,
    Protocol,
    Bytes,
    Packets,
    BytesTotal,
    PacketsTotal,
    BytesInitiator,
    PacketsInitiator,
    BytesOut,
    PacketsOut,
    InputIf,
    OutputIf,
    Direction,
    TcpFlags,
    FirstSwitched,
    LastSwitched,
    StartSecs,
    EndSecs,
    StartMillis,
    EndMillis,
    StartMicros,
    EndMicros,
    StartNanos,
    EndNanos,
    SystemInitMillis,
    SamplingInterval,
    SamplerId,
    SamplerRandomInterval,
    SelectorId,
    SamplingPacketInterval,
    SamplingPacketSpace,
    StartDeltaMicros,
    EndDeltaMicros,
    DurationMillis,
    DurationMicros,
}

const SLOT_COUNT: usize = SlotId::DurationMicros as usize + 1;

impl SlotId {
    /// Which slot an IANA field fills, if it has the length the slot can read losslessly.
    fn for_field(id: FieldId, len: u16) -> Option<SlotId> {
        let (slot, ok) = match id {
            FieldId::IPV4_SRC_ADDR => (SlotId::Src4, len == 4),
            FieldId::IPV4_DST_ADDR => (SlotId::Dst4, len == 4),
            FieldId::IPV6_SRC_ADDR => (SlotId::Src6, len == 16),
            FieldId::IPV6_DST_ADDR => (SlotId::Dst6, len == 16),
            FieldId::L4_SRC_PORT => (SlotId::SrcPort, len <= 2),
            FieldId::L4_DST_PORT => (SlotId::DstPort, len <= 2),
            FieldId::PROTOCOL => (SlotId::Protocol, len == 1),
            FieldId::IN_BYTES => (SlotId::Bytes, len <= 8),
            FieldId::IN_PKTS => (SlotId::Packets, len <= 8),
            FieldId::IN_PERMANENT_BYTES => (SlotId::BytesTotal, len <= 8),
            FieldId::IN_PERMANENT_PKTS => (SlotId::PacketsTotal, len <= 8),
            FieldId::INITIATOR_OCTETS => (SlotId::BytesInitiator, len <= 8),
            FieldId::INITIATOR_PACKETS => (SlotId::PacketsInitiator, len <= 8),
            FieldId::OUT_BYTES => (SlotId::BytesOut, len <= 8),
            FieldId::OUT_PKTS => (SlotId::PacketsOut, len <= 8),
            FieldId::INPUT_SNMP => (SlotId::InputIf, len <= 4),
            FieldId::OUTPUT_SNMP => (SlotId::OutputIf, len <= 4),
            FieldId::DIRECTION => (SlotId::Direction, len == 1),
            FieldId::TCP_FLAGS => (SlotId::TcpFlags, len <= 2),
            FieldId::FIRST_SWITCHED => (SlotId::FirstSwitched, len <= 4),
            FieldId::LAST_SWITCHED => (SlotId::LastSwitched, len <= 4),
            FieldId::FLOW_START_SECONDS => (SlotId::StartSecs, len <= 4),
            FieldId::FLOW_END_SECONDS => (SlotId::EndSecs, len <= 4),
            FieldId::FLOW_START_MILLISECONDS => (SlotId::StartMillis, len <= 8),
            FieldId::FLOW_END_MILLISECONDS => (SlotId::EndMillis, len <= 8),
            FieldId::FLOW_START_MICROSECONDS => (SlotId::StartMicros, len == 8),
            FieldId::FLOW_END_MICROSECONDS => (SlotId::EndMicros, len == 8),
            FieldId::FLOW_START_NANOSECONDS => (SlotId::StartNanos, len == 8),
            FieldId::FLOW_END_NANOSECONDS => (SlotId::EndNanos, len == 8),
            FieldId::FLOW_START_DELTA_MICROSECONDS => (SlotId::StartDeltaMicros, len <= 4),
            FieldId::FLOW_END_DELTA_MICROSECONDS => (SlotId::EndDeltaMicros, len <= 4),
            FieldId::FLOW_DURATION_MILLISECONDS => (SlotId::DurationMillis, len <= 4),
            FieldId::FLOW_DURATION_MICROSECONDS => (SlotId::DurationMicros, len <= 4),
            FieldId::SYSTEM_INIT_TIME_MILLISECONDS => (SlotId::SystemInitMillis, len <= 8),
            FieldId::SAMPLING_INTERVAL => (SlotId::SamplingInterval, len <= 4),
            FieldId::FLOW_SAMPLER_ID => (SlotId::SamplerId, len <= 4),
            FieldId::FLOW_SAMPLER_RANDOM_INTERVAL => (SlotId::SamplerRandomInterval, len <= 4),
            FieldId::SELECTOR_ID => (SlotId::SelectorId, len <= 8),
            FieldId::SAMPLING_PACKET_INTERVAL => (SlotId::SamplingPacketInterval, len <= 4),
            FieldId::SAMPLING_PACKET_SPACE => (SlotId::SamplingPacketSpace, len <= 4),
            _ => return None,
        };
        ok.then_some(slot)
    }
}

/// Where a slot's field sits in a record. `index == Slot::ABSENT` when the template lacks it.
/// `at` is meaningful only for fields before the template's first variable-length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub index: u16,
    pub at: u16,
    pub len: u16,
}

impl Slot {
    pub const ABSENT: u16 = u16::MAX;
    const NONE: Slot = Slot {
        index: Slot::ABSENT,
        at: 0,
        len: 0,
    };
}

/// A compiled template: the field list, each fixed field's offset, the record length, and the
/// slots of the fields this crate reads by name.
///
/// Built once when a template arrives (see [`TemplateCache`]); reading
/// records through it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    id: u16,
    kind: TemplateKind,
    fields: Box<[FieldSpec]>,
    /// Offset of each field before `first_var`.
    offsets: Box<[u16]>,
    /// The definition as it was on the wire (field specs only), to recognize refreshes cheaply.
    raw: Box<[u8]>,
    /// Index of the first variable-length field, `fields.len()` when there is none.
    first_var: usize,
    /// Fixed record length, `None` when a field is variable-length.
    record_len: Option<u16>,
    /// Smallest possible record (variable-length fields counted as their 1-byte length prefix).
    min_len: u16,
    slots: [Slot; SLOT_COUNT],
    /// Every present slot lies before the first variable-length field: read at fixed offsets.
    fixed_slots: bool,
    /// Where flow start and end times come from, decided once.
    times: [TimeSource; 2],
    /// A duration field that completes a missing start or end time.
    duration: Duration,
    /// Branch-free readers for the integer slots, when every slot is at a fixed offset and
    /// every record is at least 8 bytes long (see [`Wide`]).
    wide: Option<[Wide; SLOT_COUNT]>,
    /// The static NetFlow v5 layout: records are read at constant offsets.
    v5: bool,
}

/// Reads an integer slot with one 8-byte load: `(be_u64(rec[load_at..+8]) >> shift) & mask`.
/// The load ends where the field ends (or starts at 0 for a field ending before byte 8, with a
/// shift); an absent field has mask 0 and reads as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wide {
    pub load_at: u16,
    pub shift: u8,
    pub mask: u64,
}

impl Wide {
    fn of(slot: Slot) -> Wide {
        if slot.index == Slot::ABSENT || slot.len == 0 || slot.len > 8 {
            return Wide {
                load_at: 0,
                shift: 0,
                mask: 0,
            };
        }
        let end = slot.at + slot.len;
        let mask = if slot.len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * slot.len)) - 1
        };
        if end >= 8 {
            Wide {
                load_at: end - 8,
                shift: 0,
                mask,
            }
        } else {
            Wide {
                load_at: 0,
                shift: (8 * (8 - end)) as u8,
                mask,
            }
        }
    }

    #[inline(always)]
    pub fn read(self, rec: &[u8]) -> u64 {
        match rec
            .get(usize::from(self.load_at)..)
            .and_then(|b| b.first_chunk::<8>())
        {
            Some(b) => (u64::from_be_bytes(*b) >> self.shift) & self.mask,
            None => 0,
        }
    }
}

/// Which field a flow time is read from, decided when the template is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeSource {
    None,
    /// Unix milliseconds.
    Millis(SlotId),
    /// Unix seconds.
    Secs(SlotId),
    /// NTP timestamp (µs or ns precision).
    Ntp(SlotId),
    /// sysUptime milliseconds, relative to the header (v5, v9).
    Uptime(SlotId),
    /// sysUptime milliseconds plus IPFIX systemInitTimeMilliseconds (160).
    InitPlusUptime(SlotId),
    /// Microseconds before the message's export time (IPFIX 158/159).
    DeltaMicros(SlotId),
}

/// A flow duration (IPFIX 161/162) that gives the one flow time the template lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duration {
    /// The template has both times, or neither, or no duration.
    None,
    /// Start = end - duration.
    GivesStart { slot: SlotId, micros: bool },
    /// End = start + duration.
    GivesEnd { slot: SlotId, micros: bool },
}

/// Wire encoding of a field list, which differs between v9 and IPFIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldEncoding {
    /// RFC 3954: type u16, length u16.
    V9,
    /// RFC 7011 §3.2: id u16 with the enterprise bit, length u16, PEN u32 when the bit is set.
    Ipfix,
}

impl FieldEncoding {
    fn field(self, i: &[u8]) -> IResult<&[u8], FieldSpec> {
        let (i, raw_id) = be_u16(i)?;
        let (i, len) = be_u16(i)?;
        match self {
            FieldEncoding::Ipfix if raw_id & 0x8000 != 0 => {
                let (i, enterprise) = be_u32(i)?;
                Ok((
                    i,
                    FieldSpec {
                        id: FieldId(raw_id & 0x7fff),
                        len,
                        enterprise,
                    },
                ))
            }
            _ => Ok((i, FieldSpec::new(FieldId(raw_id), len))),
        }
    }
}

/// A template record as framed on the wire: its id, kind and the raw field list. Nothing is
/// allocated until it is compiled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TemplateRecord<'a> {
    pub offset: usize,
    pub id: u16,
    pub kind: TemplateKind,
    pub field_count: u16,
    pub raw: &'a [u8],
    pub encoding: FieldEncoding,
}

impl<'a> TemplateRecord<'a> {
    pub fn specs(&self) -> FieldSpecs<'a> {
        FieldSpecs {
            rest: self.raw,
            left: self.field_count,
            encoding: self.encoding,
        }
    }
}

/// Iterator over the field specs of a raw field list.
#[derive(Debug, Clone)]
pub(crate) struct FieldSpecs<'a> {
    rest: &'a [u8],
    left: u16,
    encoding: FieldEncoding,
}

impl Iterator for FieldSpecs<'_> {
    type Item = FieldSpec;
    fn next(&mut self) -> Option<FieldSpec> {
        self.left = self.left.checked_sub(1)?;
        let (rest, f) = self.encoding.field(self.rest).ok()?;
        self.rest = rest;
        Some(f)
    }
}

/// Parses one v9 template record (RFC 3954 §5.2) from a template flowset body.
/// `whole` is the datagram, for offsets.
pub(crate) fn v9_template<'a>(
    whole: &'a [u8],
    i: &'a [u8],
    max_fields: usize,
) -> Result<(&'a [u8], TemplateRecord<'a>), DecodeError> {
    let offset = offset_in(whole, i);
    let bad = |id, why| DecodeError::BadTemplate {
        offset,
        template_id: id,
        why,
    };
    let (i, (id, count)) = (be_u16, be_u16)
        .parse(i)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| bad(0, TemplateProblem::Truncated))?;
    if id < 256 {
        return Err(bad(id, TemplateProblem::ReservedId));
    }
    if count == 0 {
        return Err(bad(id, TemplateProblem::NoFields));
    }
    if usize::from(count) > max_fields {
        return Err(bad(id, TemplateProblem::TooManyFields(usize::from(count))));
    }
    let (i, raw) = take(usize::from(count) * 4)
        .parse(i)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| bad(id, TemplateProblem::Truncated))?;
    let kind = TemplateKind::Data;
    Ok((
        i,
        TemplateRecord {
            offset,
            id,
            kind,
            field_count: count,
            raw,
            encoding: FieldEncoding::V9,
        },
    ))
}

/// Parses one v9 options template record (RFC 3954 §6.1): id, scope length and option length
/// in bytes, scope fields, option fields.
pub(crate) fn v9_options_template<'a>(
    whole: &'a [u8],
    i: &'a [u8],
    max_fields: usize,
) -> Result<(&'a [u8], TemplateRecord<'a>), DecodeError> {
    let offset = offset_in(whole, i);
    let bad = |id, why| DecodeError::BadTemplate {
        offset,
        template_id: id,
        why,
    };
    let (i, (id, scope_len, opt_len)) = (be_u16, be_u16, be_u16)
        .parse(i)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| bad(0, TemplateProblem::Truncated))?;
    if id < 256 {
        return Err(bad(id, TemplateProblem::ReservedId));
    }
    // No scope (length 0) is accepted, as the options of the exporter as a whole (RFC 3954
    // does not require one; IPFIX does, see `ipfix_template`); no fields at all is not.
    if scope_len % 4 != 0 || opt_len % 4 != 0 || (scope_len == 0 && opt_len == 0) {
        return Err(bad(id, TemplateProblem::BadScope));
    }
    let count = usize::from(scope_len / 4) + usize::from(opt_len / 4);
    if count > max_fields {
        return Err(bad(id, TemplateProblem::TooManyFields(count)));
    }
    let (i, raw) = take(count * 4)
        .parse(i)
        .map_err(|_: nom::Err<nom::error::Error<&[u8]>>| bad(id, TemplateProblem::Truncated))?;
    let kind = TemplateKind::Options {
        scope_fields: scope_len / 4,
    };
    // `count` <= 2 * 16383, fits u16.
    let field_count =
        u16::try_from(count).map_err(|_| bad(id, TemplateProblem::TooManyFields(count)))?;
    Ok((
        i,
        TemplateRecord {
            offset,
            id,
            kind,
            field_count,
            raw,
            encoding: FieldEncoding::V9,
        },
    ))
}

impl Template {
    /// Compiles a template from its field list. Refuses zero fields, zero-length fields and
    /// records longer than 65535 bytes.
    pub fn compile(
        id: u16,
        kind: TemplateKind,
        fields: &[FieldSpec],
    ) -> Result<Template, TemplateProblem> {
        let raw = encode_fields(fields);
        Template::build(id, kind, fields.iter().copied(), fields.len(), raw)
    }

    pub(crate) fn from_record(rec: &TemplateRecord<'_>) -> Result<Template, TemplateProblem> {
        Template::build(
            rec.id,
            rec.kind,
            rec.specs(),
            usize::from(rec.field_count),
            rec.raw.into(),
        )
    }

    fn build(
        id: u16,
        kind: TemplateKind,
        specs: impl Iterator<Item = FieldSpec>,
        count: usize,
        raw: Box<[u8]>,
    ) -> Result<Template, TemplateProblem> {
        let fields: Box<[FieldSpec]> = specs.collect();
        if fields.len() != count {
            return Err(TemplateProblem::Truncated);
        }
        if fields.is_empty() {
            return Err(TemplateProblem::NoFields);
        }
        let scope = match kind {
            TemplateKind::Data => 0,
            TemplateKind::Options { scope_fields } => usize::from(scope_fields),
        };
        if scope > fields.len() {
            return Err(TemplateProblem::BadScope);
        }
        let mut offsets = Vec::with_capacity(fields.len());
        let mut slots = [Slot::NONE; SLOT_COUNT];
        let mut at: u32 = 0;
        let mut min_len: u32 = 0;
        let mut first_var = fields.len();
        for (index, f) in fields.iter().enumerate() {
            if f.len == 0 {
                return Err(TemplateProblem::ZeroLengthField(f.id.0));
            }
            if f.is_variable() {
                first_var = first_var.min(index);
                min_len += 1;
            } else {
                min_len += u32::from(f.len);
            }
            if first_var == fields.len() {
                offsets.push(u16::try_from(at).map_err(|_| TemplateProblem::RecordTooLong)?);
                at += u32::from(f.len);
            }
            if min_len > u32::from(u16::MAX) {
                return Err(TemplateProblem::RecordTooLong);
            }
            if index < scope || f.enterprise != 0 || f.is_variable() {
                continue;
            }
            if let Some(s) = SlotId::for_field(f.id, f.len) {
                let slot = &mut slots[s as usize];
                if slot.index == Slot::ABSENT {
                    // index < fields.len() <= max_fields (u16-bounded by the wire format).
                    let index = u16::try_from(index)
                        .map_err(|_| TemplateProblem::TooManyFields(fields.len()))?;
                    let at = offsets.get(usize::from(index)).copied().unwrap_or(0);
                    *slot = Slot {
                        index,
                        at,
                        len: f.len,
                    };
                }
            }
        }
        let record_len = if first_var == fields.len() {
            Some(u16::try_from(at).map_err(|_| TemplateProblem::RecordTooLong)?)
        } else {
            None
        };
        let min_len = u16::try_from(min_len).map_err(|_| TemplateProblem::RecordTooLong)?;
        // The normalized counters come from the first of these the template has: delta counts
        // (1/2), running totals (85/86), Cisco ASA NSEL / IPFIX initiator counts (231/298),
        // egress-only exports (23/24).
        for (to, from) in [
            (
                SlotId::Bytes,
                [SlotId::BytesTotal, SlotId::BytesInitiator, SlotId::BytesOut],
            ),
            (
                SlotId::Packets,
                [
                    SlotId::PacketsTotal,
                    SlotId::PacketsInitiator,
                    SlotId::PacketsOut,
                ],
            ),
        ] {
            if slots[to as usize].index == Slot::ABSENT
                && let Some(&f) = from
                    .iter()
                    .find(|&&f| slots[f as usize].index != Slot::ABSENT)
            {
                slots[to as usize] = slots[f as usize];
            }
        }
        let fixed_slots = slots
            .iter()
            .all(|s| s.index == Slot::ABSENT || usize::from(s.index) < first_var);
        let has = |s: SlotId| slots[s as usize].index != Slot::ABSENT;
        let time = |ms, secs, us, ns, delta, up| {
            if has(ms) {
                TimeSource::Millis(ms)
            } else if has(secs) {
                TimeSource::Secs(secs)
            } else if has(us) {
                TimeSource::Ntp(us)
            } else if has(ns) {
                TimeSource::Ntp(ns)
            } else if has(delta) {
                TimeSource::DeltaMicros(delta)
            } else if has(up) && has(SlotId::SystemInitMillis) {
                TimeSource::InitPlusUptime(up)
            } else if has(up) {
                TimeSource::Uptime(up)
            } else {
                TimeSource::None
            }
        };
        let times = [
            time(
                SlotId::StartMillis,
                SlotId::StartSecs,
                SlotId::StartMicros,
                SlotId::StartNanos,
                SlotId::StartDeltaMicros,
                SlotId::FirstSwitched,
            ),
            time(
                SlotId::EndMillis,
                SlotId::EndSecs,
                SlotId::EndMicros,
                SlotId::EndNanos,
                SlotId::EndDeltaMicros,
                SlotId::LastSwitched,
            ),
        ];
        let duration = match (has(SlotId::DurationMillis), has(SlotId::DurationMicros)) {
            (true, _) => Some((SlotId::DurationMillis, false)),
            (false, true) => Some((SlotId::DurationMicros, true)),
            (false, false) => None,
        };
        let duration = match (times, duration) {
            ([TimeSource::None, TimeSource::None], _) | (_, None) => Duration::None,
            ([TimeSource::None, _], Some((slot, micros))) => Duration::GivesStart { slot, micros },
            ([_, TimeSource::None], Some((slot, micros))) => Duration::GivesEnd { slot, micros },
            _ => Duration::None,
        };
        let wide = (fixed_slots && min_len >= 8).then(|| slots.map(Wide::of));
        Ok(Template {
            id,
            kind,
            fields,
            offsets: offsets.into(),
            raw,
            first_var,
            record_len,
            min_len,
            slots,
            fixed_slots,
            times,
            duration,
            wide,
            v5: false,
        })
    }

    /// The template id (>= 256).
    #[inline]
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Data or options template.
    #[inline]
    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// The fields, in record order (scope fields first for options templates).
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    /// The record length when every field has a fixed length.
    #[inline]
    pub fn record_len(&self) -> Option<usize> {
        self.record_len.map(usize::from)
    }

    /// The smallest possible record length (each variable-length field counted as one byte).
    #[inline]
    pub fn min_record_len(&self) -> usize {
        usize::from(self.min_len)
    }

    pub(crate) fn raw(&self) -> &[u8] {
        &self.raw
    }

    #[cfg(test)]
    pub(crate) fn slot(&self, s: SlotId) -> Slot {
        self.slots[s as usize]
    }

    /// Fast path of [`Template::slot_bytes`] for integers.
    #[inline(always)]
    pub(crate) fn slot_uint(&self, rec: &[u8], s: SlotId) -> Option<u64> {
        if self.fixed_slots {
            let slot = self.slots[s as usize];
            return uint_at(rec, usize::from(slot.at), slot.len);
        }
        self.slot_bytes(rec, s).and_then(be_uint)
    }

    /// Fast path of [`Template::slot_bytes`] for fixed-size values (addresses).
    #[inline(always)]
    pub(crate) fn slot_array<'r, const N: usize>(
        &self,
        rec: &'r [u8],
        s: SlotId,
    ) -> Option<&'r [u8; N]> {
        let slot = self.slots[s as usize];
        if usize::from(slot.len) != N {
            return None;
        }
        if self.fixed_slots {
            return rec.get(usize::from(slot.at)..)?.first_chunk::<N>();
        }
        self.slot_bytes(rec, s)?.first_chunk::<N>()
    }

    /// Whether records name their sampler (FLOW_SAMPLER_ID 48 or selectorId 302).
    pub(crate) fn names_sampler(&self) -> bool {
        [SlotId::SamplerId, SlotId::SelectorId]
            .iter()
            .any(|&s| self.slots[s as usize].index != Slot::ABSENT)
    }

    /// Marks the static v5 template.
    pub(crate) fn into_v5(mut self) -> Template {
        self.v5 = true;
        self
    }

    #[inline(always)]
    pub(crate) fn is_v5(&self) -> bool {
        self.v5
    }

    #[inline(always)]
    pub(crate) fn wide(&self) -> Option<&[Wide; SLOT_COUNT]> {
        self.wide.as_ref()
    }

    #[inline]
    pub(crate) fn time_sources(&self) -> [TimeSource; 2] {
        self.times
    }

    #[inline(always)]
    pub(crate) fn duration(&self) -> Duration {
        self.duration
    }

    /// Whether a duration field (161/162) completes one of the flow times.
    #[inline]
    pub(crate) fn has_duration(&self) -> bool {
        self.duration != Duration::None
    }

    /// The bytes of a slot's field in `rec`, `None` when the template lacks the field.
    #[inline(always)]
    pub(crate) fn slot_bytes<'r>(&self, rec: &'r [u8], s: SlotId) -> Option<&'r [u8]> {
        let slot = self.slots[s as usize];
        if self.fixed_slots {
            // Absent slots are {at: 0, len: 0}: an empty slice, read as absent.
            let at = usize::from(slot.at);
            return rec
                .get(at..at + usize::from(slot.len))
                .filter(|b| !b.is_empty());
        }
        if usize::from(slot.index) < self.first_var {
            let at = usize::from(slot.at);
            rec.get(at..at + usize::from(slot.len))
        } else if slot.index == Slot::ABSENT {
            None
        } else {
            self.field_bytes(rec, usize::from(slot.index))
        }
    }

    /// The bytes of field `index` in `rec` (a record of this template), walking variable-length
    /// fields when needed. `None` if the record is too short.
    pub(crate) fn field_bytes<'r>(&self, rec: &'r [u8], index: usize) -> Option<&'r [u8]> {
        if index < self.first_var {
            let at = usize::from(*self.offsets.get(index)?);
            let len = usize::from(self.fields.get(index)?.len);
            return rec.get(at..at + len);
        }
        let mut at = usize::from(
            *self
                .offsets
                .get(self.first_var.checked_sub(1)?)
                .unwrap_or(&0),
        );
        if self.first_var > 0 {
            at += usize::from(self.fields.get(self.first_var - 1)?.len);
        }
        for (i, f) in self.fields.iter().enumerate().skip(self.first_var) {
            let (start, len) = if f.is_variable() {
                varlen(rec, at)?
            } else {
                (at, usize::from(f.len))
            };
            if i == index {
                return rec.get(start..start + len);
            }
            at = start + len;
        }
        None
    }

    /// Length of the variable-length record starting at `rec[0]`, `None` if it overruns `rec`.
    pub(crate) fn varlen_record_len(&self, rec: &[u8]) -> Option<usize> {
        let mut at = 0usize;
        for f in self.fields.iter() {
            let (start, len) = if f.is_variable() {
                varlen(rec, at)?
            } else {
                (at, usize::from(f.len))
            };
            at = start.checked_add(len)?;
        }
        (at <= rec.len()).then_some(at)
    }
}

/// RFC 7011 §7: a 1-byte length, or 255 followed by a 2-byte length. Returns (data start, len).
fn varlen(rec: &[u8], at: usize) -> Option<(usize, usize)> {
    match *rec.get(at)? {
        255 => {
            let b = rec.get(at + 1..at + 3)?;
            Some((at + 3, usize::from(u16::from_be_bytes([b[0], b[1]]))))
        }
        n => Some((at + 1, usize::from(n))),
    }
}

/// The wire encoding of a field list (IPFIX style, which equals v9's when no enterprise bit).
pub(crate) fn encode_fields(fields: &[FieldSpec]) -> Box<[u8]> {
    let mut raw = Vec::with_capacity(fields.len() * 4);
    for f in fields {
        if f.enterprise != 0 {
            raw.extend_from_slice(&(f.id.0 | 0x8000).to_be_bytes());
            raw.extend_from_slice(&f.len.to_be_bytes());
            raw.extend_from_slice(&f.enterprise.to_be_bytes());
        } else {
            raw.extend_from_slice(&f.id.0.to_be_bytes());
            raw.extend_from_slice(&f.len.to_be_bytes());
        }
    }
    raw.into()
}

/// Parses one IPFIX (options) template record (RFC 7011 §3.4.1/§3.4.2). A field count of 0 is a
/// template withdrawal (§8.1) and comes back with `field_count == 0`.
pub(crate) fn ipfix_template<'a>(
    whole: &'a [u8],
    i: &'a [u8],
    max_fields: usize,
    options: bool,
) -> Result<(&'a [u8], TemplateRecord<'a>), DecodeError> {
    let offset = offset_in(whole, i);
    let bad = |id, why| DecodeError::BadTemplate {
        offset,
        template_id: id,
        why,
    };
    let trunc =
        |id| move |_: nom::Err<nom::error::Error<&[u8]>>| bad(id, TemplateProblem::Truncated);
    let (i, (id, count)) = (be_u16, be_u16).parse(i).map_err(trunc(0))?;
    if id < 256 && !(count == 0 && (id == 2 || id == 3)) {
        return Err(bad(id, TemplateProblem::ReservedId));
    }
    if count == 0 {
        let rec = TemplateRecord {
            offset,
            id,
            kind: TemplateKind::Data,
            field_count: 0,
            raw: &[],
            encoding: FieldEncoding::Ipfix,
        };
        return Ok((i, rec));
    }
    let (i, scope) = if options {
        be_u16(i).map_err(trunc(id))?
    } else {
        (i, 0)
    };
    if options && (scope == 0 || scope > count) {
        return Err(bad(id, TemplateProblem::BadScope));
    }
    if usize::from(count) > max_fields {
        return Err(bad(id, TemplateProblem::TooManyFields(usize::from(count))));
    }
    let start = i;
    let mut rest = i;
    for _ in 0..count {
        let (r, _) = FieldEncoding::Ipfix.field(rest).map_err(trunc(id))?;
        rest = r;
    }
    let raw = &start[..start.len() - rest.len()];
    let kind = if options {
        TemplateKind::Options {
            scope_fields: scope,
        }
    } else {
        TemplateKind::Data
    };
    Ok((
        rest,
        TemplateRecord {
            offset,
            id,
            kind,
            field_count: count,
            raw,
            encoding: FieldEncoding::Ipfix,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16, len: u16) -> FieldSpec {
        FieldSpec::new(FieldId(id), len)
    }

    #[test]
    fn compile_offsets_and_slots() {
        let t = Template::compile(
            256,
            TemplateKind::Data,
            &[spec(8, 4), spec(12, 4), spec(999, 3), spec(1, 8)],
        )
        .unwrap();
        assert_eq!(t.record_len(), Some(19));
        assert_eq!(
            t.slot(SlotId::Bytes),
            Slot {
                index: 3,
                at: 11,
                len: 8
            }
        );
        assert_eq!(t.slot(SlotId::Packets).index, Slot::ABSENT);
        let rec = [10, 0, 0, 1, 10, 0, 0, 2, 9, 9, 9, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(t.field_bytes(&rec, 2), Some(&[9, 9, 9][..]));
    }

    #[test]
    fn test_refuses_zero_fields_and_zero_length() {
        assert_eq!(
            Template::compile(256, TemplateKind::Data, &[]),
            Err(TemplateProblem::NoFields)
        );
        assert_eq!(
            Template::compile(256, TemplateKind::Data, &[spec(8, 0)]),
            Err(TemplateProblem::ZeroLengthField(8))
        );
        assert_eq!(
            Template::compile(256, TemplateKind::Data, &[spec(1, 40000), spec(2, 40000)]),
            Err(TemplateProblem::RecordTooLong)
        );
    }

    #[test]
    fn counters_fall_back_to_totals_nsel_and_egress_fields() {
        // Cisco ASA NSEL: no IN_BYTES/IN_PKTS, initiator counts instead.
        let t = Template::compile(
            260,
            TemplateKind::Data,
            &[
                spec(8, 4),
                spec(12, 4),
                spec(231, 4),
                spec(298, 4),
                spec(232, 4),
            ],
        )
        .unwrap();
        assert_eq!(
            (t.slot(SlotId::Bytes).index, t.slot(SlotId::Packets).index),
            (2, 3)
        );
        // Delta counts win over anything else; totals over egress-only.
        let t = Template::compile(
            261,
            TemplateKind::Data,
            &[spec(23, 4), spec(85, 8), spec(1, 2), spec(24, 4)],
        )
        .unwrap();
        assert_eq!(
            (t.slot(SlotId::Bytes).index, t.slot(SlotId::Packets).index),
            (2, 3)
        );
    }

    #[test]
    fn scope_fields_are_not_slotted() {
        let t = Template::compile(
            257,
            TemplateKind::Options { scope_fields: 1 },
            &[spec(1, 4), spec(34, 4)],
        )
        .unwrap();
        assert_eq!(t.slot(SlotId::Bytes).index, Slot::ABSENT);
        assert_eq!(t.slot(SlotId::SamplingInterval).index, 1);
    }

    #[test]
    fn variable_length_fields() {
        let t = Template::compile(
            300,
            TemplateKind::Data,
            &[spec(8, 4), spec(96, FieldSpec::VARIABLE), spec(4, 1)],
        )
        .unwrap();
        assert_eq!(t.record_len(), None);
        assert_eq!(t.min_record_len(), 6);
        let rec = [1, 2, 3, 4, 3, b'a', b'b', b'c', 17, 0xee];
        assert_eq!(t.varlen_record_len(&rec), Some(9));
        assert_eq!(t.field_bytes(&rec, 1), Some(&b"abc"[..]));
        assert_eq!(t.field_bytes(&rec, 2), Some(&[17][..]));
        let long = [1, 2, 3, 4, 255, 0, 2, b'x', b'y', 6];
        assert_eq!(t.varlen_record_len(&long), Some(10));
        assert_eq!(t.varlen_record_len(&long[..9]), None);
    }
}
