//! What one call of [`Decoder::decode`] yields: header facts, data sets, flows, and what went
//! wrong.

use std::collections::BTreeMap;

use crate::cache::{ExporterKey, TemplateKey};
use crate::decoder::Decoder;
use crate::error::DecodeError;
use crate::flow::Flow;
use crate::header::{Header, RecordOrigin};
use crate::options::DomainKey;
use crate::pending::{ExpiredSet, WaitingSet};
use crate::record::{FixedReader, Record, RecordFlows, Records};
use crate::template::{self, Template};
use crate::v5;
use crate::v9::FlowSets;
use crate::wire::offset_in;

#[derive(Debug, Clone)]
pub(crate) enum Body<'a> {
    V5(&'a [u8]),
    Sets(FlowSets<'a>),
}

/// The outcome of [`Decoder::decode`]: header facts, data sets, and what went wrong.
///
/// Borrows the datagram and the decoder; iterating allocates nothing.
#[derive(Debug, Clone)]
pub struct DecodedDatagram<'a> {
    pub(crate) decoder: &'a Decoder,
    pub(crate) exporter: ExporterKey,
    pub(crate) body: Body<'a>,
    /// The whole datagram: set readers may look at the bytes around a set (`record/fixed.rs`).
    pub(crate) datagram: &'a [u8],
}

impl<'a> DecodedDatagram<'a> {
    /// The packet header.
    pub fn header(&self) -> Header {
        self.decoder.origin.header
    }

    /// The exporter key the datagram was decoded under.
    pub fn exporter(&self) -> ExporterKey {
        self.exporter
    }

    /// Every data set that could be decoded: those of this datagram whose template is known
    /// (for v5, one set with all records), then pending sets of earlier datagrams that this
    /// one's templates released (with their own header and receive time).
    pub fn data_sets(&self) -> DataSets<'a> {
        DataSets {
            decoded: self.clone(),
            v5_done: false,
            ready: 0,
        }
    }

    /// The normalized flows of every data set, options records and records without addresses
    /// skipped. Counters are as exported (see [`Flow::renormalized`]). A biflow record
    /// (RFC 5103) yields its forward half and then its reverse half, each when it carries
    /// traffic ([`Record::flows`]).
    ///
    /// Internal iteration (`for_each`, `fold`, and the adapters built on them) is the fastest
    /// way to read them: it picks the record reader once per set and hands each flow straight
    /// to the closure, about twice as fast as a `for` loop for v5.
    ///
    /// ```
    /// # use netflow_wire::Decoder;
    /// # let mut decoder = Decoder::default();
    /// # let datagram = [0u8, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    /// let exporter: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    /// let decoded = decoder.decode(exporter, 0, &datagram)?;
    /// let mut bytes = 0u64;
    /// decoded.flows().for_each(|f| bytes += f.renormalized().bytes);
    /// assert_eq!(bytes, 0); // a v5 header with no records
    /// # Ok::<(), netflow_wire::DecodeError>(())
    /// ```
    pub fn flows(&self) -> Flows<'a> {
        let mut sets = self.data_sets();
        let current = sets.next().map(|s| (s, s.flow_records()));
        Flows {
            sets,
            current,
            reverse: None,
        }
    }

    /// Per-set problems, each a loss or a framing error: bad templates, limits hit, reserved
    /// set ids, sets dropped because the pending buffer could not keep them, trailing bytes, a
    /// set length that ended framing early. Sets merely waiting for their template are not
    /// here but in [`DecodedDatagram::waiting`]. At most 64 are listed, in datagram order;
    /// [`DecodedDatagram::issue_count`] counts them all.
    pub fn issues(&self) -> &'a [DecodeError] {
        self.decoder.issues.as_slice()
    }

    /// How many per-set problems this call had, listed by [`DecodedDatagram::issues`] or not.
    pub fn issue_count(&self) -> usize {
        self.decoder.issues.total()
    }

    /// Data sets of this datagram kept pending because their template is not known yet (after
    /// a restart, data usually comes before the next template refresh). Not lost: they are
    /// decoded when the template arrives, or reported by [`DecodedDatagram::expired`] of a later call.
    ///
    /// At most 64 are listed; [`DecodedDatagram::waiting_count`] counts them all.
    pub fn waiting(&self) -> &'a [WaitingSet] {
        self.decoder.waiting.as_slice()
    }

    /// How many data sets of this datagram were kept waiting, listed or not.
    pub fn waiting_count(&self) -> usize {
        self.decoder.waiting.total()
    }

    /// Data records of data templates (flows) carried by this datagram itself, not counting
    /// pending sets released by it, nor options records. A biflow record counts once, as
    /// IPFIX sequence numbers count it (RFC 7011 §3.1 counts data records), though it may
    /// yield two flows.
    pub fn data_records(&self) -> u32 {
        self.decoder.data_records
    }

    /// Options data records carried by this datagram. An IPFIX sequence number counts
    /// `data_records() + options_records()` (RFC 7011 §3.1); some exporters count flows only.
    pub fn options_records(&self) -> u32 {
        self.decoder.options_records
    }

    /// Pending sets given up during this call (their template never came): lost records.
    pub fn expired(&self) -> &'a [ExpiredSet] {
        self.decoder.pending.expired.as_slice()
    }

    /// How many pending sets this call gave up (lost records), listed by
    /// [`DecodedDatagram::expired`] (at most 64) or not.
    pub fn expired_count(&self) -> usize {
        self.decoder.pending.expired.total()
    }
}

/// Iterator over the data sets of a [`DecodedDatagram`].
#[derive(Debug, Clone)]
pub struct DataSets<'a> {
    decoded: DecodedDatagram<'a>,
    v5_done: bool,
    ready: usize,
}

impl<'a> Iterator for DataSets<'a> {
    type Item = DataSet<'a>;

    fn next(&mut self) -> Option<DataSet<'a>> {
        let d = &mut self.decoded;
        let decoder: &'a Decoder = d.decoder;
        let ctx = &decoder.origin;
        let key = |template_id| TemplateKey {
            exporter: d.exporter,
            version: ctx.header.version,
            domain: ctx.header.source_id,
            template_id,
        };
        match &mut d.body {
            Body::V5(records) if !self.v5_done => {
                self.v5_done = true;
                let body: &'a [u8] = records;
                let t = v5::template();
                return Some(DataSet::new(
                    decoder,
                    key(0),
                    v5::field::HEADER_LEN,
                    t,
                    (body, body),
                    ctx,
                ));
            }
            Body::V5(_) => {}
            Body::Sets(sets) => {
                for set in sets.by_ref().flatten() {
                    if set.id < 256 {
                        continue;
                    }
                    let k = key(set.id);
                    if let Some(t) = decoder.cache.get(&k) {
                        let bodies = (set.body, d.datagram);
                        return Some(DataSet::new(decoder, k, set.offset, t, bodies, ctx));
                    }
                }
            }
        }
        while let Some(p) = decoder.pending.ready.get(self.ready) {
            self.ready += 1;
            if let Some(t) = decoder.cache.get(&p.key) {
                let bodies = (&p.body[..], &p.body[..]);
                return Some(DataSet::new(decoder, p.key, p.offset, t, bodies, &p.ctx));
            }
        }
        None
    }
}

/// One data set with its template: records, flows, and the facts of the packet that carried it.
#[derive(Debug, Clone, Copy)]
pub struct DataSet<'a> {
    key: TemplateKey,
    offset: usize,
    template: &'a Template,
    body: &'a [u8],
    /// The bytes `body` lies in: the datagram, or the body itself for a pending set.
    around: &'a [u8],
    ctx: &'a RecordOrigin,
    /// Per-sampler rates, when records name their sampler (FLOW_SAMPLER_ID 48, selectorId 302).
    samplers: Option<&'a BTreeMap<u64, u32>>,
}

impl<'a> DataSet<'a> {
    fn new(
        decoder: &'a Decoder,
        key: TemplateKey,
        offset: usize,
        template: &'a Template,
        (body, around): (&'a [u8], &'a [u8]),
        ctx: &'a RecordOrigin,
    ) -> DataSet<'a> {
        let samplers = if template.names_sampler()
            && decoder.options.override_for(key.exporter.addr).is_none()
        {
            let dk = DomainKey {
                exporter: key.exporter,
                version: key.version,
                domain: key.domain,
            };
            decoder
                .options
                .domain(&dk)
                .map(|i| &i.samplers)
                .filter(|m| !m.is_empty())
        } else {
            None
        };
        DataSet {
            key,
            offset,
            template,
            body,
            around,
            ctx,
            samplers,
        }
    }

    /// The normalized flow of one of this set's records, with the sampling rate of the sampler
    /// it names, if any. For a biflow record, the forward half: see [`DataSet::record_flows`].
    #[inline(always)]
    pub fn flow(&self, r: &Record<'a>) -> Option<Flow> {
        let mut f = r.flow(self.ctx)?;
        if let Some(m) = self.samplers
            && let Some(id) = r.sampler_id()
            && let Some(&rate) = m.get(&id)
        {
            f.sampling_interval = rate;
        }
        Some(f)
    }

    /// The flows of one of this set's records ([`Record::flows`]: two for a biflow record whose
    /// halves both carry traffic), with the sampling rate of the sampler it names, if any: the
    /// rate applies to both halves.
    #[inline]
    pub fn record_flows(&self, r: &Record<'a>) -> RecordFlows {
        match self.flow(r) {
            Some(f) => r.halves(f, self.ctx),
            None => RecordFlows::default(),
        }
    }

    /// The template key (for v5: version 5, template id 0).
    pub fn key(&self) -> TemplateKey {
        self.key
    }

    /// Offset of the set header in its datagram.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The template.
    pub fn template(&self) -> &'a Template {
        self.template
    }

    /// Header, exporter and receive time of the datagram that carried the set.
    pub fn context(&self) -> &'a RecordOrigin {
        self.ctx
    }

    /// Whether the records are options records.
    pub fn is_options(&self) -> bool {
        matches!(self.template.kind(), template::TemplateKind::Options { .. })
    }

    /// The records, as zero-copy views.
    pub fn records(&self) -> Records<'a> {
        Records::new(self.body, self.template)
    }

    /// The normalized flows of the records (none for an options set), both halves of biflow
    /// records ([`DataSet::record_flows`]).
    pub fn flows(&self) -> impl Iterator<Item = Flow> + use<'a> {
        let set = *self;
        self.flow_records()
            .flat_map(move |r: Record<'a>| set.record_flows(&r))
    }

    /// Folds the flows of `records` (this set's records not yet iterated) into `acc`: the
    /// loop behind [`Flows::fold`] and so `for_each`. Per set, not per record, it picks the
    /// reader: v5's constant offsets, fixed-length records without per-sampler rates nor
    /// reverse halves, or the general path (biflow records included).
    #[inline(always)]
    fn fold_flows<B, F: FnMut(B, Flow) -> B>(
        &self,
        records: Records<'a>,
        mut acc: B,
        f: &mut F,
    ) -> B {
        let body = records.remaining();
        if self.template.is_v5() {
            let records = body.as_chunks::<{ v5::field::RECORD_LEN }>().0;
            match v5::V5Reader::new(self.ctx) {
                Some(reader) => {
                    for r in records {
                        acc = f(acc, reader.flow(v5::V5Record(r)));
                    }
                }
                None => {
                    for r in records {
                        acc = f(acc, v5::V5Record(r).flow(self.ctx));
                    }
                }
            }
            return acc;
        }
        if self.samplers.is_none()
            && !self.template.is_biflow()
            && !self.template.has_duration()
            && let Some(len) = self.template.record_len()
            && len > 0
        {
            return self.fold_fixed(body, len, acc, f);
        }
        // Biflow records come here too: one call site of `f` for both halves (another one
        // made the common templates' loops slower, measured).
        for r in records {
            for flow in self.record_flows(&r) {
                acc = f(acc, flow);
            }
        }
        acc
    }

    /// [`DataSet::fold_flows`] for fixed-length records read at fixed offsets, without
    /// per-sampler rates, reverse halves or durations: through a [`FixedReader`] compiled for
    /// the set when the template allows (see `record/fixed.rs`), else record by record. Not
    /// inlined into the fold: its loops would otherwise crowd v5's (more registers saved,
    /// measured +7 % instructions there).
    #[inline(never)]
    fn fold_fixed<B, F: FnMut(B, Flow) -> B>(
        &self,
        body: &'a [u8],
        len: usize,
        mut acc: B,
        f: &mut F,
    ) -> B {
        let (t, ctx) = (self.template, self.ctx);
        if let Some(reader) = FixedReader::new(t, ctx) {
            // Where `body` (what is left of the set) starts in the bytes around it, if it lies
            // in them (always, by construction).
            let at = offset_in(self.around, body);
            let around = match self.around.get(at..at.saturating_add(body.len())) {
                Some(b) if core::ptr::eq(b, body) => (self.around, at),
                _ => (body, 0),
            };
            return reader.fold(around, body, len, acc, f);
        }
        for rec in body.chunks_exact(len) {
            if let Some(flow) = Record::new(rec, t).flow_raw(ctx) {
                acc = f(acc, flow);
            }
        }
        acc
    }

    /// The reverse half of `r`, a biflow record whose forward half was already yielded (a
    /// `for_each` after `next`). Out of line, and given no closure: handing [`Flows::fold`]'s
    /// closure to a function not inlined made a plain sum over v5 flows 11 % slower
    /// (instructions, callgrind).
    #[cold]
    #[inline(never)]
    fn reverse_half(&self, r: Record<'a>) -> Option<Flow> {
        self.record_flows(&r).nth(1)
    }

    /// The records, or none for an options set.
    fn flow_records(&self) -> Records<'a> {
        if self.is_options() {
            Records::new(&[], self.template)
        } else {
            self.records()
        }
    }
}

/// Iterator over the normalized flows of every data set of a [`DecodedDatagram`]; see
/// [`DecodedDatagram::flows`]. A plain loop over sets and records, without closures in between.
/// A biflow record yields its forward half, then its reverse half ([`Record::flows`]).
#[derive(Debug, Clone)]
pub struct Flows<'a> {
    sets: DataSets<'a>,
    current: Option<(DataSet<'a>, Records<'a>)>,
    /// The biflow record whose forward half was yielded last, when its reverse half is still
    /// to come (a record, not the flow: it keeps this iterator small to move).
    reverse: Option<Record<'a>>,
}

impl Iterator for Flows<'_> {
    type Item = Flow;

    #[inline(always)]
    fn next(&mut self) -> Option<Flow> {
        if let Some(r) = self.reverse.take()
            && let Some((set, _)) = &self.current
            && let Some(f) = set.record_flows(&r).nth(1)
        {
            return Some(f);
        }
        loop {
            let (set, records) = self.current.as_mut()?;
            for r in records.by_ref() {
                if let Some(f) = set.flow(&r) {
                    if set.template.is_biflow() {
                        let mut halves = r.halves(f, set.ctx);
                        let first = halves.next();
                        if halves.len() > 0 {
                            self.reverse = Some(r);
                        }
                        return first;
                    }
                    return Some(f);
                }
            }
            self.current = self.sets.next().map(|s| (s, s.flow_records()));
        }
    }

    /// Internal iteration (`for_each`, `fold`, `sum`, ...): picks the reader once per set
    /// instead of once per record, and hands each flow straight to `f`. The fastest way to
    /// read a datagram's flows.
    #[inline]
    fn fold<B, F: FnMut(B, Flow) -> B>(self, init: B, mut f: F) -> B {
        let mut acc = init;
        if let Some(r) = self.reverse
            && let Some((set, _)) = &self.current
            && let Some(rev) = set.reverse_half(r)
        {
            acc = f(acc, rev);
        }
        if let Some((set, records)) = self.current {
            acc = set.fold_flows(records, acc, &mut f);
        }
        for set in self.sets {
            acc = set.fold_flows(set.flow_records(), acc, &mut f);
        }
        acc
    }
}
