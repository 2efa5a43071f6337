//! IP protocol numbers to the names the bot puts in `topprotocol` paths.
//!
//! Keywords from the IANA "Assigned Internet Protocol Numbers" registry. Numbers without a
//! keyword (61, 63, 68, 99, 114: "any ..." rows; 148-252 unassigned; 253-254 experiments;
//! 255 reserved) are named `proto{N}`, as the original bot named numbers it did not know.
//! Where IANA lists a keyword with a " (deprecated)" note, the note is dropped; 84 has two
//! keywords in the registry (TTP and IPTM) and is named `TTP/IPTM`, as in the original.
//!
//! [`protocol_segment`] turns the keyword into a valid path segment with
//! [`Segment::encode`]: `AX.25` → `AX%2e25` (as the original did), and the five names the
//! original sent broken become `TPplusplus` (39), `TTP_IPTM` (84), `A_N` (107),
//! `ISIS_over_IPv4` (124) and `Mobility_Header` (135).

use crate::path::Segment;

/// Keywords indexed by protocol number; `""` where the registry has none.
#[rustfmt::skip]
const KEYWORDS: [&str; 148] = [
    // 0-9
    "HOPOPT", "ICMP", "IGMP", "GGP", "IPv4", "ST", "TCP", "CBT", "EGP", "IGP",
    // 10-19
    "BBN-RCC-MON", "NVP-II", "PUP", "ARGUS", "EMCON", "XNET", "CHAOS", "UDP", "MUX", "DCN-MEAS",
    // 20-29
    "HMP", "PRM", "XNS-IDP", "TRUNK-1", "TRUNK-2", "LEAF-1", "LEAF-2", "RDP", "IRTP", "ISO-TP4",
    // 30-39
    "NETBLT", "MFE-NSP", "MERIT-INP", "DCCP", "3PC", "IDPR", "XTP", "DDP", "IDPR-CMTP", "TP++",
    // 40-49
    "IL", "IPv6", "SDRP", "IPv6-Route", "IPv6-Frag", "IDRP", "RSVP", "GRE", "DSR", "BNA",
    // 50-59
    "ESP", "AH", "I-NLSP", "SWIPE", "NARP", "Min-IPv4", "TLSP", "SKIP", "IPv6-ICMP", "IPv6-NoNxt",
    // 60-69
    "IPv6-Opts", "", "CFTP", "", "SAT-EXPAK", "KRYPTOLAN", "RVD", "IPPC", "", "SAT-MON",
    // 70-79
    "VISA", "IPCV", "CPNX", "CPHB", "WSN", "PVP", "BR-SAT-MON", "SUN-ND", "WB-MON", "WB-EXPAK",
    // 80-89
    "ISO-IP", "VMTP", "SECURE-VMTP", "VINES", "TTP/IPTM", "NSFNET-IGP", "DGP", "TCF", "EIGRP", "OSPFIGP",
    // 90-99
    "Sprite-RPC", "LARP", "MTP", "AX.25", "IPIP", "MICP", "SCC-SP", "ETHERIP", "ENCAP", "",
    // 100-109
    "GMTP", "IFMP", "PNNI", "PIM", "ARIS", "SCPS", "QNX", "A/N", "IPComp", "SNP",
    // 110-119
    "Compaq-Peer", "IPX-in-IP", "VRRP", "PGM", "", "L2TP", "DDX", "IATP", "STP", "SRP",
    // 120-129
    "UTI", "SMP", "SM", "PTP", "ISIS over IPv4", "FIRE", "CRTP", "CRUDP", "SSCOPMCE", "IPLT",
    // 130-139
    "SPS", "PIPE", "SCTP", "FC", "RSVP-E2E-IGNORE", "Mobility Header", "UDPLite", "MPLS-in-IP", "manet", "HIP",
    // 140-147
    "Shim6", "WESP", "ROHC", "Ethernet", "AGGFRAG", "NSH", "Homa", "BIT-EMU",
];

/// The IANA keyword of an IP protocol number, e.g. `6` → `Some("TCP")`; `None` when the
/// registry assigns no keyword.
pub fn protocol_keyword(number: u8) -> Option<&'static str> {
    KEYWORDS
        .get(usize::from(number))
        .copied()
        .filter(|k| !k.is_empty())
}

/// The `topprotocol` path segment for an IP protocol number: the encoded keyword
/// (`TCP`, `IPv6-ICMP`, `AX%2e25`, `TPplusplus`), or `proto{N}` when there is none.
///
/// ```
/// use grafolean_client::protocol_segment;
/// assert_eq!(protocol_segment(17).as_str(), "UDP");
/// assert_eq!(protocol_segment(135).as_str(), "Mobility_Header");
/// assert_eq!(protocol_segment(253).as_str(), "proto253");
/// ```
pub fn protocol_segment(number: u8) -> Segment {
    match protocol_keyword(number) {
        Some(k) => Segment::encode(k),
        None => Segment::encode(&format!("proto{number}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ValuePath;
    use std::collections::HashSet;

    #[test]
    fn test_well_known_numbers() {
        assert_eq!(protocol_keyword(1), Some("ICMP"));
        assert_eq!(protocol_keyword(6), Some("TCP"));
        assert_eq!(protocol_keyword(17), Some("UDP"));
        assert_eq!(protocol_keyword(47), Some("GRE"));
        assert_eq!(protocol_keyword(50), Some("ESP"));
        assert_eq!(protocol_keyword(58), Some("IPv6-ICMP"));
        assert_eq!(protocol_keyword(89), Some("OSPFIGP"));
        assert_eq!(protocol_keyword(132), Some("SCTP"));
        assert_eq!(protocol_keyword(147), Some("BIT-EMU"));
        assert_eq!(protocol_keyword(61), None);
        assert_eq!(protocol_keyword(148), None);
        assert_eq!(protocol_keyword(255), None);
    }

    #[test]
    fn test_every_number_gives_a_valid_unique_segment() {
        let mut seen = HashSet::new();
        for n in 0..=u8::MAX {
            let seg = protocol_segment(n);
            let path = format!("netflow.1min.ingress.entity.1.topprotocol.{seg}");
            assert!(ValuePath::new(&path).is_ok(), "{n}: {seg}");
            assert!(seen.insert(seg.clone()), "{n}: duplicate {seg}");
        }
    }

    #[test]
    fn test_names_the_original_sent_broken() {
        for (n, seg) in [
            (39, "TPplusplus"),
            (84, "TTP_IPTM"),
            (93, "AX%2e25"),
            (107, "A_N"),
            (124, "ISIS_over_IPv4"),
            (135, "Mobility_Header"),
            (0, "HOPOPT"),
            (99, "proto99"),
        ] {
            assert_eq!(protocol_segment(n).as_str(), seg);
        }
    }
}
