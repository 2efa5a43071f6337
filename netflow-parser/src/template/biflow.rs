//! Biflows (RFC 5103): one record carries both directions of a conversation. The forward
//! direction's fields are the usual IANA IEs; the reverse direction's are the same IEs with the
//! reverse private enterprise number 29305 (RFC 5103 §6, record representation), in the same
//! record. Cisco ASA NSEL
//! does the same with IANA ids: responderOctets/responderPackets (232/299) beside the
//! initiator counts (231/298).
//!
//! A template with a reverse byte or packet counter gets a second slot table, for the reverse
//! direction: its counters, TCP flags, interfaces, direction and times, where the record has
//! them. The flow key (addresses, ports, protocol) is shared by both directions (the reverse
//! half is the forward key swapped) and reverse IEs of it are ignored, as are reverse IEs of
//! what describes the record as a whole (biflowDirection 239, which says which end initiated;
//! the sampling and system-init fields).

use super::Template;
use super::slots::{self, Duration, SLOT_COUNT, Slot, SlotId, TimeSource};
use crate::wire::{be_uint, uint_at};

/// The reverse direction's counters when its reverse delta counts (29305/1, 29305/2) are
/// absent: reverse totals (29305/85, 29305/86), NSEL responder counts (232/299), reverse
/// egress-only counts (29305/23, 29305/24).
const REVERSE_COUNTERS: [(SlotId, [SlotId; 3]); 2] = [
    (
        SlotId::Bytes,
        [SlotId::BytesTotal, SlotId::BytesResponder, SlotId::BytesOut],
    ),
    (
        SlotId::Packets,
        [
            SlotId::PacketsTotal,
            SlotId::PacketsResponder,
            SlotId::PacketsOut,
        ],
    ),
];

impl SlotId {
    /// Whether a reverse IE (enterprise 29305) of this slot's field is read for the reverse
    /// half: counters, interfaces, direction, TCP flags and times; not the flow key nor what
    /// describes the record as a whole.
    pub(super) fn is_reversible(self) -> bool {
        use SlotId::*;
        matches!(
            self,
            Bytes
                | Packets
                | BytesTotal
                | PacketsTotal
                | BytesOut
                | PacketsOut
                | InputIf
                | OutputIf
                | Direction
                | TcpFlags
                | FirstSwitched
                | LastSwitched
                | StartSecs
                | EndSecs
                | StartMillis
                | EndMillis
                | StartMicros
                | EndMicros
                | StartNanos
                | EndNanos
                | StartDeltaMicros
                | EndDeltaMicros
                | DurationMillis
                | DurationMicros
        )
    }
}

/// The reverse direction of a biflow template: where its fields sit and where its times come
/// from. A time it does not give is the forward one (softflowd `-b` exports one start and end
/// for both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reverse {
    slots: [Slot; SLOT_COUNT],
    /// Every present slot lies before the first variable-length field.
    fixed: bool,
    times: [TimeSource; 2],
    duration: Duration,
}

impl Reverse {
    /// The reverse table of a template whose reverse fields filled `slots`; `None` without a
    /// reverse byte or packet counter (not a biflow template: a reverse flag alone carries no
    /// traffic).
    pub(super) fn compile(
        mut slots: [Slot; SLOT_COUNT],
        forward: &[Slot; SLOT_COUNT],
        first_var: usize,
    ) -> Option<Box<Reverse>> {
        slots::fall_back(&mut slots, &REVERSE_COUNTERS);
        let present = |s: SlotId| slots[s as usize].index != Slot::ABSENT;
        if !present(SlotId::Bytes) && !present(SlotId::Packets) {
            return None;
        }
        // Reverse sysUptime times are relative to the same system init time.
        let init = SlotId::SystemInitMillis as usize;
        slots[init] = forward[init];
        let (fixed, times, duration) = slots::choose(&slots, first_var);
        Some(Box::new(Reverse {
            slots,
            fixed,
            times,
            duration,
        }))
    }

    /// Where the reverse start and end come from (`TimeSource::None`: the forward one).
    #[inline]
    pub(crate) fn time_sources(&self) -> [TimeSource; 2] {
        self.times
    }

    /// The reverse duration field that completes a missing reverse start or end.
    #[inline]
    pub(crate) fn duration(&self) -> Duration {
        self.duration
    }
}

impl Template {
    /// The reverse direction's slots, for a biflow template.
    #[inline(always)]
    pub(crate) fn reverse(&self) -> Option<&Reverse> {
        self.reverse.as_deref()
    }

    /// Whether records of this template are biflows (RFC 5103): they carry the reverse
    /// direction's byte or packet counter, as reverse IEs (enterprise 29305) or, for Cisco
    /// ASA NSEL, as responder counts (232/299). Their records can yield two flows; see
    /// [`Record::flows`](crate::Record::flows).
    #[inline]
    pub fn is_biflow(&self) -> bool {
        self.reverse.is_some()
    }

    /// A reverse slot of `rev` (this template's) in `rec` as an unsigned integer.
    #[inline]
    pub(crate) fn reverse_uint(&self, rev: &Reverse, rec: &[u8], s: SlotId) -> Option<u64> {
        let slot = rev.slots[s as usize];
        if rev.fixed {
            return uint_at(rec, usize::from(slot.at), slot.len);
        }
        self.slot_field(rec, slot, false).and_then(be_uint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{FieldId, FieldSpec};
    use crate::template::TemplateKind;

    fn spec(id: u16, len: u16) -> FieldSpec {
        FieldSpec::new(FieldId(id), len)
    }

    fn rev(id: u16, len: u16) -> FieldSpec {
        FieldSpec::reverse(FieldId(id), len)
    }

    fn compile(fields: &[FieldSpec]) -> Template {
        Template::compile(256, TemplateKind::Data, fields).unwrap()
    }

    #[test]
    fn reverse_counters_make_a_biflow_template() {
        // softflowd -b: forward IEs, then reverse octets, packets, TOS and TCP flags.
        let t = compile(&[
            spec(8, 4),
            spec(12, 4),
            spec(1, 4),
            spec(2, 4),
            spec(6, 1),
            rev(1, 4),
            rev(2, 4),
            rev(5, 1),
            rev(6, 1),
        ]);
        assert!(t.is_biflow());
        let r = t.reverse().unwrap();
        let rec = [
            10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0, 52, 0, 0, 0, 1, 2, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0x14,
        ];
        let rd = |s| t.reverse_uint(r, &rec, s);
        assert_eq!(
            (rd(SlotId::Bytes), rd(SlotId::Packets), rd(SlotId::TcpFlags)),
            (Some(40), Some(1), Some(0x14))
        );
        assert_eq!(rd(SlotId::InputIf), None);
        // Forward reads are untouched by the reverse fields.
        assert_eq!(t.slot_uint(&rec, SlotId::Bytes), Some(52));
        assert_eq!(r.time_sources(), [TimeSource::None, TimeSource::None]);
    }

    #[test]
    fn what_is_not_a_biflow_template() {
        // No reverse counter: reverse flags alone, another enterprise, reverse keys.
        for fields in [
            vec![spec(8, 4), spec(12, 4), spec(1, 4), rev(6, 1)],
            vec![
                spec(8, 4),
                spec(12, 4),
                FieldSpec {
                    id: FieldId(1),
                    len: 4,
                    enterprise: 9,
                },
            ],
            vec![spec(8, 4), spec(12, 4), rev(8, 4), rev(7, 2), rev(4, 1)],
        ] {
            assert!(!compile(&fields).is_biflow(), "{fields:?}");
        }
        // A reverse IE does not fill the forward slot of its id.
        let t = compile(&[spec(8, 4), spec(12, 4), rev(1, 4)]);
        assert!(t.is_biflow());
        assert_eq!(t.slot(SlotId::Bytes).index, Slot::ABSENT);
    }

    #[test]
    fn nsel_responder_counts_are_the_reverse_counters() {
        let t = compile(&[
            spec(8, 4),
            spec(12, 4),
            spec(231, 4),
            spec(298, 4),
            spec(232, 8),
            spec(299, 4),
        ]);
        let r = t.reverse().unwrap();
        assert_eq!(
            (
                r.slots[SlotId::Bytes as usize].index,
                r.slots[SlotId::Packets as usize].index
            ),
            (4, 5)
        );
        assert_eq!(t.slot(SlotId::Bytes).index, 2);
        // Reverse delta counts win over responder counts.
        let t = compile(&[spec(8, 4), spec(12, 4), spec(232, 4), rev(1, 4)]);
        assert_eq!(t.reverse().unwrap().slots[SlotId::Bytes as usize].index, 3);
    }

    #[test]
    fn reverse_times_and_variable_length_records() {
        let t = compile(&[
            spec(8, 4),
            spec(12, 4),
            spec(152, 8),
            spec(153, 8),
            FieldSpec::new(FieldId(96), FieldSpec::VARIABLE),
            rev(1, 2),
            rev(153, 8),
            rev(10, 2),
        ]);
        let r = t.reverse().unwrap();
        assert_eq!(
            r.time_sources(),
            [TimeSource::None, TimeSource::Millis(SlotId::EndMillis)]
        );
        let mut rec = vec![10, 0, 0, 1, 10, 0, 0, 2];
        rec.extend_from_slice(&1000u64.to_be_bytes());
        rec.extend_from_slice(&2000u64.to_be_bytes());
        rec.extend_from_slice(&[3, b'a', b'b', b'c', 0x01, 0x00]);
        rec.extend_from_slice(&2500u64.to_be_bytes());
        rec.extend_from_slice(&[0, 7]);
        let rd = |s| t.reverse_uint(r, &rec, s);
        assert_eq!(
            (
                rd(SlotId::Bytes),
                rd(SlotId::EndMillis),
                rd(SlotId::InputIf)
            ),
            (Some(256), Some(2500), Some(7))
        );
        // A record cut inside the reverse fields reads them as absent.
        let cut = &rec[..rec.len() - 3];
        assert_eq!(t.reverse_uint(r, cut, SlotId::InputIf), None);
    }
}
