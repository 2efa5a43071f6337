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

#[derive(Debug, Clone)]
struct State {
    next: u32,
    uptime: Option<u32>,
    recent: [u32; RECENT],
    recent_at: usize,
    stats: SequenceStats,
}

/// Tracks sequence numbers per [`SequenceKey`] and counts what was lost.
///
/// Feed it every decoded packet's header with [`SequenceTracker::observe`]. Numbers are compared
/// modulo 2^32, so wrapping counters are fine. A jump forward of more than `window` units, or
/// back by more than `window`, or an uptime that went back by more than 10 s, is an exporter
/// restart, not a loss.
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

    /// How many units a packet accounts for in its sequence space: `header.count` flows for v5,
    /// one packet for v9, `data_records` for IPFIX.
    pub fn units(header: &Header, data_records: u32) -> u32 {
        match header.version {
            5 => u32::from(header.count),
            9 => 1,
            _ => data_records,
        }
    }

    /// Records one packet: its header and, for IPFIX, the number of data records it carried.
    pub fn observe(
        &mut self,
        exporter: ExporterKey,
        header: &Header,
        data_records: u32,
    ) -> SequenceEvent {
        let key = SequenceKey {
            exporter,
            version: header.version,
            source_id: header.source_id,
        };
        let units = SequenceTracker::units(header, data_records);
        let seq = header.sequence;
        if !self.map.contains_key(&key) && self.map.len() >= self.max_keys {
            return SequenceEvent::Untracked;
        }
        let window = self.window;
        let state = self.map.entry(key).or_insert_with(|| State {
            next: seq,
            uptime: None,
            recent: [seq.wrapping_sub(1); RECENT],
            recent_at: 0,
            stats: SequenceStats::default(),
        });
        let restarted = match (state.uptime, header.sys_uptime_ms) {
            (Some(before), Some(now)) => now < before && before - now > 10_000,
            _ => false,
        };
        let first = state.stats.packets == 0;
        let d = seq.wrapping_sub(state.next) as i32;
        let event = if first {
            SequenceEvent::First
        } else if restarted {
            SequenceEvent::Reset
        } else if d == 0 {
            SequenceEvent::InOrder
        } else if state.recent.contains(&seq) {
            SequenceEvent::Duplicate
        } else if d > 0 && d.unsigned_abs() <= window {
            SequenceEvent::Gap {
                missing: d.unsigned_abs(),
            }
        } else if d < 0 && d.unsigned_abs() <= window {
            SequenceEvent::Late
        } else {
            SequenceEvent::Reset
        };
        let s = &mut state.stats;
        match event {
            SequenceEvent::Duplicate => {
                s.duplicates += 1;
                return event;
            }
            SequenceEvent::Late => {
                s.late += 1;
                s.lost = s.lost.saturating_sub(u64::from(units));
            }
            SequenceEvent::Gap { missing } => {
                s.lost += u64::from(missing);
                state.next = seq.wrapping_add(units);
            }
            SequenceEvent::Reset => {
                s.resets += 1;
                state.next = seq.wrapping_add(units);
            }
            _ => state.next = seq.wrapping_add(units),
        }
        s.packets += 1;
        s.received += u64::from(units);
        if header.sys_uptime_ms.is_some() && event != SequenceEvent::Late {
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
