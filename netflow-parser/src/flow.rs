//! The normalized flow: one row of the flow table, whatever the export format.

use core::net::{IpAddr, Ipv4Addr};

/// One flow record reduced to the fields a collector stores and aggregates.
///
/// This is the "normalized flow" of the project's design brief: every NetFlow v5 record and every
/// v9 data record that carries source and destination addresses converts to one `Flow`, cheaply
/// (it is `Copy`, and building it reads precomputed offsets only).
///
/// Counters are **as exported** (`bytes`, `packets`): when the exporter samples, multiply them by
/// `sampling_interval` with [`Flow::renormalized`] before storing or aggregating. Absent fields are
/// 0; `direction` is [`Flow::INGRESS`] when the record does not carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// When the collector received the datagram: microseconds since the Unix epoch, UTC.
    /// Supplied by the caller (the parser has no clock).
    pub ts_micros: i64,
    /// The exporter's IP address (the UDP source of the datagram).
    pub exporter: IpAddr,
    /// Input interface index (v5 `input`, v9 `INPUT_SNMP` 10); 0 when absent.
    pub input_if: u32,
    /// Output interface index (v5 `output`, v9 `OUTPUT_SNMP` 14); 0 when absent.
    pub output_if: u32,
    /// 0 = ingress, 1 = egress (v9 `DIRECTION` 61); ingress when absent.
    pub direction: u8,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Source address, IPv4 or IPv6.
    pub src_addr: IpAddr,
    /// Destination address, IPv4 or IPv6.
    pub dst_addr: IpAddr,
    /// Layer-4 source port; 0 when absent.
    pub src_port: u16,
    /// Layer-4 destination port; 0 when absent.
    pub dst_port: u16,
    /// Bytes (octets) as exported, before sampling renormalization.
    pub bytes: u64,
    /// Packets as exported, before sampling renormalization.
    pub packets: u64,
    /// Cumulative TCP flags (OR of the flags seen); 0 when absent.
    pub tcp_flags: u8,
    /// The exporter's sampling interval (1 in N packets); 1 when unsampled or unknown.
    pub sampling_interval: u32,
    /// Flow start, milliseconds since the Unix epoch; 0 when unknown.
    pub start_ms: u64,
    /// Flow end (last packet), milliseconds since the Unix epoch; 0 when unknown.
    pub end_ms: u64,
}

impl Flow {
    /// Value of [`Flow::direction`] for ingress flows (also the default).
    pub const INGRESS: u8 = 0;
    /// Value of [`Flow::direction`] for egress flows.
    pub const EGRESS: u8 = 1;

    /// A copy whose `bytes` and `packets` are multiplied by the sampling interval (saturating at
    /// `u64::MAX`), with `sampling_interval` set to 1 so that renormalizing twice is harmless.
    #[must_use]
    pub fn renormalized(mut self) -> Flow {
        let n = u64::from(self.sampling_interval.max(1));
        self.bytes = self.bytes.saturating_mul(n);
        self.packets = self.packets.saturating_mul(n);
        self.sampling_interval = 1;
        self
    }
}

impl Default for Flow {
    /// All zeros, addresses `0.0.0.0`, direction ingress, sampling interval 1.
    fn default() -> Self {
        let zero = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Flow {
            ts_micros: 0,
            exporter: zero,
            input_if: 0,
            output_if: 0,
            direction: Flow::INGRESS,
            protocol: 0,
            src_addr: zero,
            dst_addr: zero,
            src_port: 0,
            dst_port: 0,
            bytes: 0,
            packets: 0,
            tcp_flags: 0,
            sampling_interval: 1,
            start_ms: 0,
            end_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renormalize_multiplies_and_saturates() {
        let f = Flow {
            bytes: 100,
            packets: 2,
            sampling_interval: 10,
            ..Flow::default()
        };
        let r = f.renormalized();
        assert_eq!((r.bytes, r.packets, r.sampling_interval), (1000, 20, 1));
        assert_eq!(r.renormalized(), r);
        let big = Flow {
            bytes: u64::MAX / 2,
            sampling_interval: 4,
            ..Flow::default()
        };
        assert_eq!(big.renormalized().bytes, u64::MAX);
    }
}
