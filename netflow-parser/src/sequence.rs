//! Sequence tracking: loss, reordering, duplicates and exporter restarts per exporter and domain.

use std::collections::HashMap;

use crate::cache::ExporterKey;
use crate::header::Header;

/// Which sequence-number space a packet belongs to: RFC 3954 §5.1 counts per exporter and
/// source id, RFC 7011 §3.1 per observation domain; v5 per engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceKey {
    /// The exporter.
    pub exporter: ExporterKey,
    /// 5, 9 or 10.
    pub version: u16,
    /// v9 source id, IPFIX observation domain, v5 `engine_type << 8 | engine_id`.
    pub source_id: u32,
}

/// What one packet's sequence number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SequenceEvent {
    /// The first packet of this key.
    First,
    /// Exactly the expected number.
    InOrder,
    /// Units (v5 flows, v9 packets, IPFIX data records) were skipped: lost, or late.
    Gap {
        /// How many units are missing.
        missing: u32,
    },
    /// A packet older than the newest one, not seen before: it was counted missing in an earlier
    /// gap, which is now reduced by its units.
    Late,
    /// A sequence number seen very recently: the packet was duplicated on the way.
    Duplicate,
    /// The exporter restarted (uptime went back, or the number jumped by more than the reorder
    /// window): tracking starts over, nothing is counted as lost.
    Reset,
    /// More keys than the tracker's limit: this one is not tracked.
    Untracked,
}

/// Counters of one sequence key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceStats {
    /// Packets observed (duplicates excluded).
    pub packets: u64,
    /// Units received: flows (v5), packets (v9) or data records (IPFIX).
    pub received: u64,
    /// Units the exporter sent that never arrived (gaps minus late arrivals).
    pub lost: u64,
    /// Late packets.
    pub late: u64,
    /// Duplicated packets.
    pub duplicates: u64,
    /// Exporter restarts.
    pub resets: u64,
}

impl SequenceStats {
    /// Units the exporter sent, as far as the sequence numbers tell: received + lost.
    pub fn sent(&self) -> u64 {
        self.received + self.lost
    }
}

const RECENT: usize = 16;

/// How an exporter counts: RFC 3954 / 7011 number a packet by what was sent *before* it,
/// counting every data record (options included). Some exporters count flows only, or include
/// the current packet's records (softflowd's IPFIX). The tracker follows all four readings at
/// once and reports the one with the fewest anomalies (the RFC's on a tie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    PriorAll = 0,
    PriorFlows = 1,
    CurrentAll = 2,
    CurrentFlows = 3,
}

const CONVENTIONS: [Convention; 4] = [
    Convention::PriorAll,
    Convention::PriorFlows,
    Convention::CurrentAll,
    Convention::CurrentFlows,
];

/// How far one packet moves its sequence number, counted two ways (see [`SequenceAdvance::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequenceAdvance {
    /// Every data record (IPFIX; options included), flows (v5), or 1 packet (v9).
    pub all: u32,
    /// The same without options records.
    pub flows: u32,
}

impl SequenceAdvance {
    /// How far a packet moves its sequence number: `header.count` flows for v5, one packet for v9,
    /// the data records (`data_records` flows + `options_records`) for IPFIX.
    pub fn of(header: &Header, data_records: u32, options_records: u32) -> SequenceAdvance {
        match header.version {
            5 => SequenceAdvance {
                all: u32::from(header.count),
                flows: u32::from(header.count),
            },
            9 => SequenceAdvance { all: 1, flows: 1 },
            _ => SequenceAdvance {
                all: data_records.saturating_add(options_records),
                flows: data_records,
            },
        }
    }
}

/// Loss as one convention reads the sequence numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    lost: u64,
    late: u64,
    anomalies: u64,
}

#[derive(Debug, Clone)]
struct State {
    last_seq: u32,
    last: SequenceAdvance,
    tallies: [Tally; 4],
    uptime: Option<u32>,
    recent: [u32; RECENT],
    recent_at: usize,
    stats: SequenceStats,
}

impl State {
    fn expected(&self, c: Convention, cur: SequenceAdvance) -> u32 {
        self.last_seq.wrapping_add(match c {
            Convention::PriorAll => self.last.all,
            Convention::PriorFlows => self.last.flows,
            Convention::CurrentAll => cur.all,
            Convention::CurrentFlows => cur.flows,
        })
    }

    /// The convention with the fewest anomalies so far.
    fn best(&self) -> usize {
        (0..4)
            .min_by_key(|&i| (self.tallies[i].anomalies, i))
            .unwrap_or(0)
    }
}

/// Tracks sequence numbers per [`SequenceKey`] and counts what was lost.
///
/// Feed it every decoded packet with [`SequenceTracker::observe_decoded`] (or
/// [`SequenceTracker::observe`] with the header and the units). Numbers are compared modulo
/// 2^32, so wrapping counters are fine. A jump forward of more than `window` units, or back by
/// more than `window`, or an uptime that went back by more than 10 s, is an exporter restart,
/// not a loss.
#[derive(Debug, Clone)]
pub struct SequenceTracker {
    map: HashMap<SequenceKey, State>,
    max_keys: usize,
    window: u32,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        SequenceTracker::new(65_536, 1 << 24)
    }
}

impl SequenceTracker {
    /// A tracker for at most `max_keys` keys, treating jumps over `window` units as restarts.
    pub fn new(max_keys: usize, window: u32) -> SequenceTracker {
        SequenceTracker {
            map: HashMap::new(),
            max_keys,
            window: window.min(i32::MAX as u32),
        }
    }

    /// Records one decoded packet.
    pub fn observe_decoded(&mut self, decoded: &crate::DecodedDatagram<'_>) -> SequenceEvent {
        let h = decoded.header();
        let units = SequenceAdvance::of(&h, decoded.data_records(), decoded.options_records());
        self.observe_advance(decoded.exporter(), &h, units)
    }

    /// Records one packet: its header and, for IPFIX, the number of data records it carried.
    pub fn observe(
        &mut self,
        exporter: ExporterKey,
        header: &Header,
        data_records: u32,
    ) -> SequenceEvent {
        self.observe_advance(
            exporter,
            header,
            SequenceAdvance::of(header, data_records, 0),
        )
    }

    /// Records one packet with its units.
    pub fn observe_advance(
        &mut self,
        exporter: ExporterKey,
        header: &Header,
        units: SequenceAdvance,
    ) -> SequenceEvent {
        let key = SequenceKey {
            exporter,
            version: header.version,
            source_id: header.source_id,
        };
        let seq = header.sequence;
        if !self.map.contains_key(&key) && self.map.len() >= self.max_keys {
            return SequenceEvent::Untracked;
        }
        let window = self.window;
        let state = self.map.entry(key).or_insert_with(|| State {
            last_seq: seq,
            last: units,
            tallies: [Tally::default(); 4],
            uptime: None,
            recent: [seq.wrapping_sub(1); RECENT],
            recent_at: 0,
            stats: SequenceStats::default(),
        });
        let restarted = match (state.uptime, header.sys_uptime_ms) {
            (Some(before), Some(now)) => now < before && before - now > 10_000,
            _ => false,
        };
        let ds = CONVENTIONS.map(|c| seq.wrapping_sub(state.expected(c, units)) as i32);
        let best = state.best();
        let event = if state.stats.packets == 0 {
            SequenceEvent::First
        } else if restarted || ds.iter().all(|d| d.unsigned_abs() > window) {
            SequenceEvent::Reset
        } else if ds[best] == 0 {
            SequenceEvent::InOrder
        } else if state.recent.contains(&seq) {
            SequenceEvent::Duplicate
        } else if ds[best] > 0 {
            SequenceEvent::Gap {
                missing: ds[best].unsigned_abs(),
            }
        } else {
            SequenceEvent::Late
        };
        match event {
            SequenceEvent::Duplicate => {
                state.stats.duplicates += 1;
                return event;
            }
            SequenceEvent::Reset => state.stats.resets += 1,
            SequenceEvent::First => {}
            _ => {
                for (t, &d) in state.tallies.iter_mut().zip(&ds) {
                    if d > 0 {
                        t.lost += u64::from(d.unsigned_abs());
                        t.anomalies += 1;
                    } else if d < 0 {
                        t.late += 1;
                        t.lost = t.lost.saturating_sub(u64::from(units.all));
                        t.anomalies += 1;
                    }
                }
            }
        }
        // A packet behind the newest under every reading is late; otherwise it is the newest.
        let late = event == SequenceEvent::Late && ds.iter().all(|&d| d < 0);
        if !late {
            state.last_seq = seq;
            state.last = units;
        }
        let t = state.tallies[state.best()];
        let s = &mut state.stats;
        (s.lost, s.late) = (t.lost, t.late);
        s.packets += 1;
        s.received += u64::from(units.all);
        if header.sys_uptime_ms.is_some() && !late {
            state.uptime = header.sys_uptime_ms;
        }
        state.recent[state.recent_at] = seq;
        state.recent_at = (state.recent_at + 1) % RECENT;
        event
    }

    /// The counters of one key.
    pub fn stats(&self, key: &SequenceKey) -> Option<SequenceStats> {
        self.map.get(key).map(|s| s.stats)
    }

    /// Every key with its counters.
    pub fn iter(&self) -> impl Iterator<Item = (&SequenceKey, &SequenceStats)> {
        self.map.iter().map(|(k, s)| (k, &s.stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn hdr(version: u16, seq: u32, count: u16, uptime: u32) -> Header {
        Header {
            version,
            count,
            sys_uptime_ms: Some(uptime),
            export_secs: 0,
            export_nanos: 0,
            sequence: seq,
            source_id: 0,
            sampling: 0,
        }
    }

    const EXP: ExporterKey = ExporterKey {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
    };

    #[test]
    fn v9_gap_late_duplicate_reset() {
        let mut t = SequenceTracker::default();
        assert_eq!(
            t.observe(EXP, &hdr(9, 10, 5, 100_000), 0),
            SequenceEvent::First
        );
        assert_eq!(
            t.observe(EXP, &hdr(9, 11, 5, 100_001), 0),
            SequenceEvent::InOrder
        );
        assert_eq!(
            t.observe(EXP, &hdr(9, 14, 5, 100_002), 0),
            SequenceEvent::Gap { missing: 2 }
        );
        assert_eq!(
            t.observe(EXP, &hdr(9, 12, 5, 100_001), 0),
            SequenceEvent::Late
        );
        assert_eq!(
            t.observe(EXP, &hdr(9, 14, 5, 100_002), 0),
            SequenceEvent::Duplicate
        );
        let k = SequenceKey {
            exporter: EXP,
            version: 9,
            source_id: 0,
        };
        let s = t.stats(&k).unwrap();
        assert_eq!((s.received, s.lost, s.late, s.duplicates), (4, 1, 1, 1));
        assert_eq!(s.sent(), 5);
        // Exporter restart: uptime back to near zero, sequence back to 0.
        assert_eq!(t.observe(EXP, &hdr(9, 0, 5, 50), 0), SequenceEvent::Reset);
        assert_eq!(t.observe(EXP, &hdr(9, 1, 5, 60), 0), SequenceEvent::InOrder);
        assert_eq!(t.stats(&k).unwrap().lost, 1);
    }

    #[test]
    fn v5_counts_flows_and_wraps() {
        let mut t = SequenceTracker::default();
        t.observe(EXP, &hdr(5, u32::MAX - 9, 30, 5), 0);
        assert_eq!(
            t.observe(EXP, &hdr(5, 20, 30, 6), 0),
            SequenceEvent::InOrder
        );
        assert_eq!(
            t.observe(EXP, &hdr(5, 80, 30, 7), 0),
            SequenceEvent::Gap { missing: 30 }
        );
    }

    #[test]
    fn key_limit() {
        let mut t = SequenceTracker::new(1, 1000);
        t.observe(EXP, &hdr(9, 1, 1, 1), 0);
        let other = ExporterKey {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 0,
        };
        assert_eq!(
            t.observe(other, &hdr(9, 1, 1, 1), 0),
            SequenceEvent::Untracked
        );
    }
}
