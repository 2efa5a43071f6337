//! Template records as framed on the wire (RFC 3954 §5.2/§6.1, RFC 7011 §3.4): found and
//! bounded, nothing allocated; [`Template::from_record`](super::Template) compiles them.

use nom::IResult;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32};

use super::TemplateKind;
use crate::error::{DecodeError, TemplateProblem};
use crate::field::{FieldId, FieldSpec};
use crate::wire::offset_in;

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
