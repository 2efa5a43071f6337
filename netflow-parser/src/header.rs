//! Facts from a packet header that records and sequence tracking need.

use std::net::IpAddr;

/// The header facts of a v5, v9 or IPFIX packet, in one `Copy` struct.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Header {
    /// 5, 9 or 10.
    pub version: u16,
    /// Records the header declares: v5 flow records, v9 records of all kinds (exporters often
    /// get it wrong; this crate never relies on it). 0 for IPFIX, which has none.
    pub count: u16,
    /// The exporter's uptime in ms at export (v5, v9); `None` for IPFIX.
    pub sys_uptime_ms: Option<u32>,
    /// Export time, Unix seconds.
    pub export_secs: u32,
    /// Sub-second part of the export time in ns (v5 only; 0 otherwise).
    pub export_nanos: u32,
    /// Sequence number: flows (v5), packets (v9) or data records (IPFIX) sent before this one.
    pub sequence: u32,
    /// v9 source id, IPFIX observation domain id, or for v5 `engine_type << 8 | engine_id`.
    pub source_id: u32,
    /// The v5 header's raw sampling field (2 bits mode, 14 bits interval); 0 otherwise.
    pub sampling: u16,
}

impl Header {
    /// Export time in Unix milliseconds.
    pub fn export_ms(&self) -> u64 {
        u64::from(self.export_secs) * 1000 + u64::from(self.export_nanos / 1_000_000)
    }

    /// The v5 sampling interval (1 in N packets), 1 when unsampled. Always 1 for v9/IPFIX, whose
    /// sampling rate comes from options data.
    pub fn sampling_interval(&self) -> u32 {
        u32::from(self.sampling & 0x3fff).max(1)
    }

    /// The v5 sampling mode (top 2 bits of the sampling field: 1 deterministic, 2 random).
    pub fn sampling_mode(&self) -> u8 {
        (self.sampling >> 14) as u8
    }
}

/// What a record needs besides its own bytes to become a [`Flow`](crate::Flow): who sent it,
/// when it was received, and its packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordOrigin {
    /// The exporter's address.
    pub exporter: IpAddr,
    /// Receive time, Unix microseconds (the caller's clock).
    pub ts_micros: i64,
    /// The packet header.
    pub header: Header,
    /// Sampling interval to record in flows (from the header for v5, 1 otherwise).
    pub sampling_interval: u32,
    /// The header's export time in Unix ms ([`Header::export_ms`]), computed once.
    pub export_ms: u64,
    /// The exporter's systemInitTimeMilliseconds (IPFIX 160) learned from its options data:
    /// the base of sysUpTime-relative times (21/22) in IPFIX, whose header has no uptime.
    pub system_init_ms: Option<u64>,
}

impl Default for RecordOrigin {
    /// Exporter `0.0.0.0`, received at 0, an all-zero header.
    fn default() -> Self {
        RecordOrigin::new(IpAddr::from([0, 0, 0, 0]), 0, Header::default())
    }
}

impl RecordOrigin {
    /// The context of records of a packet with this header, from `exporter`, received at
    /// `ts_micros`.
    pub fn new(exporter: IpAddr, ts_micros: i64, header: Header) -> RecordOrigin {
        RecordOrigin {
            exporter,
            ts_micros,
            header,
            sampling_interval: header.sampling_interval(),
            export_ms: header.export_ms(),
            system_init_ms: None,
        }
    }
}
