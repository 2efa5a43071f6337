//! NetFlow v5: Cisco's fixed format, a 24-byte header and up to 30 records of 48 bytes.
//!
//! Layout as documented by Cisco ("NetFlow Export Datagram Format", version 5).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use crate::error::DecodeError;
use crate::field::{FieldId, FieldSpec};
use crate::flow::Flow;
use crate::header::{Header, RecordOrigin};
use crate::template::{Template, TemplateKind};
use crate::time::{UptimeClock, uptime_to_unix_ms};
use crate::wire::{u16_at, u32_at};

/// Byte positions, shared by the getters, the template used for by-id access and the emitter.
pub(crate) mod field {
    pub const HEADER_LEN: usize = 24;
    pub const RECORD_LEN: usize = 48;
    pub const MAX_RECORDS: u16 = 30;

    // Header.
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 2;
    pub const SYS_UPTIME: usize = 4;
    pub const UNIX_SECS: usize = 8;
    pub const UNIX_NSECS: usize = 12;
    pub const FLOW_SEQUENCE: usize = 16;
    pub const ENGINE_TYPE: usize = 20;
    pub const ENGINE_ID: usize = 21;
    pub const SAMPLING: usize = 22;

    // Record.
    pub const SRCADDR: usize = 0;
    pub const DSTADDR: usize = 4;
    pub const NEXTHOP: usize = 8;
    pub const INPUT: usize = 12;
    pub const OUTPUT: usize = 14;
    pub const DPKTS: usize = 16;
    pub const DOCTETS: usize = 20;
    pub const FIRST: usize = 24;
    pub const LAST: usize = 28;
    pub const SRCPORT: usize = 32;
    pub const DSTPORT: usize = 34;
    pub const PAD1: usize = 36;
    pub const TCP_FLAGS: usize = 37;
    pub const PROT: usize = 38;
    pub const TOS: usize = 39;
    pub const SRC_AS: usize = 40;
    pub const DST_AS: usize = 42;
    pub const SRC_MASK: usize = 44;
    pub const DST_MASK: usize = 45;
    pub const PAD2: usize = 46;
}

/// The v5 record as a field list (v9 field ids, in wire order): lets v5 records be read through
/// the same [`Record`](crate::Record) view and by-id lookups as v9.
const LAYOUT: [(FieldId, u16); 20] = [
    (FieldId::IPV4_SRC_ADDR, 4),
    (FieldId::IPV4_DST_ADDR, 4),
    (FieldId::IPV4_NEXT_HOP, 4),
    (FieldId::INPUT_SNMP, 2),
    (FieldId::OUTPUT_SNMP, 2),
    (FieldId::IN_PKTS, 4),
    (FieldId::IN_BYTES, 4),
    (FieldId::FIRST_SWITCHED, 4),
    (FieldId::LAST_SWITCHED, 4),
    (FieldId::L4_SRC_PORT, 2),
    (FieldId::L4_DST_PORT, 2),
    (FieldId(210), 1), // paddingOctets
    (FieldId::TCP_FLAGS, 1),
    (FieldId::PROTOCOL, 1),
    (FieldId::SRC_TOS, 1),
    (FieldId::SRC_AS, 2),
    (FieldId::DST_AS, 2),
    (FieldId::SRC_MASK, 1),
    (FieldId::DST_MASK, 1),
    (FieldId(210), 2),
];

static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    let fields: Vec<FieldSpec> = LAYOUT
        .iter()
        .map(|&(id, len)| FieldSpec::new(id, len))
        .collect();
    match Template::compile(0, TemplateKind::Data, &fields) {
        Ok(t) => t.into_v5(),
        Err(_) => unreachable!("the v5 layout is a valid template"),
    }
});

/// The v5 record layout as a [`Template`] (id 0).
pub(crate) fn template() -> &'static Template {
    &TEMPLATE
}

/// A validated NetFlow v5 packet.
///
/// [`V5Packet::parse`] checks the header and that `count` records (at most 30) are present; after
/// that no accessor can fail or panic. Bytes after the last declared record are ignored.
#[derive(Debug, Clone, Copy)]
pub struct V5Packet<'a> {
    hdr: &'a [u8; field::HEADER_LEN],
    records: &'a [[u8; field::RECORD_LEN]],
}

impl<'a> V5Packet<'a> {
    /// Validates a v5 datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<V5Packet<'a>, DecodeError> {
        let Some((hdr, body)) = datagram.split_first_chunk::<{ field::HEADER_LEN }>() else {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: field::HEADER_LEN - datagram.len(),
            });
        };
        let version = u16_at(hdr, field::VERSION);
        if version != 5 {
            return Err(DecodeError::Version(version));
        }
        let count = u16_at(hdr, field::COUNT);
        if count > field::MAX_RECORDS {
            return Err(DecodeError::TooManyRecords(count));
        }
        let (records, _) = body.as_chunks::<{ field::RECORD_LEN }>();
        let Some(records) = records.get(..usize::from(count)) else {
            return Err(DecodeError::BadLength {
                offset: field::COUNT,
                declared: field::HEADER_LEN + usize::from(count) * field::RECORD_LEN,
                actual: datagram.len(),
            });
        };
        Ok(V5Packet { hdr, records })
    }

    /// The header facts.
    #[inline]
    pub fn header(&self) -> Header {
        Header {
            version: 5,
            count: self.count(),
            sys_uptime_ms: Some(u32_at(self.hdr, field::SYS_UPTIME)),
            export_secs: u32_at(self.hdr, field::UNIX_SECS),
            export_nanos: u32_at(self.hdr, field::UNIX_NSECS),
            sequence: self.flow_sequence(),
            source_id: u32::from(self.engine_type()) << 8 | u32::from(self.engine_id()),
            sampling: u16_at(self.hdr, field::SAMPLING),
        }
    }

    /// Number of records.
    #[inline]
    pub fn count(&self) -> u16 {
        u16_at(self.hdr, field::COUNT)
    }

    /// Flows seen by the exporter before this packet's first record.
    #[inline]
    pub fn flow_sequence(&self) -> u32 {
        u32_at(self.hdr, field::FLOW_SEQUENCE)
    }

    /// Engine type (slot / VIP type).
    #[inline]
    pub fn engine_type(&self) -> u8 {
        self.hdr[field::ENGINE_TYPE]
    }

    /// Engine id (slot number).
    #[inline]
    pub fn engine_id(&self) -> u8 {
        self.hdr[field::ENGINE_ID]
    }

    /// The records.
    #[inline]
    pub fn records(&self) -> impl ExactSizeIterator<Item = V5Record<'a>> + 'a {
        self.records.iter().map(V5Record)
    }

    /// The record bytes (`count * 48` bytes), for reading through [`V5Record::template`].
    #[inline]
    pub fn records_bytes(&self) -> &'a [u8] {
        self.records.as_flattened()
    }
}

/// One 48-byte v5 flow record. Accessors cannot fail: the length is in the type.
#[derive(Debug, Clone, Copy)]
pub struct V5Record<'a>(pub &'a [u8; field::RECORD_LEN]);

impl V5Record<'_> {
    /// The v5 record layout as a [`Template`](crate::template::Template) (id 0), for code that
    /// treats every version's records alike.
    pub fn template() -> &'static Template {
        template()
    }

    /// The normalized flow of this record (v5 has no direction: always ingress). Reads at
    /// constant offsets; what [`Record::flow`](crate::Record::flow) does for v5 records.
    #[inline]
    pub fn flow(&self, ctx: &RecordOrigin) -> Flow {
        let times = match ctx.header.sys_uptime_ms {
            Some(up) => (
                uptime_to_unix_ms(ctx.export_ms, up, self.first()),
                uptime_to_unix_ms(ctx.export_ms, up, self.last()),
            ),
            None => (0, 0),
        };
        self.flow_at(
            ctx.ts_micros,
            ctx.exporter,
            ctx.sampling_interval.max(1),
            times,
        )
    }

    /// The flow, given the packet's facts and the record's times in Unix ms.
    #[inline(always)]
    fn flow_at(
        &self,
        ts_micros: i64,
        exporter: IpAddr,
        sampling_interval: u32,
        (start_ms, end_ms): (u64, u64),
    ) -> Flow {
        Flow {
            ts_micros,
            exporter,
            input_if: u32::from(self.input()),
            output_if: u32::from(self.output()),
            direction: Flow::INGRESS,
            protocol: self.protocol(),
            src_addr: IpAddr::V4(self.src_addr()),
            dst_addr: IpAddr::V4(self.dst_addr()),
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            bytes: u64::from(self.octets()),
            packets: u64::from(self.packets()),
            tcp_flags: self.tcp_flags(),
            sampling_interval,
            start_ms,
            end_ms,
        }
    }

    #[inline]
    fn ip(&self, at: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32_at(self.0, at))
    }
    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        self.ip(field::SRCADDR)
    }
    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.ip(field::DSTADDR)
    }
    /// Next hop router.
    #[inline]
    pub fn next_hop(&self) -> Ipv4Addr {
        self.ip(field::NEXTHOP)
    }
    /// Input interface index.
    #[inline]
    pub fn input(&self) -> u16 {
        u16_at(self.0, field::INPUT)
    }
    /// Output interface index.
    #[inline]
    pub fn output(&self) -> u16 {
        u16_at(self.0, field::OUTPUT)
    }
    /// Packets.
    #[inline]
    pub fn packets(&self) -> u32 {
        u32_at(self.0, field::DPKTS)
    }
    /// Bytes (layer 3).
    #[inline]
    pub fn octets(&self) -> u32 {
        u32_at(self.0, field::DOCTETS)
    }
    /// sysUptime at the first packet.
    #[inline]
    pub fn first(&self) -> u32 {
        u32_at(self.0, field::FIRST)
    }
    /// sysUptime at the last packet.
    #[inline]
    pub fn last(&self) -> u32 {
        u32_at(self.0, field::LAST)
    }
    /// Source port (softflowd puts ICMP type * 256 + code in the destination port).
    #[inline]
    pub fn src_port(&self) -> u16 {
        u16_at(self.0, field::SRCPORT)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16_at(self.0, field::DSTPORT)
    }
    /// Cumulative TCP flags.
    #[inline]
    pub fn tcp_flags(&self) -> u8 {
        self.0[field::TCP_FLAGS]
    }
    /// IP protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.0[field::PROT]
    }
    /// Type of service.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.0[field::TOS]
    }
    /// Source AS.
    #[inline]
    pub fn src_as(&self) -> u16 {
        u16_at(self.0, field::SRC_AS)
    }
    /// Destination AS.
    #[inline]
    pub fn dst_as(&self) -> u16 {
        u16_at(self.0, field::DST_AS)
    }
    /// Source prefix length.
    #[inline]
    pub fn src_mask(&self) -> u8 {
        self.0[field::SRC_MASK]
    }
    /// Destination prefix length.
    #[inline]
    pub fn dst_mask(&self) -> u8 {
        self.0[field::DST_MASK]
    }
}

/// The facts of one v5 packet that each of its records' flows repeats, taken out of its
/// [`RecordOrigin`] once: the loop behind [`Flows::fold`](crate::decoded::Flows) for v5 reads
/// records through it ([`V5Record::flow`] otherwise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct V5Reader {
    ts_micros: i64,
    exporter: IpAddr,
    sampling_interval: u32,
    clock: UptimeClock,
}

impl V5Reader {
    /// The reader of a packet of `ctx`; `None` when its header has no uptime or an export time
    /// [`UptimeClock`] does not take (never for a header read from the wire).
    #[inline]
    pub(crate) fn new(ctx: &RecordOrigin) -> Option<V5Reader> {
        Some(V5Reader {
            ts_micros: ctx.ts_micros,
            exporter: ctx.exporter,
            sampling_interval: ctx.sampling_interval.max(1),
            clock: UptimeClock::new(ctx.export_ms, ctx.header.sys_uptime_ms?)?,
        })
    }

    /// The flow of `r`: what [`V5Record::flow`] gives.
    #[inline(always)]
    pub(crate) fn flow(&self, r: V5Record<'_>) -> Flow {
        let times = (self.clock.unix_ms(r.first()), self.clock.unix_ms(r.last()));
        r.flow_at(self.ts_micros, self.exporter, self.sampling_interval, times)
    }
}

// The padding constants document the layout; the emitter relies on the zeroed buffer for them.
const _: () = assert!(field::PAD1 == 36 && field::PAD2 == 46);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Records;

    #[rustfmt::skip]
    const PACKET: [u8; 24 + 48] = [
        0, 5,             // version
        0, 1,             // count
        0, 0, 0x27, 0x10, // sys_uptime 10000
        0x65, 0x92, 0, 0, // unix_secs
        0, 0, 0, 0,       // unix_nsecs
        0, 0, 0, 42,      // flow_sequence
        1, 2,             // engine type, id
        0x40, 10,         // sampling: mode 1, interval 10
        10, 0, 0, 1,      // srcaddr
        192, 0, 2, 7,     // dstaddr
        0, 0, 0, 0,       // nexthop
        0, 3, 0, 4,       // input 3, output 4
        0, 0, 0, 5,       // dPkts
        0, 0, 5, 220,     // dOctets 1500
        0, 0, 0x23, 0x28, // first 9000
        0, 0, 0x27, 0x0f, // last 9999
        1, 187, 0xc7, 56, // srcport 443, dstport 51000
        0, 27, 6, 0,      // pad, tcp_flags, prot, tos
        0, 0, 0, 0,       // src_as, dst_as
        24, 24, 0, 0,     // masks, pad
    ];

    #[test]
    fn test_deconstruct() {
        let p = V5Packet::parse(&PACKET).unwrap();
        let h = p.header();
        assert_eq!(
            (h.version, h.count, h.sequence, h.source_id),
            (5, 1, 42, 0x0102)
        );
        assert_eq!((h.sampling_interval(), h.sampling_mode()), (10, 1));
        let r = p.records().next().unwrap();
        assert_eq!(r.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            (r.input(), r.output(), r.packets(), r.octets()),
            (3, 4, 5, 1500)
        );
        assert_eq!(
            (r.src_port(), r.dst_port(), r.tcp_flags(), r.protocol()),
            (443, 51000, 27, 6)
        );
        // The same record through the generic view.
        let rec = Records::new(p.records_bytes(), template()).next().unwrap();
        assert_eq!(rec.bytes(), Some(1500));
        assert_eq!(rec.uint(FieldId::SRC_MASK), Some(24));
        assert_eq!(rec.dst_port(), Some(51000));
    }

    /// The per-packet reader of `Flows::fold` gives each record's flow as `V5Record::flow`,
    /// across the sysUptime wrap too.
    #[test]
    fn reader_flow_is_record_flow() {
        let mut p = PACKET;
        for uptime in [10_000u32, 5, u32::MAX] {
            p[4..8].copy_from_slice(&uptime.to_be_bytes());
            let v5 = V5Packet::parse(&p).unwrap();
            let ctx = RecordOrigin::new(IpAddr::from([192, 0, 2, 1]), 7, v5.header());
            let r = v5.records().next().unwrap();
            assert_eq!(V5Reader::new(&ctx).unwrap().flow(r), r.flow(&ctx));
        }
    }

    #[test]
    fn test_impossible_len() {
        assert_eq!(
            V5Packet::parse(&PACKET[..10]).unwrap_err(),
            DecodeError::Truncated {
                offset: 0,
                needed: 14
            }
        );
        assert!(matches!(
            V5Packet::parse(&PACKET[..70]),
            Err(DecodeError::BadLength { .. })
        ));
        let mut p = PACKET;
        p[3] = 31;
        assert_eq!(
            V5Packet::parse(&p).unwrap_err(),
            DecodeError::TooManyRecords(31)
        );
        p[3] = 0;
        assert_eq!(V5Packet::parse(&p).unwrap().records().len(), 0);
        p[1] = 9;
        assert_eq!(V5Packet::parse(&p).unwrap_err(), DecodeError::Version(9));
    }
}
