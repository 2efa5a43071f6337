//! The stateful decoder: one template cache and one pending buffer for all exporters.

use std::net::IpAddr;

use crate::cache::{ExporterKey, Limits, TemplateCache, TemplateKey, TemplateUpdate};
use crate::decoded::{Body, DecodedDatagram};
use crate::error::DecodeError;
use crate::header::RecordOrigin;
use crate::ipfix::{self, IpfixPacket};
use crate::options::{DomainKey, DomainOptions, OptionsState};
use crate::pending::{Deferred, ExpiredSet, PendingBuffer, WaitingSet};
use crate::record::Records;
use crate::report::Capped;
use crate::template::{self, Template, TemplateRecord};
use crate::v5::V5Packet;
use crate::v9::{self, FlowSet, FlowSets, V9Packet};
use crate::wire::offset_in;

/// Decodes NetFlow v5, v9 and IPFIX datagrams from any number of exporters.
///
/// It owns the [`TemplateCache`] and a bounded buffer of data sets whose template has not
/// arrived yet (after a restart of the exporter or of this process, data usually comes before
/// the next template refresh). Reuse one `Decoder` for every datagram: once templates are cached,
/// [`Decoder::decode`] allocates nothing.
#[derive(Debug, Default)]
pub struct Decoder {
    pub(crate) cache: TemplateCache,
    pub(crate) pending: PendingBuffer,
    pub(crate) issues: Capped<DecodeError>,
    pub(crate) waiting: Capped<WaitingSet>,
    pub(crate) options: OptionsState,
    /// Header, exporter and receive time of the datagram decoded last: the origin of its
    /// records (kept here, so that what a decode yields holds a reference, not a copy).
    pub(crate) origin: RecordOrigin,
    pub(crate) data_records: u32,
    pub(crate) options_records: u32,
}

impl Decoder {
    /// A decoder with these limits.
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            cache: TemplateCache::new(limits),
            ..Decoder::default()
        }
    }

    /// A decoder around an existing cache (for example one loaded with
    /// [`TemplateCache::import`]).
    pub fn with_cache(cache: TemplateCache) -> Decoder {
        Decoder {
            cache,
            ..Decoder::default()
        }
    }

    /// The template cache.
    pub fn cache(&self) -> &TemplateCache {
        &self.cache
    }

    /// The template cache, to import, export or forget templates.
    pub fn cache_mut(&mut self) -> &mut TemplateCache {
        &mut self.cache
    }

    /// What options data announced for one domain of one exporter: sampling rates, system
    /// init time, interface names.
    pub fn domain_options(&self, key: &DomainKey) -> Option<&DomainOptions> {
        self.options.domain(key)
    }

    /// Every domain with what its options data announced.
    pub fn domains(&self) -> impl Iterator<Item = (&DomainKey, &DomainOptions)> {
        self.options.domains()
    }

    /// Sets (or with `None` clears) the sampling interval of every flow of an exporter (by
    /// address), whatever it announces: for devices that sample without saying so. It applies
    /// to datagrams decoded from now on.
    pub fn set_sampling_override(&mut self, exporter: IpAddr, rate: Option<u32>) {
        self.options.set_override(exporter, rate);
    }

    /// Data sets waiting for their template.
    pub fn pending_sets(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of data sets waiting for their template.
    pub fn pending_bytes(&self) -> usize {
        self.pending.bytes()
    }

    /// Exporters evicted from the full template cache so far, with their templates, pending
    /// sets and options state (see [`TemplateCache`] for the policy and what it means under
    /// attack).
    pub fn exporters_evicted(&self) -> u64 {
        self.cache.exporters_evicted()
    }

    /// Gives up pending sets older than [`Limits::max_pending_age_micros`] at `now_micros`, and
    /// reports them. Call it periodically when no datagrams arrive; [`Decoder::decode`] does it
    /// on every call.
    pub fn expire(&mut self, now_micros: i64) -> &[ExpiredSet] {
        self.pending.clear_outcomes();
        self.pending.expire_old(now_micros, self.cache.limits());
        self.pending.expired.as_slice()
    }

    /// How many pending sets the last call ([`Decoder::decode`] or [`Decoder::expire`]) gave
    /// up: [`Decoder::expire`] lists at most 64 of them.
    pub fn expired_count(&self) -> usize {
        self.pending.expired.total()
    }

    /// Decodes one datagram received from `exporter` at `ts_micros` (Unix µs, the caller's
    /// clock: it stamps the flows and ages the pending buffer).
    ///
    /// Templates carried by the datagram are learned first, so they apply to every data set of
    /// the datagram whatever the order, and release pending sets that were waiting for them.
    ///
    /// `Err` only when the packet header cannot be read (truncated, unknown version, length
    /// contradicting the datagram). Problems inside the packet are per-set outcomes listed by
    /// [`DecodedDatagram::issues`]; everything framed before a broken set is still decoded.
    pub fn decode<'a>(
        &'a mut self,
        exporter: impl Into<ExporterKey>,
        ts_micros: i64,
        datagram: &'a [u8],
    ) -> Result<DecodedDatagram<'a>, DecodeError> {
        self.decode_from(exporter.into(), ts_micros, datagram, None)
    }

    /// [`Decoder::decode`] for a datagram held in a [`bytes::Bytes`] (e.g. a slice of a
    /// receive buffer): a data set that must wait for its template keeps a slice of `datagram`
    /// (a reference count) instead of a copy. Same result otherwise.
    ///
    /// The slice keeps the whole allocation behind `datagram` alive while the set waits (up
    /// to [`Limits::max_pending_age_micros`]): use it when each `Bytes` owns its datagram, not
    /// for slices of a large shared receive buffer.
    pub fn decode_bytes<'a>(
        &'a mut self,
        exporter: impl Into<ExporterKey>,
        ts_micros: i64,
        datagram: &'a bytes::Bytes,
    ) -> Result<DecodedDatagram<'a>, DecodeError> {
        self.decode_from(exporter.into(), ts_micros, datagram, Some(datagram))
    }

    fn decode_from<'a>(
        &'a mut self,
        exporter: ExporterKey,
        ts_micros: i64,
        datagram: &'a [u8],
        shared: Option<&bytes::Bytes>,
    ) -> Result<DecodedDatagram<'a>, DecodeError> {
        self.issues.clear();
        self.waiting.clear();
        self.pending.clear_outcomes();
        self.pending.expire_old(ts_micros, self.cache.limits());
        let version = match datagram {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => {
                return Err(DecodeError::Truncated {
                    offset: 0,
                    needed: 2 - datagram.len(),
                });
            }
        };
        let (header, body) = match version {
            5 => {
                let p = V5Packet::parse(datagram)?;
                (p.header(), Body::V5(p.records_bytes()))
            }
            9 => {
                let p = V9Packet::parse(datagram)?;
                (p.header(), Body::Sets(p.sets()))
            }
            10 => {
                let p = IpfixPacket::parse(datagram)?;
                (p.header(), Body::Sets(p.sets()))
            }
            v => return Err(DecodeError::Version(v)),
        };
        let mut ctx = RecordOrigin::new(exporter.addr, ts_micros, header);
        self.data_records = 0;
        self.options_records = 0;
        let body = match body {
            Body::Sets(sets) => Body::Sets(self.frame(exporter, ctx, datagram, shared, sets)),
            Body::V5(records) => {
                self.data_records = u32::from(header.count);
                Body::V5(records)
            }
        };
        apply_options(&self.options, exporter, &mut ctx);
        self.origin = ctx;
        Ok(DecodedDatagram {
            decoder: self,
            exporter,
            body,
            datagram,
        })
    }

    /// Learns templates, queues data sets without a template, checks the rest; returns the sets
    /// that were framed without error.
    fn frame<'a>(
        &mut self,
        exporter: ExporterKey,
        ctx: RecordOrigin,
        datagram: &'a [u8],
        shared: Option<&bytes::Bytes>,
        sets: FlowSets<'a>,
    ) -> FlowSets<'a> {
        let start = sets.position();
        let version = ctx.header.version;
        let domain = ctx.header.source_id;
        let key = |template_id| TemplateKey {
            exporter,
            version,
            domain,
            template_id,
        };
        let mut end = datagram.len();
        let mut learned = false;
        for set in sets.clone() {
            let set = match set {
                Ok(s) => s,
                Err(e) => {
                    if let DecodeError::BadSetLength { offset, .. } = e {
                        end = offset;
                    }
                    self.issues.push(e);
                    break;
                }
            };
            match (version, set.id) {
                (9, v9::TEMPLATE_SET | v9::OPTIONS_TEMPLATE_SET)
                | (10, ipfix::TEMPLATE_SET | ipfix::OPTIONS_TEMPLATE_SET) => {
                    learned |= self.learn_set(datagram, &set, key);
                }
                (_, 256..) => {}
                (_, set_id) => self.issues.push(DecodeError::ReservedSetId {
                    offset: set.offset,
                    set_id,
                }),
            }
        }
        let framed = FlowSets::new(start, datagram.get(start..end).unwrap_or(&[]));
        for set in framed.clone().flatten().filter(|s| s.id >= 256) {
            let key = key(set.id);
            match self.cache.get_seen(&key) {
                Some(t) => {
                    let records = check_set(t, &set, &mut self.issues);
                    if matches!(t.kind(), template::TemplateKind::Options { .. }) {
                        let dk = DomainKey {
                            exporter,
                            version,
                            domain,
                        };
                        self.options_records = self.options_records.saturating_add(records);
                        for r in Records::new(set.body, t) {
                            self.options.learn(dk, &r);
                        }
                    } else {
                        self.data_records = self.data_records.saturating_add(records);
                    }
                }
                None => self.defer(key, ctx, &set, shared),
            }
        }
        if learned && self.pending.len() > 0 {
            let options = &self.options;
            self.pending.release(&self.cache, |p| {
                apply_options(options, p.key.exporter, &mut p.ctx)
            });
        }
        framed
    }

    /// Learns every template of a template set; returns whether any was learned or changed.
    fn learn_set(
        &mut self,
        datagram: &[u8],
        set: &FlowSet<'_>,
        key: impl Fn(u16) -> TemplateKey,
    ) -> bool {
        let max_fields = self.cache.limits().max_fields;
        let mut rest = set.body;
        let mut learned = false;
        // Fewer bytes than the smallest template record, or all zeros, is padding.
        while rest.len() >= 4 && rest.iter().any(|&b| b != 0) {
            let parsed = match set.id {
                v9::TEMPLATE_SET => template::v9_template(datagram, rest, max_fields),
                v9::OPTIONS_TEMPLATE_SET => {
                    template::v9_options_template(datagram, rest, max_fields)
                }
                ipfix::TEMPLATE_SET => template::ipfix_template(datagram, rest, max_fields, false),
                _ => template::ipfix_template(datagram, rest, max_fields, true),
            };
            let (r, rec) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    self.issues.push(e);
                    break;
                }
            };
            rest = r;
            learned |= self.learn(&rec, &key);
        }
        learned
    }

    fn learn(&mut self, rec: &TemplateRecord<'_>, key: &impl Fn(u16) -> TemplateKey) -> bool {
        let k = key(rec.id);
        if rec.field_count == 0 {
            // IPFIX withdrawal (RFC 7011 §8.1): of one template, or of all (ids 2 and 3).
            if rec.id < 256 {
                self.cache.forget_domain(k.exporter, k.version, k.domain);
            } else {
                self.cache.remove(&k);
            }
            return false;
        }
        match self.cache.learn_raw(
            k,
            rec.kind,
            rec.raw,
            || Template::from_record(rec),
            rec.offset,
        ) {
            Ok((TemplateUpdate::Refreshed, _)) => false,
            Ok((_, evicted)) => {
                if let Some(gone) = evicted {
                    self.pending.drop_exporter(gone);
                    self.options.forget_exporter(gone);
                }
                true
            }
            Err(e) => {
                self.issues.push(e);
                false
            }
        }
    }

    /// Keeps a data set whose template is unknown, within the pending buffer's caps.
    fn defer(
        &mut self,
        key: TemplateKey,
        ctx: RecordOrigin,
        set: &FlowSet<'_>,
        shared: Option<&bytes::Bytes>,
    ) {
        let limits = *self.cache.limits();
        let kept = if self.waiting.total() >= MAX_DEFERRED_PER_DATAGRAM {
            Deferred::Dropped
        } else {
            self.pending
                .defer(key, ctx, set.offset, set.body, shared, &limits)
        };
        match kept {
            Deferred::Kept => self.waiting.push(WaitingSet {
                offset: set.offset,
                key,
            }),
            Deferred::Dropped => self.issues.push(DecodeError::PendingDropped {
                offset: set.offset,
                key,
                bytes: set.body.len(),
            }),
        }
    }
}

/// Data sets one datagram may add to the pending buffer; the rest are dropped and reported
/// ([`DecodeError::PendingDropped`]). Exporters put a few data sets in a datagram; a hostile one
/// of thousands of tiny sets would otherwise cost a pending set each (about 150 bytes plus its
/// body) in one call.
pub(crate) const MAX_DEFERRED_PER_DATAGRAM: usize = 16;

/// Sampling rate and system init time for flows of this context, from the override or the
/// domain's options data.
fn apply_options(options: &OptionsState, exporter: ExporterKey, ctx: &mut RecordOrigin) {
    let h = ctx.header;
    let info = if h.version == 5 {
        None
    } else {
        options.domain(&DomainKey {
            exporter,
            version: h.version,
            domain: h.source_id,
        })
    };
    ctx.system_init_ms = info.and_then(|i| i.system_init_ms);
    ctx.sampling_interval = match options.override_for(exporter.addr) {
        Some(r) => r,
        None if h.version == 5 => h.sampling_interval(),
        None => info.and_then(DomainOptions::default_rate).unwrap_or(1),
    };
}

/// Reports a data set's leftover bytes that cannot be padding, or a record that overruns it.
/// Returns the number of records.
fn check_set(t: &Template, set: &FlowSet<'_>, issues: &mut Capped<DecodeError>) -> u32 {
    let body = set.body;
    let mut records = 0u32;
    let tail = match t.record_len() {
        Some(n) => {
            records = u32::try_from(body.len() / n).unwrap_or(u32::MAX);
            body.get(body.len() - body.len() % n..).unwrap_or(&[])
        }
        None => {
            let mut rest = body;
            while rest.len() >= t.min_record_len() {
                match t.varlen_record_len(rest) {
                    Some(n) => {
                        rest = rest.get(n..).unwrap_or(&[]);
                        records += 1;
                    }
                    None => {
                        let needed = t.min_record_len().saturating_sub(rest.len()).max(1);
                        let offset = set.offset + 4 + offset_in(body, rest);
                        issues.push(DecodeError::RecordOverrun {
                            offset,
                            template_id: set.id,
                            needed,
                        });
                        return records;
                    }
                }
            }
            rest
        }
    };
    if tail.iter().any(|&b| b != 0) {
        let offset = set.offset + 4 + offset_in(body, tail);
        issues.push(DecodeError::TrailingBytes {
            offset,
            template_id: set.id,
            length: tail.len(),
        });
    }
    records
}
