//! The one error type of this crate.

use crate::key::TemplateKey;

/// Why bytes could not be decoded, or why a template was refused.
///
/// Every variant carries numbers (offsets from the start of the datagram, ids, lengths), never
/// strings or copies of the input, so the error path stays cheap when a broken exporter or a
/// fuzzer makes it hot. The type is `Copy`.
///
/// Which errors end a datagram: only those raised while reading the packet header
/// ([`DecodeError::Truncated`] at offset 0, [`DecodeError::Version`], [`DecodeError::BadLength`]).
/// Everything else is a per-set outcome reported by [`DecodedDatagram::issues`](crate::DecodedDatagram::issues),
/// while the rest of the datagram is still decoded. A data set kept waiting for its template is
/// not an error: see [`DecodedDatagram::waiting`](crate::DecodedDatagram::waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram ends before a structure that starts at `offset` is complete.
    #[error("truncated at byte {offset}: {needed} more bytes needed")]
    Truncated {
        /// Offset of the incomplete structure from the start of the datagram.
        offset: usize,
        /// How many bytes are missing.
        needed: usize,
    },
    /// The version field is not one this crate decodes (5, 9 or 10).
    #[error("unsupported NetFlow version {0}")]
    Version(u16),
    /// A header's length field contradicts the datagram (IPFIX message length, v5 record count).
    #[error("bad length at byte {offset}: header says {declared}, datagram has {actual}")]
    BadLength {
        /// Offset of the length field.
        offset: usize,
        /// What the header declares.
        declared: usize,
        /// What is really there.
        actual: usize,
    },
    /// A v5 header declares more than 30 records.
    #[error("v5 header declares {0} records, at most 30 are allowed")]
    TooManyRecords(u16),
    /// A flowset (v9) or set (IPFIX) length is below its 4-byte header or runs past the datagram.
    #[error(
        "flowset {set_id} at byte {offset}: length {length} is invalid ({remaining} bytes left)"
    )]
    BadSetLength {
        /// Offset of the set header.
        offset: usize,
        /// The set id.
        set_id: u16,
        /// The declared set length.
        length: u16,
        /// Bytes left in the datagram from `offset`.
        remaining: usize,
    },
    /// A set id that no spec assigns (v9: 2..=255; IPFIX: 0, 1, 4..=255).
    #[error("flowset at byte {offset}: reserved set id {set_id}")]
    ReservedSetId {
        /// Offset of the set header.
        offset: usize,
        /// The set id.
        set_id: u16,
    },
    /// A template definition is malformed.
    #[error("template {template_id} at byte {offset}: {why}")]
    BadTemplate {
        /// Offset of the template record.
        offset: usize,
        /// The template id (0 when it could not be read).
        template_id: u16,
        /// What is wrong with it.
        why: TemplateProblem,
    },
    /// A cache limit refused a new template or exporter.
    #[error("template {key}: {limit} limit of {max} reached")]
    LimitExceeded {
        /// The template that was refused.
        key: TemplateKey,
        /// Which limit.
        limit: ExceededLimit,
        /// Its configured value.
        max: usize,
    },
    /// A data set whose template is not known could not be kept because the pending buffer is
    /// full or disabled: its records are lost (counted here).
    #[error(
        "data set at byte {offset}: no template {key}, pending buffer full, {bytes} bytes dropped"
    )]
    PendingDropped {
        /// Offset of the set header.
        offset: usize,
        /// The missing template.
        key: TemplateKey,
        /// Size of the dropped set body.
        bytes: usize,
    },
    /// A variable-length record runs past the end of its data set; the records before it were
    /// decoded, the rest of the set is lost.
    #[error("data set {template_id} at byte {offset}: record overruns the set by {needed} bytes")]
    RecordOverrun {
        /// Offset of the record.
        offset: usize,
        /// The set's template id.
        template_id: u16,
        /// Missing bytes.
        needed: usize,
    },
    /// Bytes left over at the end of a data set that are too many to be padding, or nonzero.
    #[error("data set {template_id} at byte {offset}: {length} trailing bytes are not padding")]
    TrailingBytes {
        /// Offset of the leftover bytes.
        offset: usize,
        /// The set's template id.
        template_id: u16,
        /// How many bytes.
        length: usize,
    },
    /// A template export (see [`TemplateCache::export`](crate::template::TemplateCache::export)) could not
    /// be read back.
    #[error("template snapshot: {0}")]
    Snapshot(&'static str),
    /// The encoder ([`emit`](crate::emit), feature `emit`) was asked for something the format
    /// cannot express.
    #[error("cannot emit: {0}")]
    CannotEmit(&'static str),
}

/// What is wrong with a template definition ([`DecodeError::BadTemplate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateProblem {
    /// The template record is cut short by the end of its set.
    #[error("definition truncated")]
    Truncated,
    /// Field count 0 (in IPFIX, a withdrawal; in v9, invalid).
    #[error("no fields")]
    NoFields,
    /// A field of length 0.
    #[error("field {0} has length 0")]
    ZeroLengthField(u16),
    /// More fields than [`Limits::max_fields`](crate::Limits::max_fields).
    #[error("{0} fields is more than allowed")]
    TooManyFields(usize),
    /// The id is below 256.
    #[error("template id below 256")]
    ReservedId,
    /// An options template whose scope fields are missing or exceed its fields.
    #[error("bad scope length")]
    BadScope,
    /// The fixed part of a record is longer than 65535 bytes.
    #[error("record longer than 65535 bytes")]
    RecordTooLong,
}

/// Which cache limit was hit ([`DecodeError::LimitExceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExceededLimit {
    /// [`Limits::max_templates_per_exporter`](crate::Limits::max_templates_per_exporter).
    TemplatesPerExporter,
    /// [`Limits::max_exporters`](crate::Limits::max_exporters).
    Exporters,
}

impl core::fmt::Display for ExceededLimit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ExceededLimit::TemplatesPerExporter => "templates-per-exporter",
            ExceededLimit::Exporters => "exporters",
        })
    }
}
