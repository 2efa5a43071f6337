//! The records of a set whose template has every slot at a fixed offset, read a set at a time:
//! the loop behind [`Flows::fold`](crate::decoded::Flows) (and so `for_each`) for the templates
//! most exporters send.
//!
//! When the template is compiled, its slots become a [`Windows`] layout: for each integer field
//! the offset where it *ends* and a mask, for each address where it starts, and the clock of
//! the flow times; per set, a [`FixedReader`] adds the packet's facts. Each record is then read
//! through a window of [`W`] bytes that starts [`BEFORE`] bytes before the record (a `&[u8; W]`).
//! Indices are `u8`s and W leaves room for 16 bytes after any of them, so the compiler proves
//! every read in bounds with no instruction spent on it: an integer is one big-endian 8-byte
//! load that ends where the field ends, masked; no shift, no bounds check, no branch.
//!
//! Windows are cut from the datagram, so they may reach into the set header and the sets
//! around; those bytes only ever meet a mask that clears them. The records no window fits
//! around in place take a copy: the last ones of the datagram (within W bytes of its end) are
//! read through windows of one zeroed copy of those bytes, twice as long; the first of a
//! pending set (kept without the bytes before it) through a zeroed window of its own. Every
//! record of the set takes the same reader, and gives the flow a window in place would.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::Flow;
use crate::header::RecordOrigin;
use crate::template::{AddrAt, SLOT_COUNT, SlotId, Template, TimeSource, Wide};
use crate::time::uptime_to_unix_ms;

/// Bytes of a window before its record: an integer that ends at byte `e` of the record is then
/// the 8 bytes at window index `e`.
const BEFORE: usize = 8;

/// Bytes of a window: room for a 16-byte address at any `u8` index.
const W: usize = 272;

/// The integer fields of a flow, in the order of [`Windows`]' `ends` and `masks`; then the two
/// times ([`START`], [`END`]).
const INTS: [SlotId; 9] = [
    SlotId::InputIf,
    SlotId::OutputIf,
    SlotId::Direction,
    SlotId::Protocol,
    SlotId::SrcPort,
    SlotId::DstPort,
    SlotId::Bytes,
    SlotId::Packets,
    SlotId::TcpFlags,
];
const START: usize = INTS.len();
const END: usize = START + 1;

/// How flow times are read: the clock of both time fields, a constant of each monomorphized
/// loop.
const UPTIME: u8 = 0;
const MILLIS: u8 = 1;
const SECS: u8 = 2;

/// A template's fixed-offset slots laid out for reading records through windows (see the module
/// docs); compiled once with the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Where each integer ends in its record (the 8 bytes at that window index end with it).
    /// A `u8`: every read of a [`W`]-byte window at such an index is in bounds, provably.
    ends: [u8; END + 1],
    /// Which bits of those 8 bytes are the field (0 for a field the template lacks).
    masks: [u64; END + 1],
    /// Window index of the source and destination address.
    addrs: [u8; 2],
    v6: bool,
    clock: u8,
}

/// Where an integer slot ends in its record, from its [`Wide`] load.
fn end_of(w: Wide) -> u16 {
    if w.shift > 0 {
        8 - u16::from(w.shift / 8)
    } else {
        w.load_at + 8
    }
}

impl Windows {
    /// The layout of a template with these fixed-offset readers, address positions and time
    /// sources; `None` unless both addresses are of one family, both times come from one of
    /// the common clocks (sysUptime, Unix ms or s) and every slot lies in the first 248 bytes.
    pub(crate) fn compile(
        wide: &[Wide; SLOT_COUNT],
        addrs: [AddrAt; 2],
        times: [TimeSource; 2],
    ) -> Option<Windows> {
        let (clock, start, end) = match times {
            [TimeSource::Uptime(a), TimeSource::Uptime(b)] => (UPTIME, a, b),
            [TimeSource::Millis(a), TimeSource::Millis(b)] => (MILLIS, a, b),
            [TimeSource::Secs(a), TimeSource::Secs(b)] => (SECS, a, b),
            _ => return None,
        };
        let (addrs, v6) = match addrs {
            [AddrAt::V4(s), AddrAt::V4(d)] => ([s, d], false),
            [AddrAt::V6(s), AddrAt::V6(d)] => ([s, d], true),
            _ => return None,
        };
        let index = |at: u16| u8::try_from(at).ok();
        let (mut ends, mut masks) = ([0; END + 1], [0; END + 1]);
        for (i, s) in INTS.iter().chain(&[start, end]).enumerate() {
            let w = wide[*s as usize];
            (ends[i], masks[i]) = (index(end_of(w))?, w.mask);
        }
        masks[INTS.len() - 1] &= 0xff; // TCP flags: the low byte of a 2-byte field
        let [s, d] = addrs.map(|a| a.saturating_add(BEFORE as u16));
        Some(Windows {
            ends,
            masks,
            addrs: [index(s)?, index(d)?],
            v6,
            clock,
        })
    }
}

/// A [`Windows`] layout with the facts of the packet whose set it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedReader<'t> {
    layout: &'t Windows,
    export_ms: u64,
    uptime: u32,
    ts_micros: i64,
    exporter: IpAddr,
    sampling_interval: u32,
}

impl<'t> FixedReader<'t> {
    /// The reader of `t`'s records in a packet of `ctx`, when its template has a [`Windows`]
    /// layout (and, for sysUptime times, the header an uptime).
    #[inline]
    pub(crate) fn new(t: &'t Template, ctx: &'t RecordOrigin) -> Option<FixedReader<'t>> {
        let layout = t.windows()?;
        let uptime = match (layout.clock, ctx.header.sys_uptime_ms) {
            (UPTIME, None) => return None,
            (_, up) => up.unwrap_or(0),
        };
        Some(FixedReader {
            layout,
            export_ms: ctx.export_ms,
            uptime,
            ts_micros: ctx.ts_micros,
            exporter: ctx.exporter,
            sampling_interval: ctx.sampling_interval.max(1),
        })
    }

    /// Folds the flows of `body`'s records (`len` bytes each) into `acc`, in record order.
    #[inline(always)]
    pub(crate) fn fold<B, F: FnMut(B, Flow) -> B>(
        &self,
        around: (&[u8], usize),
        body: &[u8],
        len: usize,
        acc: B,
        f: &mut F,
    ) -> B {
        // One loop per address family and clock: each a constant in its loop.
        match (self.layout.v6, self.layout.clock) {
            (false, UPTIME) => self.run::<false, UPTIME, B, F>(around, body, len, acc, f),
            (false, MILLIS) => self.run::<false, MILLIS, B, F>(around, body, len, acc, f),
            (false, _) => self.run::<false, SECS, B, F>(around, body, len, acc, f),
            (true, UPTIME) => self.run::<true, UPTIME, B, F>(around, body, len, acc, f),
            (true, MILLIS) => self.run::<true, MILLIS, B, F>(around, body, len, acc, f),
            (true, _) => self.run::<true, SECS, B, F>(around, body, len, acc, f),
        }
    }

    /// [`FixedReader::fold`] for one address family and clock. `body` is at `around.1` in
    /// `around.0` (the datagram): windows may reach into the bytes around it.
    #[inline(always)]
    fn run<const V6: bool, const CLOCK: u8, B, F: FnMut(B, Flow) -> B>(
        &self,
        (src, at): (&[u8], usize),
        body: &[u8],
        len: usize,
        mut acc: B,
        f: &mut F,
    ) -> B {
        if len == 0 {
            return acc;
        }
        let n = body.len() / len;
        // The first records, when fewer than BEFORE bytes precede them (the first record of a
        // pending set, kept without the bytes before it): copied into a zeroed window. Every
        // slot ends within the record, and the bytes around it only ever meet a mask that
        // clears them, so the flow is the one a window in place would give.
        let alone = |k: usize| {
            let mut w = [0u8; W];
            let rec = body.get(k * len..).unwrap_or_default();
            let rec = rec.get(..len.min(W - BEFORE)).unwrap_or(rec);
            if let Some(dst) = w.get_mut(BEFORE..BEFORE + rec.len()) {
                dst.copy_from_slice(rec);
            }
            self.flow::<V6, CLOCK>(&w)
        };
        let first = BEFORE.saturating_sub(at).div_ceil(len).min(n);
        let mut k = 0;
        while k < first {
            acc = f(acc, alone(k));
            k += 1;
        }
        // Record k's window is src[at + k * len - BEFORE..][..W]: it fits for k < last. The
        // records after (in the last W bytes of `src`) are read through windows of a zeroed
        // copy of those bytes, twice as long, so that a window fits at each of them.
        let last = (src.len() + BEFORE)
            .checked_sub(W + at)
            .map_or(0, |room| (room / len + 1).min(n))
            .max(first);
        let mut tail = [0u8; 2 * W];
        if last < n {
            let bytes = src
                .get((at + last * len).saturating_sub(BEFORE)..)
                .unwrap_or_default();
            let bytes = bytes.get(..W).unwrap_or(bytes);
            if let Some(dst) = tail.get_mut(..bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        let here = src
            .get((at + k * len).saturating_sub(BEFORE)..)
            .unwrap_or_default();
        for (mut rest, from, end) in [(here, k, last), (&tail[..], last, n)] {
            if k != from {
                break; // the windows in place stopped early: not by construction
            }
            while k < end
                && let Some(w) = rest.first_chunk::<W>()
            {
                acc = f(acc, self.flow::<V6, CLOCK>(w));
                rest = rest.get(len..).unwrap_or_default();
                k += 1;
            }
        }
        // Unreachable by construction (each record left starts within the copy, less than W
        // bytes into it, and a window of W fits in place before `last`); kept so that no
        // record could be skipped.
        while k < n {
            acc = f(acc, alone(k));
            k += 1;
        }
        acc
    }

    /// The flow of the record whose window is `w` (it starts [`BEFORE`] bytes before it).
    #[inline(always)]
    fn flow<const V6: bool, const CLOCK: u8>(&self, w: &[u8; W]) -> Flow {
        // Every index is a u8: the compiler sees that each read lies in the window.
        let l = self.layout;
        let int = |i: usize| {
            let at = usize::from(l.ends[i]);
            match w[at..].first_chunk::<8>() {
                Some(b) => u64::from_be_bytes(*b) & l.masks[i],
                None => 0,
            }
        };
        let addr = |i: usize| {
            let at = usize::from(l.addrs[i]);
            if V6 {
                w[at..]
                    .first_chunk::<16>()
                    .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |b| {
                        IpAddr::V6(Ipv6Addr::from(*b))
                    })
            } else {
                w[at..]
                    .first_chunk::<4>()
                    .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |b| {
                        IpAddr::V4(Ipv4Addr::from(*b))
                    })
            }
        };
        let (start, end) = (int(START), int(END));
        let (start_ms, end_ms) = match CLOCK {
            UPTIME => (
                uptime_to_unix_ms(self.export_ms, self.uptime, start as u32),
                uptime_to_unix_ms(self.export_ms, self.uptime, end as u32),
            ),
            MILLIS => (start, end),
            _ => (start.saturating_mul(1000), end.saturating_mul(1000)),
        };
        Flow {
            ts_micros: self.ts_micros,
            exporter: self.exporter,
            input_if: int(0) as u32,
            output_if: int(1) as u32,
            direction: int(2) as u8,
            protocol: int(3) as u8,
            src_addr: addr(0),
            dst_addr: addr(1),
            src_port: int(4) as u16,
            dst_port: int(5) as u16,
            bytes: int(6),
            packets: int(7),
            tcp_flags: int(8) as u8,
            sampling_interval: self.sampling_interval,
            start_ms,
            end_ms,
        }
    }
}
