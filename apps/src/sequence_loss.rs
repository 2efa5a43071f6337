//! Loss read from exporters' sequence numbers, as the writer reports it.

use std::collections::HashMap;

use netflow_wire::sequence::{SequenceAdvance, SequenceKey, SequenceTracker};
use netflow_wire::{ExporterKey, Header};

/// The sequence tracker and, per key, the units missing as last reported.
///
/// What a packet changes is the tracker's settled reading, not the packet's own gap: until the
/// tracker has seen how an exporter counts (softflowd's IPFIX counts the current message), an
/// early packet can read as a gap that later packets show was none, and a late packet fills a
/// gap counted before.
#[derive(Debug, Default)]
pub struct SequenceLoss {
    tracker: SequenceTracker,
    reported: HashMap<SequenceKey, u64>,
}

impl SequenceLoss {
    /// Observes one packet; returns how much the units missing from its key changed.
    pub fn observe(
        &mut self,
        exporter: ExporterKey,
        header: &Header,
        units: SequenceAdvance,
    ) -> i64 {
        self.tracker.observe_advance(exporter, header, units);
        let key = SequenceKey {
            exporter,
            version: header.version,
            source_id: header.source_id,
        };
        // Untracked keys (past the tracker's limit) have no stats and are not kept here.
        let Some(now) = self.tracker.stats(&key).map(|s| s.lost) else {
            return 0;
        };
        let before = self.reported.insert(key, now).unwrap_or(0);
        i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v5 gap counts its flows as lost; the late packet that fills it takes them back.
    #[test]
    fn test_a_late_packet_takes_back_its_gap() {
        let mut loss = SequenceLoss::default();
        let exporter = ExporterKey::from(std::net::IpAddr::from([192, 0, 2, 9]));
        let mut total = 0;
        let mut packet = |sequence: u32| {
            let header = Header {
                version: 5,
                count: 2,
                sys_uptime_ms: Some(10_000 + sequence),
                export_secs: 1_700_000_000,
                sequence,
                ..Header::default()
            };
            total += loss.observe(exporter, &header, SequenceAdvance::of(&header, 0, 0));
            total
        };
        assert_eq!(packet(0), 0);
        assert_eq!(packet(2), 0);
        assert_eq!(packet(6), 2, "flows 4 and 5 missing");
        assert_eq!(packet(8), 2);
        assert_eq!(packet(4), 0, "the late packet brought them");
        assert_eq!(packet(14), 4, "flows 10 to 13 missing");
    }
}
