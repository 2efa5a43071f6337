//! The keys of template state: who sent a datagram, and the scope of a template id. Their own
//! module so that the cache and the error type can both name them without depending on each
//! other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Who sent a datagram, as far as template scoping is concerned.
///
/// By default an exporter is its IP address ([`From<IpAddr>`]); when several exporters share an
/// address (NAT, several exporting processes on one host), key them by address and UDP source
/// port ([`From<SocketAddr>`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExporterKey {
    /// The exporter's IP address.
    pub addr: IpAddr,
    /// The UDP source port, or 0 when exporters are keyed by address alone.
    pub port: u16,
}

impl From<IpAddr> for ExporterKey {
    fn from(addr: IpAddr) -> Self {
        ExporterKey { addr, port: 0 }
    }
}

impl From<Ipv4Addr> for ExporterKey {
    fn from(addr: Ipv4Addr) -> Self {
        ExporterKey {
            addr: addr.into(),
            port: 0,
        }
    }
}

impl From<Ipv6Addr> for ExporterKey {
    fn from(addr: Ipv6Addr) -> Self {
        ExporterKey {
            addr: addr.into(),
            port: 0,
        }
    }
}

impl From<SocketAddr> for ExporterKey {
    fn from(s: SocketAddr) -> Self {
        ExporterKey {
            addr: s.ip(),
            port: s.port(),
        }
    }
}

/// The fields packed into one or two integers, hashed by one or two calls: every datagram hashes
/// its key a few times (template, domain and exporter lookups), and the derived `Hash` took a
/// call per field. Equal keys pack equally, so this agrees with `Eq`.
impl core::hash::Hash for ExporterKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.hash_with(0, state);
    }
}

impl ExporterKey {
    /// Hashes the key with 64 more bits of `rest`.
    #[inline]
    fn hash_with<H: core::hash::Hasher>(&self, rest: u64, state: &mut H) {
        let port = u128::from(self.port) << 48 | u128::from(rest) << 64;
        match self.addr {
            IpAddr::V4(a) => state.write_u128(u128::from(a.to_bits()) | 1 << 32 | port),
            IpAddr::V6(a) => {
                state.write_u128(a.to_bits());
                state.write_u128(2 | port);
            }
        }
    }
}

impl core::fmt::Display for ExporterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.port, self.addr) {
            (0, a) => write!(f, "{a}"),
            (p, a) => write!(f, "{}", SocketAddr::new(a, p)),
        }
    }
}

/// The scope of a template id: RFC 3954 §5.1 scopes template ids by exporter and source id,
/// RFC 7011 §3.1 by transport session and observation domain. The version keeps v9 and IPFIX
/// templates of one exporter apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateKey {
    /// The exporter.
    pub exporter: ExporterKey,
    /// 9 or 10.
    pub version: u16,
    /// v9 source id or IPFIX observation domain id.
    pub domain: u32,
    /// The template id (>= 256).
    pub template_id: u16,
}

/// As [`ExporterKey`]'s: one or two calls, consistent with `Eq`.
impl core::hash::Hash for TemplateKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // 48 bits: version and template id; the domain goes with the address's word.
        let rest = u64::from(self.version) | u64::from(self.template_id) << 16;
        self.exporter
            .hash_with(rest | u64::from(self.domain) << 32, state);
    }
}

impl core::fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let dom = if self.version == 10 {
            "domain"
        } else {
            "source"
        };
        write!(
            f,
            "{} v{} {dom} {} id {}",
            self.exporter, self.version, self.domain, self.template_id
        )
    }
}
