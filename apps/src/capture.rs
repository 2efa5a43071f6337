//! Reading UDP datagrams out of pcap and pcapng files (Ethernet, Linux cooked v1/v2, raw IP and
//! BSD loopback link types; IPv4 and IPv6; VLAN tags).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, bail};
use pcap_parser::{Linktype, PcapBlockOwned, PcapError, pcapng::Block};

/// One UDP datagram found in a capture.
#[derive(Debug, Clone, Copy)]
pub struct UdpDatagram<'a> {
    /// Capture time, Unix microseconds.
    pub ts_micros: i64,
    /// Source address and port (the exporter).
    pub src: SocketAddr,
    /// Destination address and port (the collector).
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// What a capture held besides the UDP datagrams handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames read.
    pub frames: u64,
    /// UDP datagrams handed to the callback.
    pub udp: u64,
    /// Frames that are not UDP over IPv4/IPv6, or of an unsupported link type.
    pub not_udp: u64,
    /// IP fragments (not reassembled) and frames cut short by the snap length.
    pub unreadable: u64,
}

/// Calls `f` for every UDP datagram of a pcap or pcapng file, in capture order.
pub fn for_each_udp(
    path: &Path,
    mut f: impl FnMut(UdpDatagram<'_>),
) -> anyhow::Result<CaptureStats> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = pcap_parser::create_reader(1 << 20, file)
        .map_err(|e| anyhow::anyhow!("{}: not a pcap or pcapng file ({e:?})", path.display()))?;
    let mut stats = CaptureStats::default();
    // Legacy pcap: one link type and resolution; pcapng: per interface.
    let mut legacy = (Linktype::ETHERNET, 1_000_000u64);
    let mut interfaces: Vec<(Linktype, u64, i64)> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                let frame = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy = (
                            h.network,
                            if h.is_nanosecond_precision() {
                                1_000_000_000
                            } else {
                                1_000_000
                            },
                        );
                        None
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let ts =
                            i64::from(b.ts_sec) * 1_000_000 + scale(u64::from(b.ts_usec), legacy.1);
                        Some((legacy.0, ts, b.data))
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push((
                            idb.linktype,
                            idb.ts_resolution().unwrap_or(1_000_000),
                            idb.ts_offset(),
                        ));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let (lt, res, off) = interfaces
                            .get(epb.if_id as usize)
                            .copied()
                            .unwrap_or((Linktype::ETHERNET, 1_000_000, 0));
                        let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let ts = (off * 1_000_000).saturating_add(units_to_micros(units, res));
                        Some((lt, ts, epb.data))
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let lt = interfaces.first().map_or(Linktype::ETHERNET, |i| i.0);
                        Some((lt, 0, spb.data))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((linktype, ts_micros, data)) = frame {
                    stats.frames += 1;
                    match udp_of_frame(linktype, data) {
                        Frame::Udp { src, dst, payload } => {
                            stats.udp += 1;
                            f(UdpDatagram {
                                ts_micros,
                                src,
                                dst,
                                payload,
                            });
                        }
                        Frame::NotUdp => stats.not_udp += 1,
                        Frame::Unreadable => stats.unreadable += 1,
                    }
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    bail!("{}: read error", path.display());
                }
            }
            Err(e) => bail!(
                "{}: corrupt capture after {} frames ({e:?})",
                path.display(),
                stats.frames
            ),
        }
    }
    Ok(stats)
}

fn scale(sub: u64, per_sec: u64) -> i64 {
    i64::try_from(sub * 1_000_000 / per_sec.max(1)).unwrap_or(0)
}

fn units_to_micros(units: u64, per_sec: u64) -> i64 {
    let per_sec = per_sec.max(1);
    let secs = units / per_sec;
    let sub = units % per_sec;
    i64::try_from(secs).unwrap_or(i64::MAX / 2_000_000) * 1_000_000 + scale(sub, per_sec)
}

enum Frame<'a> {
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    NotUdp,
    Unreadable,
}

/// The IP packet inside a link-layer frame: (ethertype-like protocol, bytes).
fn ip_of_frame(linktype: Linktype, data: &[u8]) -> Option<&[u8]> {
    match linktype {
        Linktype::ETHERNET => {
            let mut ethertype = u16::from_be_bytes([*data.get(12)?, *data.get(13)?]);
            let mut at = 14;
            while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                ethertype = u16::from_be_bytes([*data.get(at + 2)?, *data.get(at + 3)?]);
                at += 4;
            }
            matches!(ethertype, 0x0800 | 0x86dd)
                .then(|| data.get(at..))
                .flatten()
        }
        Linktype::LINUX_SLL => data.get(16..),
        Linktype::LINUX_SLL2 => data.get(20..),
        Linktype::NULL | Linktype(108) => data.get(4..),
        Linktype::RAW | Linktype(12) | Linktype(14) | Linktype(228) | Linktype(229) => Some(data),
        _ => None,
    }
}

fn udp_of_frame(linktype: Linktype, data: &[u8]) -> Frame<'_> {
    let Some(ip) = ip_of_frame(linktype, data) else {
        return Frame::NotUdp;
    };
    let Some(&first) = ip.first() else {
        return Frame::Unreadable;
    };
    let parsed = match first >> 4 {
        4 => ipv4_udp(ip),
        6 => ipv6_udp(ip),
        _ => return Frame::NotUdp,
    };
    match parsed {
        Ok(Some((src_ip, dst_ip, udp))) => {
            let (Some(h), Some(len)) = (udp.get(..8), udp.get(4..6)) else {
                return Frame::Unreadable;
            };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(payload) = udp.get(8..len.max(8)) else {
                return Frame::Unreadable;
            };
            Frame::Udp {
                src: SocketAddr::new(src_ip, u16::from_be_bytes([h[0], h[1]])),
                dst: SocketAddr::new(dst_ip, u16::from_be_bytes([h[2], h[3]])),
                payload,
            }
        }
        Ok(None) => Frame::NotUdp,
        Err(()) => Frame::Unreadable,
    }
}

type Udp<'a> = Result<Option<(IpAddr, IpAddr, &'a [u8])>, ()>;

fn ipv4_udp(ip: &[u8]) -> Udp<'_> {
    let h = ip.get(..20).ok_or(())?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if h[9] != 17 {
        return Ok(None);
    }
    if frag & 0x3fff != 0 {
        return Err(()); // fragment: not reassembled
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    let end = if total >= ihl {
        total.min(ip.len())
    } else {
        ip.len()
    };
    Ok(Some((src, dst, ip.get(ihl..end).ok_or(())?)))
}

fn ipv6_udp(ip: &[u8]) -> Udp<'_> {
    let h = ip.get(..40).ok_or(())?;
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let src = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&h[8..24]).map_err(|_| ())?,
    ));
    let dst = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&h[24..40]).map_err(|_| ())?,
    ));
    let mut next = h[6];
    let end = (40 + payload_len).min(ip.len());
    let mut rest = ip.get(40..end).ok_or(())?;
    loop {
        match next {
            17 => return Ok(Some((src, dst, rest))),
            0 | 43 | 60 => {
                let n = (usize::from(*rest.get(1).ok_or(())?) + 1) * 8;
                next = rest[0];
                rest = rest.get(n..).ok_or(())?;
            }
            44 => return Err(()),
            _ => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_vlan_ipv4_udp() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]); // VLAN 5, IPv4
        f.extend_from_slice(&[
            0x45, 0, 0, 31, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x30, 0x39, 0x08, 0x07, 0, 11, 0, 0, b'a', b'b', b'c']);
        f.extend_from_slice(&[0, 0, 0]); // Ethernet trailer
        match udp_of_frame(Linktype::ETHERNET, &f) {
            Frame::Udp { src, dst, payload } => {
                assert_eq!(src, "10.0.0.1:12345".parse().unwrap());
                assert_eq!(dst.port(), 2055);
                assert_eq!(payload, b"abc");
            }
            _ => panic!("not decoded"),
        }
    }

    #[test]
    fn raw_ipv6_udp_and_fragments() {
        let mut p = vec![0x60, 0, 0, 0, 0, 10, 17, 64];
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&[0, 1, 0, 2, 0, 10, 0, 0, 7, 7]);
        assert!(matches!(
            udp_of_frame(Linktype::RAW, &p),
            Frame::Udp {
                payload: [7, 7],
                ..
            }
        ));
        p[6] = 44;
        assert!(matches!(udp_of_frame(Linktype::RAW, &p), Frame::Unreadable));
    }
}
