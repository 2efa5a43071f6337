//! Slots: where the fields the normalized flow reads sit in a record, decided once when a
//! template is compiled, and the readers that use them. A record is then read without looking
//! at a field type: each value is one load at a known offset.

use super::Template;
use crate::field::FieldId;
use crate::record::Windows;
use crate::wire::{be_uint, uint_at};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// responderOctets (232): the reverse direction's bytes of a Cisco ASA NSEL biflow; read
    /// by the reverse half only.
    BytesResponder,
    /// responderPackets (299), likewise.
    PacketsResponder,
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

pub(crate) const SLOT_COUNT: usize = SlotId::DurationMicros as usize + 1;

impl SlotId {
    /// Which slot an IANA field fills, if it has the length the slot can read losslessly.
    pub(super) fn for_field(id: FieldId, len: u16) -> Option<SlotId> {
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
            FieldId::RESPONDER_OCTETS => (SlotId::BytesResponder, len <= 8),
            FieldId::RESPONDER_PACKETS => (SlotId::PacketsResponder, len <= 8),
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
    pub(super) const NONE: Slot = Slot {
        index: Slot::ABSENT,
        at: 0,
        len: 0,
    };
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
    pub(super) fn of(slot: Slot) -> Wide {
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

    /// The slot's value in `rec`, a record of a template whose slots all lie in its first
    /// `min_record_len` (at least 8) bytes: so `load_at <= rec.len() - 8` always holds, and
    /// the clamp below (a `cmov`, not a branch) only lets the compiler drop the bounds check of
    /// each read. A record shorter than 8 bytes reads as 0.
    #[inline(always)]
    pub fn read(self, rec: &[u8]) -> u64 {
        let Some(last) = rec.len().checked_sub(8) else {
            return 0;
        };
        let at = usize::from(self.load_at).min(last);
        match rec[at..].first_chunk::<8>() {
            Some(b) => (u64::from_be_bytes(*b) >> self.shift) & self.mask,
            None => 0,
        }
    }
}

/// Where a record's source or destination address sits when every slot is at a fixed offset:
/// the IPv4 field if the template has one, else the IPv6 one (what [`Template::slot_array`]
/// finds, decided once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrAt {
    None,
    V4(u16),
    V6(u16),
}

impl AddrAt {
    pub(super) fn of(v4: Slot, v6: Slot) -> AddrAt {
        if v4.index != Slot::ABSENT && v4.len == 4 {
            AddrAt::V4(v4.at)
        } else if v6.index != Slot::ABSENT && v6.len == 16 {
            AddrAt::V6(v6.at)
        } else {
            AddrAt::None
        }
    }

    /// The address in `rec`, a record at least `min_record_len` long (which holds the field):
    /// as in [`Wide::read`], the clamp never moves the read and only drops the bounds check.
    #[inline(always)]
    pub fn read(self, rec: &[u8]) -> Option<IpAddr> {
        match self {
            AddrAt::None => None,
            AddrAt::V4(at) => {
                let at = usize::from(at).min(rec.len().checked_sub(4)?);
                let b = rec[at..].first_chunk::<4>()?;
                Some(IpAddr::V4(Ipv4Addr::from(*b)))
            }
            AddrAt::V6(at) => {
                let at = usize::from(at).min(rec.len().checked_sub(16)?);
                let b = rec[at..].first_chunk::<16>()?;
                Some(IpAddr::V6(Ipv6Addr::from(*b)))
            }
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

/// The counters a template's bytes and packets come from when it lacks the delta counts (1/2):
/// running totals (85/86), Cisco ASA NSEL / IPFIX initiator counts (231/298), egress-only
/// exports (23/24), in that order.
pub(super) const FORWARD_COUNTERS: [(SlotId, [SlotId; 3]); 2] = [
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
];

/// Fills each counter slot the template lacks from the first fallback it has.
pub(super) fn fall_back(slots: &mut [Slot; SLOT_COUNT], table: &[(SlotId, [SlotId; 3]); 2]) {
    for (to, from) in table {
        if slots[*to as usize].index == Slot::ABSENT
            && let Some(&f) = from
                .iter()
                .find(|&&f| slots[f as usize].index != Slot::ABSENT)
        {
            slots[*to as usize] = slots[f as usize];
        }
    }
}

/// What the slots of one direction decide: whether every present slot lies before the first
/// variable-length field (read at fixed offsets), where the flow start and end come from, and
/// the duration field that completes a missing one.
pub(super) fn choose(
    slots: &[Slot; SLOT_COUNT],
    first_var: usize,
) -> (bool, [TimeSource; 2], Duration) {
    let fixed = slots
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
    (fixed, times, duration)
}

impl Template {
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

    /// The layout for reading this template's sets through windows, if it has one.
    #[inline(always)]
    pub(crate) fn windows(&self) -> Option<&Windows> {
        self.windows.as_ref()
    }

    /// Where the source and destination addresses sit; meaningful when [`Template::wide`] is
    /// `Some` (every slot at a fixed offset).
    #[inline(always)]
    pub(crate) fn addrs(&self) -> [AddrAt; 2] {
        self.addrs
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
        self.slot_field(rec, self.slots[s as usize], self.fixed_slots)
    }

    /// The bytes of the field of `slot` in `rec` (`fixed`: every slot of its table lies before
    /// the first variable-length field).
    #[inline(always)]
    pub(super) fn slot_field<'r>(
        &self,
        rec: &'r [u8],
        slot: Slot,
        fixed: bool,
    ) -> Option<&'r [u8]> {
        if fixed {
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
}
