//! Field type ids: an open newtype with named constants.
//!
//! Unknown and vendor-specific ids cost nothing: they are just numbers, skipped by length when a
//! record is read and still reachable with [`Record::get`](crate::Record::get).

/// A field type id of a v9 template (RFC 3954 §8) or an IPFIX information element id
/// (RFC 7012; IANA "IPFIX Information Elements"). The two registries share ids 1..=127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldId(pub u16);

macro_rules! field_ids {
    ($($(#[$doc:meta])* $name:ident = $id:expr;)*) => {
        impl FieldId {
            $( $(#[$doc])* pub const $name: FieldId = FieldId($id); )*

            /// The registry name of a known id (RFC 3954 names below 128, IPFIX names above),
            /// `None` for ids this crate has no name for.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $id => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

field_ids! {
    /// Bytes in the flow (v9 `IN_BYTES`, IPFIX `octetDeltaCount`), 1..=8 bytes.
    IN_BYTES = 1;
    /// Packets in the flow (v9 `IN_PKTS`, IPFIX `packetDeltaCount`), 1..=8 bytes.
    IN_PKTS = 2;
    /// Aggregated flow count.
    FLOWS = 3;
    /// IP protocol number.
    PROTOCOL = 4;
    /// Type of service byte on ingress.
    SRC_TOS = 5;
    /// Cumulative TCP flags.
    TCP_FLAGS = 6;
    /// Layer-4 source port.
    L4_SRC_PORT = 7;
    /// IPv4 source address.
    IPV4_SRC_ADDR = 8;
    /// Source prefix length.
    SRC_MASK = 9;
    /// Input interface index (2 or 4 bytes).
    INPUT_SNMP = 10;
    /// Layer-4 destination port.
    L4_DST_PORT = 11;
    /// IPv4 destination address.
    IPV4_DST_ADDR = 12;
    /// Destination prefix length.
    DST_MASK = 13;
    /// Output interface index (2 or 4 bytes).
    OUTPUT_SNMP = 14;
    /// IPv4 next hop.
    IPV4_NEXT_HOP = 15;
    /// Source AS number.
    SRC_AS = 16;
    /// Destination AS number.
    DST_AS = 17;
    /// BGP IPv4 next hop.
    BGP_IPV4_NEXT_HOP = 18;
    /// Multicast outgoing packets.
    MUL_DST_PKTS = 19;
    /// Multicast outgoing bytes.
    MUL_DST_BYTES = 20;
    /// sysUptime (ms) of the last packet of the flow.
    LAST_SWITCHED = 21;
    /// sysUptime (ms) of the first packet of the flow.
    FIRST_SWITCHED = 22;
    /// Outgoing bytes.
    OUT_BYTES = 23;
    /// Outgoing packets.
    OUT_PKTS = 24;
    /// Minimum packet length.
    MIN_PKT_LNGTH = 25;
    /// Maximum packet length.
    MAX_PKT_LNGTH = 26;
    /// IPv6 source address.
    IPV6_SRC_ADDR = 27;
    /// IPv6 destination address.
    IPV6_DST_ADDR = 28;
    /// IPv6 source prefix length.
    IPV6_SRC_MASK = 29;
    /// IPv6 destination prefix length.
    IPV6_DST_MASK = 30;
    /// IPv6 flow label.
    IPV6_FLOW_LABEL = 31;
    /// ICMP type * 256 + code.
    ICMP_TYPE = 32;
    /// IGMP type.
    MUL_IGMP_TYPE = 33;
    /// Packet sampling interval (1 in N).
    SAMPLING_INTERVAL = 34;
    /// Sampling algorithm (1 deterministic, 2 random).
    SAMPLING_ALGORITHM = 35;
    /// Active timeout (s).
    FLOW_ACTIVE_TIMEOUT = 36;
    /// Inactive timeout (s).
    FLOW_INACTIVE_TIMEOUT = 37;
    /// Engine type.
    ENGINE_TYPE = 38;
    /// Engine id.
    ENGINE_ID = 39;
    /// Bytes exported.
    TOTAL_BYTES_EXP = 40;
    /// Packets exported.
    TOTAL_PKTS_EXP = 41;
    /// Flows exported.
    TOTAL_FLOWS_EXP = 42;
    /// IPv4 source prefix.
    IPV4_SRC_PREFIX = 44;
    /// IPv4 destination prefix.
    IPV4_DST_PREFIX = 45;
    /// MPLS top label type.
    MPLS_TOP_LABEL_TYPE = 46;
    /// MPLS top label address.
    MPLS_TOP_LABEL_IP_ADDR = 47;
    /// Sampler id referenced by data records.
    FLOW_SAMPLER_ID = 48;
    /// Sampler mode.
    FLOW_SAMPLER_MODE = 49;
    /// Sampler random interval.
    FLOW_SAMPLER_RANDOM_INTERVAL = 50;
    /// Minimum TTL.
    MIN_TTL = 52;
    /// Maximum TTL.
    MAX_TTL = 53;
    /// IPv4 identification.
    IPV4_IDENT = 54;
    /// Type of service on egress.
    DST_TOS = 55;
    /// Incoming source MAC.
    IN_SRC_MAC = 56;
    /// Outgoing destination MAC.
    OUT_DST_MAC = 57;
    /// Source VLAN.
    SRC_VLAN = 58;
    /// Destination VLAN.
    DST_VLAN = 59;
    /// IP version (4 or 6).
    IP_PROTOCOL_VERSION = 60;
    /// Flow direction: 0 ingress, 1 egress.
    DIRECTION = 61;
    /// IPv6 next hop.
    IPV6_NEXT_HOP = 62;
    /// BGP IPv6 next hop.
    BGP_IPV6_NEXT_HOP = 63;
    /// IPv6 option headers.
    IPV6_OPTION_HEADERS = 64;
    /// MPLS label 1.
    MPLS_LABEL_1 = 70;
    /// Incoming destination MAC.
    IN_DST_MAC = 80;
    /// Outgoing source MAC.
    OUT_SRC_MAC = 81;
    /// Interface short name (options data).
    IF_NAME = 82;
    /// Interface description (options data).
    IF_DESC = 83;
    /// Sampler name (options data).
    SAMPLER_NAME = 84;
    /// Running byte total (IPFIX `octetTotalCount`).
    IN_PERMANENT_BYTES = 85;
    /// Running packet total (IPFIX `packetTotalCount`).
    IN_PERMANENT_PKTS = 86;
    /// Fragment offset.
    FRAGMENT_OFFSET = 88;
    /// Forwarding status.
    FORWARDING_STATUS = 89;
    /// Application tag.
    APPLICATION_TAG = 95;
    /// Application name.
    APPLICATION_NAME = 96;
    /// IPFIX `flowEndReason`.
    FLOW_END_REASON = 136;
    /// IPFIX `initiatorOctets` (Cisco ASA NSEL `NF_F_FWD_FLOW_DELTA_BYTES` in v9).
    INITIATOR_OCTETS = 231;
    /// IPFIX `responderOctets` (ASA NSEL `NF_F_REV_FLOW_DELTA_BYTES`): the reverse half's
    /// bytes of a biflow record.
    RESPONDER_OCTETS = 232;
    /// IPFIX `biflowDirection` (RFC 5103): which end of a biflow record initiated it (0
    /// arbitrary, 1 the source, 2 the destination, 3 by perimeter). It says nothing about the
    /// counters: both halves are read whatever its value.
    BIFLOW_DIRECTION = 239;
    /// IPFIX `initiatorPackets`.
    INITIATOR_PACKETS = 298;
    /// IPFIX `responderPackets`: the reverse half's packets of a biflow record.
    RESPONDER_PACKETS = 299;
    /// IPFIX `icmpTypeCodeIPv6`.
    ICMP_TYPE_CODE_IPV6 = 139;
    /// IPFIX `meteringProcessId`.
    METERING_PROCESS_ID = 143;
    /// IPFIX `exportingProcessId`.
    EXPORTING_PROCESS_ID = 144;
    /// IPFIX `observationDomainId`.
    OBSERVATION_DOMAIN_ID = 149;
    /// IPFIX `flowStartSeconds` (Unix seconds).
    FLOW_START_SECONDS = 150;
    /// IPFIX `flowEndSeconds` (Unix seconds).
    FLOW_END_SECONDS = 151;
    /// IPFIX `flowStartMilliseconds` (Unix ms; pmacct sends it in v9 too).
    FLOW_START_MILLISECONDS = 152;
    /// IPFIX `flowEndMilliseconds` (Unix ms).
    FLOW_END_MILLISECONDS = 153;
    /// IPFIX `flowStartMicroseconds` (NTP timestamp).
    FLOW_START_MICROSECONDS = 154;
    /// IPFIX `flowEndMicroseconds` (NTP timestamp).
    FLOW_END_MICROSECONDS = 155;
    /// IPFIX `flowStartNanoseconds` (NTP timestamp).
    FLOW_START_NANOSECONDS = 156;
    /// IPFIX `flowEndNanoseconds` (NTP timestamp).
    FLOW_END_NANOSECONDS = 157;
    /// IPFIX `flowStartDeltaMicroseconds` (µs before the message's export time).
    FLOW_START_DELTA_MICROSECONDS = 158;
    /// IPFIX `flowEndDeltaMicroseconds` (µs before the message's export time).
    FLOW_END_DELTA_MICROSECONDS = 159;
    /// IPFIX `systemInitTimeMilliseconds` (Unix ms of sysUpTime 0).
    SYSTEM_INIT_TIME_MILLISECONDS = 160;
    /// IPFIX `flowDurationMilliseconds` (end minus start).
    FLOW_DURATION_MILLISECONDS = 161;
    /// IPFIX `flowDurationMicroseconds` (end minus start).
    FLOW_DURATION_MICROSECONDS = 162;
    /// IPFIX `selectorId`.
    SELECTOR_ID = 302;
    /// IPFIX `selectorAlgorithm`.
    SELECTOR_ALGORITHM = 304;
    /// IPFIX `samplingPacketInterval`.
    SAMPLING_PACKET_INTERVAL = 305;
    /// IPFIX `samplingPacketSpace`.
    SAMPLING_PACKET_SPACE = 306;
    /// IPFIX `samplingSize`.
    SAMPLING_SIZE = 309;
    /// IPFIX `samplingPopulation`.
    SAMPLING_POPULATION = 310;
}

impl core::fmt::Display for FieldId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "field {}", self.0),
        }
    }
}

/// A field of a template: its id, its length, and for IPFIX its enterprise number
/// (0 = IANA). `len == VARIABLE` marks a variable-length field (RFC 7011 §7; some v9
/// exporters such as H3C use it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// Field type / information element id (without the IPFIX enterprise bit).
    pub id: FieldId,
    /// Length in bytes, or [`FieldSpec::VARIABLE`].
    pub len: u16,
    /// Private enterprise number; 0 for IANA / Cisco-defined fields.
    pub enterprise: u32,
}

impl FieldSpec {
    /// The length value that marks a variable-length field.
    pub const VARIABLE: u16 = 0xffff;

    /// The private enterprise number of reverse information elements (RFC 5103, IANA's
    /// "IPFIX Reverse Information Element Private Enterprise"): enterprise 29305 with an IANA
    /// IE's number is that IE for the reverse direction of a biflow record.
    pub const REVERSE_PEN: u32 = 29305;

    /// The reverse information element (RFC 5103) of the IANA field `id`, fixed length `len`:
    /// e.g. `FieldSpec::reverse(FieldId::IN_BYTES, 8)` is reverseOctetDeltaCount.
    ///
    /// ```
    /// use netflow_wire::FieldId;
    /// use netflow_wire::template::FieldSpec;
    /// let f = FieldSpec::reverse(FieldId::IN_PKTS, 4);
    /// assert_eq!((f.id, f.enterprise), (FieldId::IN_PKTS, 29305));
    /// assert!(f.is_reverse() && !FieldSpec::new(FieldId::IN_PKTS, 4).is_reverse());
    /// ```
    pub const fn reverse(id: FieldId, len: u16) -> FieldSpec {
        FieldSpec {
            id,
            len,
            enterprise: FieldSpec::REVERSE_PEN,
        }
    }

    /// Whether this is the reverse information element of an IANA field (RFC 5103).
    pub const fn is_reverse(&self) -> bool {
        self.enterprise == FieldSpec::REVERSE_PEN
    }

    /// An IANA (enterprise 0) field of fixed length.
    pub const fn new(id: FieldId, len: u16) -> FieldSpec {
        FieldSpec {
            id,
            len,
            enterprise: 0,
        }
    }

    /// Whether the field's length is given per record.
    pub const fn is_variable(&self) -> bool {
        self.len == FieldSpec::VARIABLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_display() {
        assert_eq!(FieldId::IN_BYTES.name(), Some("IN_BYTES"));
        assert_eq!(FieldId(40000).name(), None);
        assert_eq!(FieldId::PROTOCOL.to_string(), "PROTOCOL(4)");
        assert_eq!(FieldId(999).to_string(), "field 999");
    }
}
