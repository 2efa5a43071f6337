//! Templates: parsed once on arrival, compiled into a [`Template`] with precomputed offsets.
//!
//! Reading a data record never dispatches on field types: the fields the normalized flow needs
//! are looked up once, when the template is compiled, into fixed slots.
//!
//! Inside: `parse` frames template records on the wire, `slots` decides where each field the
//! normalized flow reads sits and reads it, `biflow` does the same for the reverse direction of
//! an RFC 5103 biflow record; this file compiles a field list into a [`Template`].

mod biflow;
mod parse;
mod slots;

pub use crate::cache::{TemplateCache, TemplateUpdate};
use crate::error::TemplateProblem;
pub use crate::field::FieldSpec;
pub use crate::key::TemplateKey;

use crate::record::Windows;
pub(crate) use biflow::Reverse;
pub(crate) use parse::{
    TemplateRecord, encode_fields, ipfix_template, v9_options_template, v9_template,
};
pub(crate) use slots::{AddrAt, Duration, SLOT_COUNT, Slot, SlotId, TimeSource, Wide};
use slots::{FORWARD_COUNTERS, choose, fall_back};

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
    /// Source and destination address positions, for the same fast path as `wide`.
    addrs: [AddrAt; 2],
    /// The layout for reading whole sets of records through windows, when `wide` is `Some`
    /// and the template is a common one (see `record/fixed.rs`).
    windows: Option<Windows>,
    /// The static NetFlow v5 layout: records are read at constant offsets.
    v5: bool,
    /// Where the reverse direction's counters and flags sit, for an RFC 5103 biflow template
    /// (reverse IEs, enterprise 29305) or a Cisco ASA NSEL one (responder counts 232/299).
    reverse: Option<Box<Reverse>>,
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
        let mut reverse = [Slot::NONE; SLOT_COUNT];
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
            if index < scope || f.is_variable() {
                continue;
            }
            let Some(s) = SlotId::for_field(f.id, f.len) else {
                continue;
            };
            let table = match (f.enterprise, s) {
                (0, SlotId::BytesResponder | SlotId::PacketsResponder) => &mut reverse,
                (0, _) => &mut slots,
                (FieldSpec::REVERSE_PEN, s) if s.is_reversible() => &mut reverse,
                _ => continue,
            };
            let slot = &mut table[s as usize];
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
        let record_len = if first_var == fields.len() {
            Some(u16::try_from(at).map_err(|_| TemplateProblem::RecordTooLong)?)
        } else {
            None
        };
        let min_len = u16::try_from(min_len).map_err(|_| TemplateProblem::RecordTooLong)?;
        // The normalized counters: delta counts (1/2), or else the first fallback present.
        fall_back(&mut slots, &FORWARD_COUNTERS);
        let (fixed_slots, times, duration) = choose(&slots, first_var);
        let reverse = Reverse::compile(reverse, &slots, first_var);
        let wide = (fixed_slots && min_len >= 8).then(|| slots.map(Wide::of));
        let addrs = [
            AddrAt::of(slots[SlotId::Src4 as usize], slots[SlotId::Src6 as usize]),
            AddrAt::of(slots[SlotId::Dst4 as usize], slots[SlotId::Dst6 as usize]),
        ];
        let windows = wide
            .as_ref()
            .and_then(|w| Windows::compile(w, addrs, times));
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
            addrs,
            windows,
            v5: false,
            reverse,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::FieldId;

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
