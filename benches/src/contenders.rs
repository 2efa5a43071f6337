//! The decoders compared, each through its most efficient API for "decode a datagram and read
//! every record's normalized fields".

use std::hint::black_box;
use std::net::IpAddr;

use crate::Totals;

/// A decoder under test. `decode` must read every record of the datagram.
pub trait Contender {
    /// Name in tables.
    const NAME: &'static str;
    /// A fresh decoder (template state empty).
    fn new() -> Self;
    /// Decodes one datagram (learning its templates) and sums its records' fields (the old
    /// figure: after inlining, a compiler may skip work for the fields not summed).
    fn decode(&mut self, datagram: &[u8]) -> Totals;
    /// The same sums, and every record consumed whole (passed to `black_box`), as a user that
    /// stores or forwards flows does: the realistic figure.
    fn decode_whole(&mut self, datagram: &[u8]) -> Totals;
    /// Whether this decoder supports the version at all.
    fn supports(version: u16) -> bool;
}

/// netflow-wire (this project): zero-copy views, compiled templates.
#[derive(Debug)]
pub struct Ours(netflow_wire::Decoder);

impl Contender for Ours {
    const NAME: &'static str = "netflow-wire";
    fn new() -> Self {
        Ours(netflow_wire::Decoder::default())
    }
    #[inline]
    fn decode(&mut self, datagram: &[u8]) -> Totals {
        self.run::<false>(datagram)
    }
    #[inline]
    fn decode_whole(&mut self, datagram: &[u8]) -> Totals {
        self.run::<true>(datagram)
    }
    fn supports(_: u16) -> bool {
        true
    }
}

impl Ours {
    #[inline]
    fn run<const WHOLE: bool>(&mut self, datagram: &[u8]) -> Totals {
        let mut t = Totals::default();
        if let Ok(d) = self.0.decode(IpAddr::from([192, 0, 2, 1]), 0, datagram) {
            d.flows().for_each(|f| {
                if WHOLE {
                    black_box(&f);
                }
                t.add(
                    f.src_addr,
                    f.dst_addr,
                    (f.src_port, f.dst_port),
                    f.protocol,
                    f.bytes,
                    f.packets,
                    (f.input_if, f.output_if),
                    f.direction,
                    f.tcp_flags,
                );
            });
        }
        t
    }
}

/// netflow_parser 1.0.6 (`NetflowParser::iter_packets`, fields read from its records).
#[derive(Debug)]
pub struct NetflowParserCrate(netflow_parser::NetflowParser);

mod np {
    pub use netflow_parser::NetflowPacket;
    pub use netflow_parser::variable_versions::field_value::FieldValue;
    pub use netflow_parser::variable_versions::ipfix::FlowSetBody as IpfixBody;
    pub use netflow_parser::variable_versions::ipfix::lookup::{IANAIPFixField, IPFixField};
    pub use netflow_parser::variable_versions::v9::FlowSetBody as V9Body;
}

/// One record's fields, filled by id, whatever the crate's field representation.
#[derive(Default)]
struct Fields {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sp: u16,
    dp: u16,
    proto: u8,
    bytes: u64,
    packets: u64,
    i: u32,
    o: u32,
    dir: u8,
    flags: u8,
}

impl Fields {
    fn add_to(self, t: &mut Totals) {
        if let (Some(s), Some(d)) = (self.src, self.dst) {
            t.add(
                s,
                d,
                (self.sp, self.dp),
                self.proto,
                self.bytes,
                self.packets,
                (self.i, self.o),
                self.dir,
                self.flags,
            );
        }
    }
}

fn np_num(v: &np::FieldValue) -> u64 {
    v.as_u64()
        .or_else(|| v.as_u8().map(u64::from))
        .unwrap_or_else(|| match v {
            np::FieldValue::TcpControlBits(b, _) => u64::from(u16::from(*b)),
            _ => 0,
        })
}

/// Fills `f` from a field identified by its numeric id (v9 ids = IANA ids for these).
fn np_set(f: &mut Fields, id: u16, v: &np::FieldValue) {
    match id {
        8 | 27 => f.src = IpAddr::try_from(v).ok(),
        12 | 28 => f.dst = IpAddr::try_from(v).ok(),
        7 => f.sp = np_num(v) as u16,
        11 => f.dp = np_num(v) as u16,
        4 => f.proto = np_num(v) as u8,
        1 => f.bytes = np_num(v),
        2 => f.packets = np_num(v),
        10 => f.i = np_num(v) as u32,
        14 => f.o = np_num(v) as u32,
        61 => f.dir = np_num(v) as u8,
        6 => f.flags = np_num(v) as u8,
        _ => {}
    }
}

/// The IANA id of the fields the normalized flow reads (the enum has no numeric accessor).
fn iana_id(f: &np::IANAIPFixField) -> u16 {
    use np::IANAIPFixField as I;
    match f {
        I::OctetDeltaCount => 1,
        I::PacketDeltaCount => 2,
        I::ProtocolIdentifier => 4,
        I::TcpControlBits => 6,
        I::SourceTransportPort => 7,
        I::SourceIpv4address => 8,
        I::IngressInterface => 10,
        I::DestinationTransportPort => 11,
        I::DestinationIpv4address => 12,
        I::EgressInterface => 14,
        I::SourceIpv6address => 27,
        I::DestinationIpv6address => 28,
        I::FlowDirection => 61,
        _ => 0,
    }
}

impl Contender for NetflowParserCrate {
    const NAME: &'static str = "netflow_parser 1.0.6";
    fn new() -> Self {
        NetflowParserCrate(netflow_parser::NetflowParser::default())
    }
    #[inline]
    fn decode(&mut self, datagram: &[u8]) -> Totals {
        self.run::<false>(datagram)
    }
    #[inline]
    fn decode_whole(&mut self, datagram: &[u8]) -> Totals {
        self.run::<true>(datagram)
    }
    fn supports(_: u16) -> bool {
        true
    }
}

impl NetflowParserCrate {
    #[inline]
    fn run<const WHOLE: bool>(&mut self, datagram: &[u8]) -> Totals {
        let mut t = Totals::default();
        for p in self.0.iter_packets(datagram).flatten() {
            match p {
                np::NetflowPacket::V5(v5) => {
                    for r in &v5.flowsets {
                        if WHOLE {
                            black_box(r);
                        }
                        t.add(
                            r.src_addr.into(),
                            r.dst_addr.into(),
                            (r.src_port, r.dst_port),
                            r.protocol_number,
                            u64::from(r.d_octets),
                            u64::from(r.d_pkts),
                            (u32::from(r.input), u32::from(r.output)),
                            0,
                            r.tcp_flags,
                        );
                    }
                }
                np::NetflowPacket::V9(v9) => {
                    for fs in &v9.flowsets {
                        if let np::V9Body::Data(d) = &fs.body {
                            for rec in &d.fields {
                                if WHOLE {
                                    black_box(rec);
                                }
                                let mut f = Fields::default();
                                for (field, v) in rec {
                                    np_set(&mut f, u16::from(*field), v);
                                }
                                f.add_to(&mut t);
                            }
                        }
                    }
                }
                np::NetflowPacket::IPFix(ipfix) => {
                    for fs in &ipfix.flowsets {
                        if let np::IpfixBody::Data(d) = &fs.body {
                            for rec in &d.fields {
                                if WHOLE {
                                    black_box(rec);
                                }
                                let mut f = Fields::default();
                                for (field, v) in rec {
                                    if let np::IPFixField::IANA(iana) = field {
                                        np_set(&mut f, iana_id(iana), v);
                                    }
                                }
                                f.add_to(&mut t);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        t
    }
}

/// netgauze-flow-pkt 0.13 (`NetFlowV9Packet::parse` / `IpfixPacket::parse` with its templates map).
#[derive(Debug)]
pub struct Netgauze {
    v9: netgauze_flow_pkt::netflow::TemplatesMap,
    ipfix: netgauze_flow_pkt::ipfix::TemplatesMap,
}

fn ng_fields(fields: &[netgauze_flow_pkt::ie::Field], t: &mut Totals) {
    use netgauze_flow_pkt::ie::Field as F;
    let mut f = Fields::default();
    for field in fields {
        match field {
            F::sourceIPv4Address(a) => f.src = Some((*a).into()),
            F::destinationIPv4Address(a) => f.dst = Some((*a).into()),
            F::sourceIPv6Address(a) => f.src = Some((*a).into()),
            F::destinationIPv6Address(a) => f.dst = Some((*a).into()),
            F::sourceTransportPort(v) => f.sp = *v,
            F::destinationTransportPort(v) => f.dp = *v,
            F::protocolIdentifier(v) => f.proto = u8::from(*v),
            F::octetDeltaCount(v) => f.bytes = *v,
            F::packetDeltaCount(v) => f.packets = *v,
            F::ingressInterface(v) => f.i = *v,
            F::egressInterface(v) => f.o = *v,
            F::flowDirection(v) => f.dir = u8::from(*v),
            F::tcpControlBits(v) => f.flags = u8::from(*v),
            _ => {}
        }
    }
    f.add_to(t);
}

impl Contender for Netgauze {
    const NAME: &'static str = "netgauze-flow-pkt 0.13";
    fn new() -> Self {
        Netgauze {
            v9: Default::default(),
            ipfix: Default::default(),
        }
    }
    #[inline]
    fn decode(&mut self, datagram: &[u8]) -> Totals {
        self.run::<false>(datagram)
    }
    #[inline]
    fn decode_whole(&mut self, datagram: &[u8]) -> Totals {
        self.run::<true>(datagram)
    }
    fn supports(version: u16) -> bool {
        version != 5
    }
}

impl Netgauze {
    #[inline]
    fn run<const WHOLE: bool>(&mut self, datagram: &[u8]) -> Totals {
        use netgauze_parse_utils::reader::SliceReader;
        use netgauze_parse_utils::traits::ParseFromWithOneInput;
        let mut t = Totals::default();
        match datagram.get(1) {
            Some(9) => {
                if let Ok(p) = netgauze_flow_pkt::netflow::NetFlowV9Packet::parse(
                    &mut SliceReader::new(datagram),
                    &mut self.v9,
                ) {
                    for s in p.sets() {
                        if let netgauze_flow_pkt::netflow::Set::Data { records, .. } = s {
                            for r in records.iter() {
                                if WHOLE {
                                    black_box(r);
                                }
                                ng_fields(r.fields(), &mut t);
                            }
                        }
                    }
                }
            }
            Some(10) => {
                if let Ok(p) = netgauze_flow_pkt::ipfix::IpfixPacket::parse(
                    &mut SliceReader::new(datagram),
                    &mut self.ipfix,
                ) {
                    for s in p.sets() {
                        if let netgauze_flow_pkt::ipfix::Set::Data { records, .. } = s {
                            for r in records.iter() {
                                if WHOLE {
                                    black_box(r);
                                }
                                ng_fields(r.fields(), &mut t);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        t
    }
}
