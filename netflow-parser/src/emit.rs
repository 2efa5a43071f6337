//! Packet builders, the mirror of the decoder (feature `emit`).
//!
//! Everything the decoder reads, this module can write, from the same layout constants: v5
//! packets from [`Flow`]s, and v9 / IPFIX messages with template, options template and data sets
//! (any field lengths, variable-length fields, enterprise fields, padding). The flow generator
//! and the round-trip tests use it; so can your own test tools.
//!
//! ```
//! use netflow_wire::emit::Message;
//! use netflow_wire::{Decoder, FieldId, Flow, Header, Limits, template::FieldSpec};
//!
//! let fields = [
//!     FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4),
//!     FieldSpec::new(FieldId::IPV4_DST_ADDR, 4),
//!     FieldSpec::new(FieldId::IN_BYTES, 8),
//! ];
//! let header = Header { version: 9, sys_uptime_ms: Some(1000), export_secs: 1_700_000_000, ..Header::default() };
//! let flow = Flow { src_addr: [10, 0, 0, 1].into(), dst_addr: [10, 0, 0, 2].into(), bytes: 1234, ..Flow::default() };
//! let mut buf = Vec::new();
//! let mut m = Message::new(&mut buf, &header);
//! m.set(0).template(256, &fields);
//! m.set(256).flow(&fields, &flow, &header);
//! m.finish()?;
//!
//! let mut decoder = Decoder::new(Limits::default());
//! let decoded = decoder.decode(flow.exporter, 0, &buf)?;
//! assert_eq!(decoded.flows().next().map(|f| (f.src_addr, f.bytes)), Some((flow.src_addr, 1234)));
//! # Ok::<(), netflow_wire::DecodeError>(())
//! ```

use std::net::IpAddr;

use crate::error::DecodeError;
use crate::field::{FieldId, FieldSpec};
use crate::flow::Flow;
use crate::header::Header;
use crate::ipfix::field as ipf;
use crate::v5::field as v5f;
use crate::v9::field as v9f;

/// Writes a NetFlow v5 packet holding `flows` (at most 30, IPv4 only) after `header`
/// (`count` is taken from `flows.len()`, the version is 5). Flow times become sysUptime values
/// relative to the header's uptime and export time.
pub fn v5(out: &mut Vec<u8>, header: &Header, flows: &[Flow]) -> Result<(), DecodeError> {
    if flows.len() > usize::from(v5f::MAX_RECORDS) {
        return Err(DecodeError::CannotEmit(
            "a v5 packet holds at most 30 records",
        ));
    }
    let start = out.len();
    out.resize(start + v5f::HEADER_LEN + flows.len() * v5f::RECORD_LEN, 0);
    let Some(buf) = out.get_mut(start..) else {
        return Err(DecodeError::CannotEmit("buffer"));
    };
    let (hdr, body) = buf.split_at_mut(v5f::HEADER_LEN);
    put(hdr, v5f::VERSION, &5u16.to_be_bytes());
    put(hdr, v5f::COUNT, &(flows.len() as u16).to_be_bytes());
    put(
        hdr,
        v5f::SYS_UPTIME,
        &header.sys_uptime_ms.unwrap_or(0).to_be_bytes(),
    );
    put(hdr, v5f::UNIX_SECS, &header.export_secs.to_be_bytes());
    put(hdr, v5f::UNIX_NSECS, &header.export_nanos.to_be_bytes());
    put(hdr, v5f::FLOW_SEQUENCE, &header.sequence.to_be_bytes());
    put(
        hdr,
        v5f::ENGINE_TYPE,
        &[(header.source_id >> 8) as u8, header.source_id as u8],
    );
    put(hdr, v5f::SAMPLING, &header.sampling.to_be_bytes());
    for (rec, f) in body.chunks_exact_mut(v5f::RECORD_LEN).zip(flows) {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (f.src_addr, f.dst_addr) else {
            out.truncate(start);
            return Err(DecodeError::CannotEmit(
                "v5 records carry IPv4 addresses only",
            ));
        };
        put(rec, v5f::SRCADDR, &src.octets());
        put(rec, v5f::DSTADDR, &dst.octets());
        put(rec, v5f::INPUT, &(f.input_if as u16).to_be_bytes());
        put(rec, v5f::OUTPUT, &(f.output_if as u16).to_be_bytes());
        put(rec, v5f::DPKTS, &(f.packets as u32).to_be_bytes());
        put(rec, v5f::DOCTETS, &(f.bytes as u32).to_be_bytes());
        put(
            rec,
            v5f::FIRST,
            &uptime_of(header, f.start_ms).to_be_bytes(),
        );
        put(rec, v5f::LAST, &uptime_of(header, f.end_ms).to_be_bytes());
        put(rec, v5f::SRCPORT, &f.src_port.to_be_bytes());
        put(rec, v5f::DSTPORT, &f.dst_port.to_be_bytes());
        put(rec, v5f::TCP_FLAGS, &[f.tcp_flags]);
        put(rec, v5f::PROT, &[f.protocol]);
    }
    Ok(())
}

fn put(buf: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

/// The sysUptime value (ms) of a Unix-ms instant, relative to the header (0 when unknown).
fn uptime_of(header: &Header, unix_ms: u64) -> u32 {
    if unix_ms == 0 {
        return 0;
    }
    let behind = header.export_ms().wrapping_sub(unix_ms) as u32;
    header.sys_uptime_ms.unwrap_or(0).wrapping_sub(behind)
}

/// A v9 or IPFIX message being written into a `Vec<u8>`.
///
/// Open a set with [`Message::set`] (0 / 1 for v9 templates / options templates, 2 / 3 for IPFIX,
/// a template id for data), write template records or data records into it, and
/// [`Message::finish`] to close the last set and fill in the lengths and the v9 record count.
#[derive(Debug)]
pub struct Message<'b> {
    out: &'b mut Vec<u8>,
    version: u16,
    start: usize,
    set_start: Option<usize>,
    records: u16,
    error: Option<DecodeError>,
}

impl<'b> Message<'b> {
    /// Starts a message; `header.version` selects v9 (9) or IPFIX (10).
    pub fn new(out: &'b mut Vec<u8>, header: &Header) -> Message<'b> {
        let start = out.len();
        let version = header.version;
        if version == 10 {
            out.resize(start + ipf::HEADER_LEN, 0);
            let h = &mut out[start..];
            put(h, ipf::VERSION, &10u16.to_be_bytes());
            put(h, ipf::EXPORT_TIME, &header.export_secs.to_be_bytes());
            put(h, ipf::SEQUENCE, &header.sequence.to_be_bytes());
            put(h, ipf::DOMAIN, &header.source_id.to_be_bytes());
        } else {
            out.resize(start + v9f::HEADER_LEN, 0);
            let h = &mut out[start..];
            put(h, v9f::VERSION, &9u16.to_be_bytes());
            put(
                h,
                v9f::SYS_UPTIME,
                &header.sys_uptime_ms.unwrap_or(0).to_be_bytes(),
            );
            put(h, v9f::UNIX_SECS, &header.export_secs.to_be_bytes());
            put(h, v9f::SEQUENCE, &header.sequence.to_be_bytes());
            put(h, v9f::SOURCE_ID, &header.source_id.to_be_bytes());
        }
        Message {
            out,
            version,
            start,
            set_start: None,
            records: 0,
            error: None,
        }
    }

    fn close_set(&mut self) {
        if let Some(s) = self.set_start.take() {
            match u16::try_from(self.out.len() - s) {
                Ok(len) => put(&mut self.out[s..], 2, &len.to_be_bytes()),
                Err(_) => self.error = Some(DecodeError::CannotEmit("set longer than 65535 bytes")),
            }
        }
    }

    /// Closes the current set (if any) and opens a set with this id.
    pub fn set(&mut self, id: u16) -> &mut Self {
        self.close_set();
        self.set_start = Some(self.out.len());
        self.out.extend_from_slice(&id.to_be_bytes());
        self.out.extend_from_slice(&[0, 0]);
        self
    }

    fn spec(&mut self, f: &FieldSpec) {
        if self.version == 10 && f.enterprise != 0 {
            self.out.extend_from_slice(&(f.id.0 | 0x8000).to_be_bytes());
            self.out.extend_from_slice(&f.len.to_be_bytes());
            self.out.extend_from_slice(&f.enterprise.to_be_bytes());
        } else {
            self.out.extend_from_slice(&f.id.0.to_be_bytes());
            self.out.extend_from_slice(&f.len.to_be_bytes());
        }
    }

    /// Writes a template record (into a template set).
    pub fn template(&mut self, id: u16, fields: &[FieldSpec]) -> &mut Self {
        self.out.extend_from_slice(&id.to_be_bytes());
        self.out
            .extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for f in fields {
            self.spec(f);
        }
        self.records = self.records.wrapping_add(1);
        self
    }

    /// Writes an options template record (into an options template set); the first
    /// `scope_fields` fields are the scope.
    pub fn options_template(
        &mut self,
        id: u16,
        scope_fields: u16,
        fields: &[FieldSpec],
    ) -> &mut Self {
        self.out.extend_from_slice(&id.to_be_bytes());
        if self.version == 10 {
            self.out
                .extend_from_slice(&(fields.len() as u16).to_be_bytes());
            self.out.extend_from_slice(&scope_fields.to_be_bytes());
        } else {
            let (scope, opts) = fields.split_at(usize::from(scope_fields).min(fields.len()));
            self.out
                .extend_from_slice(&((scope.len() * 4) as u16).to_be_bytes());
            self.out
                .extend_from_slice(&((opts.len() * 4) as u16).to_be_bytes());
        }
        for f in fields {
            self.spec(f);
        }
        self.records = self.records.wrapping_add(1);
        self
    }

    /// IPFIX template withdrawal (RFC 7011 §8.1): a template record with no fields.
    pub fn withdrawal(&mut self, id: u16) -> &mut Self {
        self.out.extend_from_slice(&id.to_be_bytes());
        self.out.extend_from_slice(&[0, 0]);
        self
    }

    /// Writes one field value for a field of this spec: an unsigned integer cut to the field's
    /// length for fixed fields, the bytes with a length prefix for variable-length fields.
    pub fn uint(&mut self, spec: &FieldSpec, v: u64) -> &mut Self {
        if spec.is_variable() {
            let b = v.to_be_bytes();
            return self.bytes(spec, &b);
        }
        let len = usize::from(spec.len);
        let b = v.to_be_bytes();
        if len >= 8 {
            self.out.resize(self.out.len() + len - 8, 0);
            self.out.extend_from_slice(&b);
        } else {
            self.out.extend_from_slice(&b[8 - len..]);
        }
        self
    }

    /// Writes raw bytes for a field: fixed fields are cut or zero-padded (on the right) to their
    /// length; variable-length fields get the RFC 7011 §7 length prefix.
    pub fn bytes(&mut self, spec: &FieldSpec, v: &[u8]) -> &mut Self {
        if spec.is_variable() {
            let v = &v[..v.len().min(usize::from(u16::MAX))];
            if v.len() < 255 {
                self.out.push(v.len() as u8);
            } else {
                self.out.push(255);
                self.out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            }
            self.out.extend_from_slice(v);
        } else {
            let len = usize::from(spec.len);
            let n = v.len().min(len);
            self.out.extend_from_slice(&v[..n]);
            self.out.resize(self.out.len() + (len - n), 0);
        }
        self
    }

    /// Counts one data record (for the v9 header's record count). [`Message::flow`] does it.
    pub fn end_record(&mut self) -> &mut Self {
        self.records = self.records.wrapping_add(1);
        self
    }

    /// Writes `flow` as one data record of a template with these fields: every field the
    /// decoder maps to the normalized flow gets its value (cut to the field's length), any
    /// other field is zero (reverse fields of a biflow template too: see [`Message::biflow`]).
    /// sysUptime-relative times are computed against `header`.
    pub fn flow(&mut self, fields: &[FieldSpec], flow: &Flow, header: &Header) -> &mut Self {
        self.record(fields, flow, None, header)
    }

    /// Writes one biflow record (RFC 5103) of a template with these fields: the IANA fields
    /// from `forward`, as [`Message::flow`] does, and the reverse direction's from `reverse`:
    /// reverse IEs ([`FieldSpec::reverse`], enterprise 29305) of the counters, TCP flags,
    /// interfaces, direction and times, and the NSEL responder counts (232/299). The mirror of
    /// [`Record::flows`](crate::Record::flows), which reads the reverse half back with the
    /// forward key swapped: `reverse`'s addresses and ports are not written.
    ///
    /// ```
    /// use netflow_wire::emit::Message;
    /// use netflow_wire::template::FieldSpec;
    /// use netflow_wire::{Decoder, FieldId, Flow, Header};
    ///
    /// let fields = [
    ///     FieldSpec::new(FieldId::IPV4_SRC_ADDR, 4),
    ///     FieldSpec::new(FieldId::IPV4_DST_ADDR, 4),
    ///     FieldSpec::new(FieldId::IN_BYTES, 4),
    ///     FieldSpec::reverse(FieldId::IN_BYTES, 4),
    /// ];
    /// let header = Header { version: 10, export_secs: 1_700_000_000, ..Header::default() };
    /// let forward = Flow { src_addr: [10, 0, 0, 1].into(), dst_addr: [10, 0, 0, 2].into(), bytes: 500, ..Flow::default() };
    /// let reverse = Flow { bytes: 9000, ..Flow::default() };
    /// let mut buf = Vec::new();
    /// let mut m = Message::new(&mut buf, &header);
    /// m.set(2).template(256, &fields);
    /// m.set(256).biflow(&fields, &forward, &reverse, &header);
    /// m.finish()?;
    ///
    /// let mut decoder = Decoder::default();
    /// let decoded = decoder.decode(forward.exporter, 0, &buf)?;
    /// let flows: Vec<_> = decoded.flows().map(|f| (f.src_addr, f.bytes)).collect();
    /// assert_eq!(flows, [(forward.src_addr, 500), (forward.dst_addr, 9000)]);
    /// assert_eq!(decoded.data_records(), 1);
    /// # Ok::<(), netflow_wire::DecodeError>(())
    /// ```
    pub fn biflow(
        &mut self,
        fields: &[FieldSpec],
        forward: &Flow,
        reverse: &Flow,
        header: &Header,
    ) -> &mut Self {
        self.record(fields, forward, Some(reverse), header)
    }

    /// One data record: IANA fields from `forward`, reverse ones from `reverse` (zero without).
    fn record(
        &mut self,
        fields: &[FieldSpec],
        forward: &Flow,
        reverse: Option<&Flow>,
        header: &Header,
    ) -> &mut Self {
        for f in fields {
            let (flow, reverse_field) = match (f.enterprise, reverse) {
                (0, _) => (forward, false),
                (FieldSpec::REVERSE_PEN, Some(r)) => (r, true),
                _ => {
                    self.bytes(f, &[]);
                    continue;
                }
            };
            if f.is_variable() {
                self.bytes(f, &[]);
                continue;
            }
            match (f.id, f.len) {
                (FieldId::IPV4_SRC_ADDR, 4) | (FieldId::IPV6_SRC_ADDR, 16) if !reverse_field => {
                    self.addr(f, flow.src_addr)
                }
                (FieldId::IPV4_DST_ADDR, 4) | (FieldId::IPV6_DST_ADDR, 16) if !reverse_field => {
                    self.addr(f, flow.dst_addr)
                }
                _ => {
                    let v = match f.id {
                        // The flow key is the forward one's, swapped by the decoder.
                        FieldId::L4_SRC_PORT | FieldId::L4_DST_PORT | FieldId::PROTOCOL
                            if reverse_field =>
                        {
                            0
                        }
                        FieldId::RESPONDER_OCTETS => reverse.map_or(0, |r| r.bytes),
                        FieldId::RESPONDER_PACKETS => reverse.map_or(0, |r| r.packets),
                        id => value(id, flow, header),
                    };
                    self.uint(f, v)
                }
            };
        }
        self.end_record()
    }

    fn addr(&mut self, f: &FieldSpec, a: IpAddr) -> &mut Self {
        match a {
            IpAddr::V4(a) => self.bytes(f, &a.octets()),
            IpAddr::V6(a) => self.bytes(f, &a.octets()),
        }
    }

    /// Appends `n` zero bytes of padding to the current set.
    pub fn pad(&mut self, n: usize) -> &mut Self {
        self.out.resize(self.out.len() + n, 0);
        self
    }

    /// Closes the last set and fills in the v9 record count or the IPFIX message length.
    /// Returns the message length.
    pub fn finish(mut self) -> Result<usize, DecodeError> {
        self.close_set();
        if let Some(e) = self.error {
            return Err(e);
        }
        let len = self.out.len() - self.start;
        let h = &mut self.out[self.start..];
        if self.version == 10 {
            let l = u16::try_from(len)
                .map_err(|_| DecodeError::CannotEmit("message longer than 65535 bytes"))?;
            put(h, ipf::LENGTH, &l.to_be_bytes());
        } else {
            put(h, v9f::COUNT, &self.records.to_be_bytes());
        }
        Ok(len)
    }
}

/// The value [`Message::flow`] writes for field `id` of `flow` (0 for a field the normalized
/// flow does not have).
fn value(id: FieldId, flow: &Flow, header: &Header) -> u64 {
    match id {
        FieldId::L4_SRC_PORT => u64::from(flow.src_port),
        FieldId::L4_DST_PORT => u64::from(flow.dst_port),
        FieldId::PROTOCOL => u64::from(flow.protocol),
        FieldId::IN_BYTES
        | FieldId::IN_PERMANENT_BYTES
        | FieldId::INITIATOR_OCTETS
        | FieldId::OUT_BYTES => flow.bytes,
        FieldId::IN_PKTS
        | FieldId::IN_PERMANENT_PKTS
        | FieldId::INITIATOR_PACKETS
        | FieldId::OUT_PKTS => flow.packets,
        FieldId::INPUT_SNMP => u64::from(flow.input_if),
        FieldId::OUTPUT_SNMP => u64::from(flow.output_if),
        FieldId::DIRECTION => u64::from(flow.direction),
        FieldId::TCP_FLAGS => u64::from(flow.tcp_flags),
        FieldId::FIRST_SWITCHED => u64::from(uptime_of(header, flow.start_ms)),
        FieldId::LAST_SWITCHED => u64::from(uptime_of(header, flow.end_ms)),
        FieldId::FLOW_START_MILLISECONDS => flow.start_ms,
        FieldId::FLOW_END_MILLISECONDS => flow.end_ms,
        FieldId::FLOW_START_SECONDS => flow.start_ms / 1000,
        FieldId::FLOW_END_SECONDS => flow.end_ms / 1000,
        FieldId::FLOW_START_DELTA_MICROSECONDS => {
            header.export_ms().saturating_sub(flow.start_ms) * 1000
        }
        FieldId::FLOW_END_DELTA_MICROSECONDS => {
            header.export_ms().saturating_sub(flow.end_ms) * 1000
        }
        FieldId::FLOW_DURATION_MILLISECONDS => flow.end_ms.saturating_sub(flow.start_ms),
        FieldId::FLOW_DURATION_MICROSECONDS => flow.end_ms.saturating_sub(flow.start_ms) * 1000,
        _ => 0,
    }
}
