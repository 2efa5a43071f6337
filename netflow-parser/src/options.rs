//! What options data tells about an exporter: sampling rates, its system init time, and
//! interface names. Learned by the [`Decoder`](crate::Decoder) as options records go by.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use foldhash::fast::RandomState;

use crate::cache::ExporterKey;
use crate::field::FieldId;
use crate::record::Record;

/// One observation domain (v9 source id) of one exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainKey {
    /// The exporter.
    pub exporter: ExporterKey,
    /// 9 or 10.
    pub version: u16,
    /// v9 source id or IPFIX observation domain id.
    pub domain: u32,
}

/// An interface's name and description, from options data (ifName 82, ifDescription 83).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceName {
    /// ifName, e.g. `Gi0/1`.
    pub name: String,
    /// ifDescription (may be empty).
    pub description: String,
}

/// What options data announced for one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainOptions {
    /// Sampling interval (1 in N) announced without a sampler id: applies to every flow.
    pub sampling_interval: Option<u32>,
    /// Sampling interval per sampler (v9 FLOW_SAMPLER_ID 48, IPFIX selectorId 302), for data
    /// records that reference one.
    pub samplers: BTreeMap<u64, u32>,
    /// systemInitTimeMilliseconds (IPFIX 160): Unix ms of the exporter's sysUpTime 0.
    pub system_init_ms: Option<u64>,
    /// Interface names by ifIndex.
    pub interfaces: BTreeMap<u32, InterfaceName>,
}

impl DomainOptions {
    /// The rate for flows of this domain that name no sampler: the domain-wide one, else the
    /// rate of the only sampler, or of all samplers when they agree.
    pub fn default_rate(&self) -> Option<u32> {
        if let Some(r) = self.sampling_interval {
            return Some(r);
        }
        let mut rates = self.samplers.values();
        let first = *rates.next()?;
        rates.all(|&r| r == first).then_some(first)
    }
}

/// Bounds: domains tracked, in all and per exporter; samplers per domain; interface names per domain and in all
/// (names are at most 64 KiB each but usually short: 65,536 of them stay in the tens of MB).
const MAX_DOMAINS: usize = 4096;
const MAX_DOMAINS_PER_EXPORTER: usize = 64;
const MAX_SAMPLERS: usize = 256;
const MAX_INTERFACES: usize = 8192;
const MAX_INTERFACES_TOTAL: usize = 65_536;
/// Longest name kept (longer ones are cut).
const MAX_NAME: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct OptionsState {
    /// Per exporter, so that forgetting one (evicted from the template cache) costs what it
    /// holds. Exporters have few domains: a short list each.
    domains: HashMap<ExporterKey, Vec<(DomainKey, DomainOptions)>, RandomState>,
    /// Domains in all.
    domain_count: usize,
    overrides: HashMap<IpAddr, u32, RandomState>,
    interfaces: usize,
}

/// 1 in N from whichever sampling fields an options record carries (RFC 3954 §8; RFC 7011 /
/// RFC 5477 §8.2: samplingPacketInterval + samplingPacketSpace, samplingSize of
/// samplingPopulation).
pub(crate) fn rate_of(rec: &Record<'_>) -> Option<u32> {
    let positive = |id| rec.uint(id).filter(|&v| v > 0);
    let rate = if let Some(v) = positive(FieldId::SAMPLING_INTERVAL) {
        v
    } else if let Some(v) = positive(FieldId::FLOW_SAMPLER_RANDOM_INTERVAL) {
        v
    } else if let Some(i) = positive(FieldId::SAMPLING_PACKET_INTERVAL) {
        (i + rec.uint(FieldId::SAMPLING_PACKET_SPACE).unwrap_or(0)) / i
    } else if let Some(size) = positive(FieldId::SAMPLING_SIZE) {
        rec.uint(FieldId::SAMPLING_POPULATION)? / size
    } else {
        return None;
    };
    u32::try_from(rate).ok().filter(|&r| r > 0)
}

/// A name field without its NUL padding and surrounding blanks.
fn trimmed(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(b.len())
        .min(MAX_NAME);
    b.get(..end).unwrap_or(b).trim_ascii()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(trimmed(b)).into_owned()
}

impl OptionsState {
    pub fn domain(&self, key: &DomainKey) -> Option<&DomainOptions> {
        if self.domains.is_empty() {
            return None;
        }
        let list = self.domains.get(&key.exporter)?;
        list.iter().find(|(k, _)| k == key).map(|(_, i)| i)
    }

    pub fn domains(&self) -> impl Iterator<Item = (&DomainKey, &DomainOptions)> {
        self.domains.values().flatten().map(|(k, i)| (k, i))
    }

    /// Forgets what the options data of `exporter` announced (not its sampling override).
    pub fn forget_exporter(&mut self, exporter: ExporterKey) {
        if let Some(list) = self.domains.remove(&exporter) {
            self.domain_count -= list.len();
            for (_, info) in &list {
                self.interfaces -= info.interfaces.len();
            }
        }
    }

    pub fn set_override(&mut self, exporter: IpAddr, rate: Option<u32>) {
        match rate {
            Some(r) => self.overrides.insert(exporter, r.max(1)),
            None => self.overrides.remove(&exporter),
        };
    }

    pub fn override_for(&self, exporter: IpAddr) -> Option<u32> {
        if self.overrides.is_empty() {
            return None;
        }
        self.overrides.get(&exporter).copied()
    }

    /// Learns from one options record of `key`. Allocates only when something new is learned.
    pub fn learn(&mut self, key: DomainKey, rec: &Record<'_>) {
        let rate = rate_of(rec);
        let init = rec.uint(FieldId::SYSTEM_INIT_TIME_MILLISECONDS);
        let name = rec.get(FieldId::IF_NAME);
        let desc = rec.get(FieldId::IF_DESC);
        if rate.is_none() && init.is_none() && name.is_none() && desc.is_none() {
            return;
        }
        let list = self.domains.entry(key.exporter).or_default();
        let info = match list.iter().position(|(k, _)| *k == key) {
            Some(i) => &mut list[i].1,
            None => {
                if self.domain_count >= MAX_DOMAINS || list.len() >= MAX_DOMAINS_PER_EXPORTER {
                    if list.is_empty() {
                        self.domains.remove(&key.exporter);
                    }
                    return;
                }
                self.domain_count += 1;
                list.push((key, DomainOptions::default()));
                let last = list.len() - 1;
                &mut list[last].1
            }
        };
        if let Some(r) = rate {
            match rec
                .uint(FieldId::FLOW_SAMPLER_ID)
                .or_else(|| rec.uint(FieldId::SELECTOR_ID))
            {
                Some(id)
                    if info.samplers.len() < MAX_SAMPLERS || info.samplers.contains_key(&id) =>
                {
                    info.samplers.insert(id, r);
                }
                Some(_) => {}
                None => info.sampling_interval = Some(r),
            }
        }
        if init.is_some() {
            info.system_init_ms = init;
        }
        if name.is_some() || desc.is_some() {
            // The interface: v9 scope type 2 (Interface); IPFIX ingressInterface (10) or
            // egressInterface (14), scope or not.
            let ifindex = if key.version == 9 {
                rec.scope()
                    .find(|(f, _)| f.id.0 == 2)
                    .and_then(|(_, b)| crate::wire::be_uint(b))
            } else {
                rec.uint(FieldId::INPUT_SNMP)
                    .or_else(|| rec.uint(FieldId::OUTPUT_SNMP))
            };
            let Some(ifindex) = ifindex.and_then(|i| u32::try_from(i).ok()) else {
                return;
            };
            let same = |have: &str, b: Option<&[u8]>| have.as_bytes() == b.map_or(&[][..], trimmed);
            if info
                .interfaces
                .get(&ifindex)
                .is_some_and(|k| same(&k.name, name) && same(&k.description, desc))
            {
                return; // a refresh of what is known: nothing to allocate
            }
            if !info.interfaces.contains_key(&ifindex) {
                if info.interfaces.len() >= MAX_INTERFACES
                    || self.interfaces >= MAX_INTERFACES_TOTAL
                {
                    return;
                }
                self.interfaces += 1;
            }
            let new = InterfaceName {
                name: name.map(text).unwrap_or_default(),
                description: desc.map(text).unwrap_or_default(),
            };
            info.interfaces.insert(ifindex, new);
        }
    }
}
