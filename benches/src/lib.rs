//! Shared inputs and contenders for the parser benchmarks (`benches/parser.rs`, criterion) and
//! the `bench` command (`src/bin/bench.rs`, a quick table with allocation counts).
//!
//! Every contender decodes the same bytes and reads the normalized fields of every record
//! (addresses, ports, protocol, bytes, packets, interfaces, direction, TCP flags) into a
//! [`Totals`], which the callers compare outside the timed loop: a contender that skipped
//! records or fields would not match.

pub mod contenders;
pub mod inputs;

/// Sums over the normalized fields of every record of a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records with both addresses.
    pub flows: u64,
    /// Sum of bytes.
    pub bytes: u64,
    /// Sum of packets.
    pub packets: u64,
    /// Sum of ports, protocol, interfaces, direction, flags and the last address octet.
    pub mix: u64,
}

impl Totals {
    /// Adds one record's fields.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn add(
        &mut self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        ports: (u16, u16),
        proto: u8,
        bytes: u64,
        packets: u64,
        ifs: (u32, u32),
        dir: u8,
        flags: u8,
    ) {
        let last = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => u64::from(a.octets()[3]),
            std::net::IpAddr::V6(a) => u64::from(a.octets()[15]),
        };
        self.flows += 1;
        self.bytes += bytes;
        self.packets += packets;
        self.mix += u64::from(ports.0)
            + u64::from(ports.1)
            + u64::from(proto)
            + u64::from(ifs.0)
            + u64::from(ifs.1)
            + u64::from(dir)
            + u64::from(flags)
            + last(src)
            + last(dst);
    }
}
