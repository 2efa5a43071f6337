//! The pending buffer: data sets that arrived before their template, kept (bounded in count,
//! bytes and age) until the template comes.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::cache::{ExporterKey, Limits, TemplateCache, TemplateKey};
use crate::header::RecordOrigin;
use crate::report::Capped;

/// A data set that arrived before its template, kept until the template comes.
#[derive(Debug, Clone)]
pub(crate) struct PendingSet {
    pub key: TemplateKey,
    pub ctx: RecordOrigin,
    pub offset: usize,
    /// A slice of the received datagram (`Decoder::decode_bytes`) or a copy of the set.
    pub body: Bytes,
}

/// Why a pending data set was given up ([`ExpiredSet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpiryReason {
    /// Its template did not arrive within [`Limits::max_pending_age_micros`].
    Age,
    /// The pending buffer was full ([`Limits::max_pending_sets`] / [`Limits::max_pending_bytes`])
    /// and this, the oldest set, made room for a newer one.
    Evicted,
    /// Its exporter was evicted from the full template cache (see
    /// [`TemplateCache`]), and everything known about it with it.
    ExporterEvicted,
}

/// A data set that waited for its template in vain: its records are lost. Reported once by the
/// [`DecodedDatagram`](crate::DecodedDatagram) of the call that gave it up (or by
/// [`Decoder::expire`](crate::Decoder::expire)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredSet {
    /// The template that never came.
    pub key: TemplateKey,
    /// Size of the set body in bytes.
    pub bytes: usize,
    /// When the datagram that carried it was received (caller's clock, Unix µs).
    pub received_micros: i64,
    /// Why it was given up.
    pub reason: ExpiryReason,
}

/// A data set of this datagram whose template is not known yet: kept in the pending buffer
/// and decoded when the template arrives, or reported in [`DecodedDatagram::expired`](crate::DecodedDatagram::expired)
/// if it waits in vain. Not a loss (yet), so not a [`DecodeError`](crate::DecodeError): see
/// [`DecodedDatagram::waiting`](crate::DecodedDatagram::waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingSet {
    /// Offset of the set header in the datagram.
    pub offset: usize,
    /// The template it waits for.
    pub key: TemplateKey,
}

/// Whether a set could be kept ([`PendingBuffer::defer`]).
pub(crate) enum Deferred {
    Kept,
    /// Larger than the whole buffer, or the buffer is disabled.
    Dropped,
}

/// The bounded FIFO of pending sets, with the sets given up and released by the current call.
#[derive(Debug, Default)]
pub(crate) struct PendingBuffer {
    /// Boxed, so that a set costs what it is and growing the queue moves pointers.
    sets: VecDeque<Box<PendingSet>>,
    bytes: usize,
    /// Sets given up during the current call.
    pub expired: Capped<ExpiredSet>,
    /// Sets released during the current call: their template arrived. Boxes moved from the
    /// queue, so releasing many sets moves pointers, not 150-byte sets.
    #[allow(clippy::vec_box)]
    pub ready: Vec<Box<PendingSet>>,
}

impl PendingBuffer {
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Starts a call: forgets what the previous one gave up or released.
    pub fn clear_outcomes(&mut self) {
        self.expired.clear();
        self.ready.clear();
    }

    /// Gives up sets older than the age limit at `now`.
    pub fn expire_old(&mut self, now: i64, limits: &Limits) {
        while let Some(p) = self.sets.front() {
            if now.saturating_sub(p.ctx.ts_micros) <= limits.max_pending_age_micros {
                break;
            }
            self.give_up_front(ExpiryReason::Age);
        }
    }

    fn give_up_front(&mut self, reason: ExpiryReason) {
        if let Some(p) = self.sets.pop_front() {
            self.give_up(&p, reason);
        }
    }

    fn give_up(&mut self, p: &PendingSet, reason: ExpiryReason) {
        self.bytes -= p.body.len();
        self.expired.push(ExpiredSet {
            key: p.key,
            bytes: p.body.len(),
            received_micros: p.ctx.ts_micros,
            reason,
        });
    }

    /// Keeps a copy of `body`, making room by giving up the oldest sets.
    pub fn defer(
        &mut self,
        key: TemplateKey,
        ctx: RecordOrigin,
        offset: usize,
        body: &[u8],
        datagram: Option<&Bytes>,
        limits: &Limits,
    ) -> Deferred {
        let bytes = body.len();
        if limits.max_pending_sets == 0 || bytes > limits.max_pending_bytes {
            return Deferred::Dropped;
        }
        while self.sets.len() >= limits.max_pending_sets
            || self.bytes + bytes > limits.max_pending_bytes
        {
            self.give_up_front(ExpiryReason::Evicted);
        }
        self.sets.push_back(Box::new(PendingSet {
            key,
            ctx,
            offset,
            // `body` lies inside `datagram` when there is one (framed from it).
            body: match datagram {
                Some(d) => d.slice_ref(body),
                None => Bytes::copy_from_slice(body),
            },
        }));
        self.bytes += bytes;
        Deferred::Kept
    }

    /// Moves the sets whose template `cache` now knows to `ready`, passing each to `prepare`.
    pub fn release(&mut self, cache: &TemplateCache, mut prepare: impl FnMut(&mut PendingSet)) {
        let mut i = 0;
        while i < self.sets.len() {
            if self
                .sets
                .get(i)
                .is_some_and(|p| cache.get(&p.key).is_some())
                && let Some(mut p) = self.sets.remove(i)
            {
                self.bytes -= p.body.len();
                prepare(&mut p);
                self.ready.push(p);
            } else {
                i += 1;
            }
        }
    }

    /// Gives up every set of `exporter` (evicted from the template cache).
    pub fn drop_exporter(&mut self, exporter: ExporterKey) {
        let mut i = 0;
        while i < self.sets.len() {
            if self.sets.get(i).is_some_and(|p| p.key.exporter == exporter)
                && let Some(p) = self.sets.remove(i)
            {
                self.give_up(&p, ExpiryReason::ExporterEvicted);
            } else {
                i += 1;
            }
        }
    }
}
