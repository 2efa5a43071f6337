//! A job window's sums computed by the database server (aggregation pushdown), in a shape
//! that is the backend's business neither in what nor how: the bot turns it into the same
//! values as its own pass over the streamed flows.
//!
//! For every exporter and direction (index 0: flows with direction 0, grouped by `input_if`,
//! ranking source addresses; index 1: direction 1, `output_if`, destination addresses): the
//! bytes and flows, every interface with its bytes, and the top `n` lists the bot sends. A top
//! list holds the `n` largest entries by bytes, ties broken by the key ascending (addresses:
//! IPv4 before IPv6, then numerically; pairs by source, then destination), so it is exactly
//! the first `n` of the full ranking. Sums saturate at `u64::MAX` on the streaming path; a
//! server sum over more than 18 EB in one window would wrap (not a real measurement).

use std::net::IpAddr;

/// The sums of one window, one entry per exporter seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowSums {
    /// Per exporter, in no particular order.
    pub exporters: Vec<ExporterSums>,
}

/// One exporter's sums.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterSums {
    /// The exporter's address.
    pub exporter: IpAddr,
    /// `[ingress, egress]`.
    pub directions: [DirectionSums; 2],
}

/// One exporter and direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectionSums {
    /// Bytes.
    pub bytes: u64,
    /// Flows.
    pub flows: u64,
    /// Every interface seen, in no particular order.
    pub interfaces: Vec<InterfaceSums>,
    /// Top addresses (source for ingress, destination for egress) by bytes.
    pub top_addrs: Vec<(IpAddr, u64)>,
    /// Top IP protocols by bytes.
    pub top_protocols: Vec<(u8, u64)>,
    /// Top source/destination pairs by bytes.
    pub top_pairs: Vec<((IpAddr, IpAddr), u64)>,
    /// Top destination ports by bytes.
    pub top_dst_ports: Vec<(u16, u64)>,
}

/// One interface of an exporter and direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceSums {
    /// The interface index.
    pub interface: u32,
    /// Bytes.
    pub bytes: u64,
    /// Top addresses by bytes.
    pub top_addrs: Vec<(IpAddr, u64)>,
    /// Top IP protocols by bytes.
    pub top_protocols: Vec<(u8, u64)>,
}

impl ExporterSums {
    /// An exporter with nothing summed yet.
    pub fn new(exporter: IpAddr) -> ExporterSums {
        ExporterSums {
            exporter,
            directions: Default::default(),
        }
    }
}

impl InterfaceSums {
    /// An interface with nothing summed yet.
    pub fn new(interface: u32) -> InterfaceSums {
        InterfaceSums {
            interface,
            ..InterfaceSums::default()
        }
    }
}
