//! The window's one sum-and-rank type: bytes per key (address, address pair, protocol, port)
//! and the top entries, ties broken the same way every time.

use std::hash::Hash;
use std::net::IpAddr;

use super::aggregate::HashMap;

/// A key the window sums bytes by, with the compact form most of its values take.
///
/// Window maps are far larger than the caches, so entry size is what a flow costs: an IPv4
/// address as a `u32` (a pair of them as one `u64`) makes a 16-byte entry and a one-word hash,
/// where an `IpAddr` key takes 17 bytes and an enum hash. Keys without a compact form (IPv6)
/// live in a second map. The compact form must order like the keys it stands for (`u32`
/// order is IPv4 address order, `src << 32 | dst` is pair order), so a map of compact keys is
/// ranked on them, the cheap comparison, and only its top entries are expanded.
pub trait SumKey: Copy + Ord + Hash {
    /// The compact form.
    type Compact: Copy + Ord + Hash;
    /// Where the sums of compact keys live: a hash map, or an array for `u8`.
    type Map: CompactMap<Self::Compact>;
    /// `Ok` with the compact form, or `Err(self)` for a key that has none.
    fn compact(self) -> Result<Self::Compact, Self>;
    /// The key a compact form stands for.
    fn expand(c: Self::Compact) -> Self;
}

impl SumKey for IpAddr {
    type Compact = u32;
    type Map = HashMap<u32, u64>;
    fn compact(self) -> Result<u32, IpAddr> {
        match self {
            IpAddr::V4(a) => Ok(u32::from(a)),
            other => Err(other),
        }
    }
    fn expand(c: u32) -> IpAddr {
        IpAddr::from(c.to_be_bytes())
    }
}

impl SumKey for (IpAddr, IpAddr) {
    type Compact = u64;
    type Map = HashMap<u64, u64>;
    fn compact(self) -> Result<u64, (IpAddr, IpAddr)> {
        match self {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                Ok(u64::from(u32::from(s)) << 32 | u64::from(u32::from(d)))
            }
            other => Err(other),
        }
    }
    fn expand(c: u64) -> (IpAddr, IpAddr) {
        let ip = |x: u64| IpAddr::from(u32::try_from(x & 0xffff_ffff).unwrap_or(0).to_be_bytes());
        (ip(c >> 32), ip(c))
    }
}

macro_rules! compact_as_itself {
    ($($t:ty => $map:ty),*) => {$(
        impl SumKey for $t {
            type Compact = $t;
            type Map = $map;
            fn compact(self) -> Result<$t, $t> {
                Ok(self)
            }
            fn expand(c: $t) -> $t {
                c
            }
        }
    )*};
}
compact_as_itself!(u8 => ByteMap, u16 => HashMap<u16, u64>);

/// Sums of compact keys.
pub trait CompactMap<C>: Default + Clone + std::fmt::Debug {
    /// Adds `v` to `c` (saturating).
    fn bump(&mut self, c: C, v: u64);
    /// Distinct keys.
    fn len(&self) -> usize;
    /// Whether no key was added.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every key added, with its sum.
    fn entries(&self) -> impl Iterator<Item = (C, u64)>;
}

impl<C: Copy + Eq + Hash + std::fmt::Debug> CompactMap<C> for HashMap<C, u64> {
    fn bump(&mut self, c: C, v: u64) {
        bump(self, c, v);
    }
    fn len(&self) -> usize {
        HashMap::len(self)
    }
    fn entries(&self) -> impl Iterator<Item = (C, u64)> {
        self.iter().map(|(c, v)| (*c, *v))
    }
}

/// Sums per `u8` (IP protocols) in an array: no hashing. `seen` marks keys added (a 0-byte
/// flow still lists its protocol, as a map entry would).
#[derive(Debug, Clone)]
pub struct ByteMap {
    sums: [u64; 256],
    seen: [u64; 4],
}

impl Default for ByteMap {
    fn default() -> ByteMap {
        ByteMap {
            sums: [0; 256],
            seen: [0; 4],
        }
    }
}

impl CompactMap<u8> for ByteMap {
    fn bump(&mut self, c: u8, v: u64) {
        let e = &mut self.sums[usize::from(c)];
        *e = e.saturating_add(v);
        self.seen[usize::from(c >> 6)] |= 1 << (c & 63);
    }
    fn len(&self) -> usize {
        self.seen.iter().map(|w| w.count_ones() as usize).sum()
    }
    fn entries(&self) -> impl Iterator<Item = (u8, u64)> {
        (0..=255u8)
            .filter(|c| self.seen[usize::from(c >> 6)] & (1 << (c & 63)) != 0)
            .map(|c| (c, self.sums[usize::from(c)]))
    }
}

/// Bytes per key, and the top entries: the one sum-and-rank type of the window (addresses,
/// pairs, protocols, ports). Sums saturate at `u64::MAX`.
#[derive(Debug, Clone)]
pub struct Sums<K: SumKey> {
    compact: K::Map,
    other: HashMap<K, u64>,
}

impl<K: SumKey> Default for Sums<K> {
    fn default() -> Sums<K> {
        Sums {
            compact: K::Map::default(),
            other: HashMap::default(),
        }
    }
}

impl<K: SumKey> Sums<K> {
    /// Adds `bytes` to `key`.
    pub fn add(&mut self, key: K, bytes: u64) {
        match key.compact() {
            Ok(c) => self.compact.bump(c, bytes),
            Err(k) => bump(&mut self.other, k, bytes),
        }
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        self.compact.len() + self.other.len()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` largest entries by bytes, ties by key ascending (addresses: IPv4 before IPv6,
    /// then numerically; pairs by source, then destination). The top `n` of the whole is
    /// within the top `n` of each map, so each map is ranked alone and the two merged.
    pub fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = rank(self.compact.entries(), n)
            .into_iter()
            .map(|(c, b)| (K::expand(c), b))
            .collect();
        v.extend(rank(self.other.iter().map(|(k, b)| (*k, *b)), n));
        v.sort_unstable_by(by_bytes_then_key);
        v.truncate(n);
        v
    }
}

/// Bytes descending, then the key ascending.
fn by_bytes_then_key<K: Ord>(a: &(K, u64), b: &(K, u64)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then(a.0.cmp(&b.0))
}

/// The `n` first of `entries` in [`by_bytes_then_key`] order.
fn rank<K: Ord>(entries: impl Iterator<Item = (K, u64)>, n: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = entries.collect();
    if v.len() > n && n > 0 {
        v.select_nth_unstable_by(n - 1, by_bytes_then_key);
    }
    v.truncate(n);
    v.sort_unstable_by(by_bytes_then_key);
    v
}

pub(super) fn bump<K: Eq + Hash>(m: &mut HashMap<K, u64>, k: K, v: u64) {
    let e = m.entry(k).or_insert(0);
    *e = e.saturating_add(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn test_split_sums_rank_like_one_ipaddr_map() {
        // IPv4 and IPv6 (v4-mapped and ::a.b.c.d too, which must stay apart from IPv4),
        // many ties: the split maps must list exactly what one IpAddr-keyed map would.
        let addrs: Vec<IpAddr> = [
            "10.0.0.1",
            "10.0.0.2",
            "0.0.0.0",
            "255.255.255.255",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "::",
            "2001:db8::1",
            "ffff::1",
            "10.0.0.3",
            "192.0.2.1",
            "2001:db8::2",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        let (mut sums, mut pairs, mut protos) = (
            Sums::<IpAddr>::default(),
            Sums::<(IpAddr, IpAddr)>::default(),
            Sums::<u8>::default(),
        );
        // the reference: one plain map per kind, ranked whole
        fn top_n<K: Ord + Copy>(m: &HashMap<K, u64>, n: usize) -> Vec<(K, u64)> {
            rank(m.iter().map(|(k, v)| (*k, *v)), n)
        }
        let mut want: HashMap<IpAddr, u64> = HashMap::default();
        let mut want_pairs: HashMap<(IpAddr, IpAddr), u64> = HashMap::default();
        let mut want_protos: HashMap<u8, u64> = HashMap::default();
        for k in 0..500u64 {
            let a = addrs[(k * 7 % 12) as usize];
            let b = addrs[(k * 5 % 12) as usize];
            let bytes = [0, 1, 2, 3][(k % 4) as usize];
            let p = [0u8, 6, 17, 255][(k * 3 % 4) as usize];
            sums.add(a, bytes);
            pairs.add((a, b), bytes);
            protos.add(p, bytes);
            bump(&mut want, a, bytes);
            bump(&mut want_pairs, (a, b), bytes);
            bump(&mut want_protos, p, bytes);
        }
        for n in [0, 1, 3, 10, 50] {
            assert_eq!(sums.top(n), top_n(&want, n), "top {n}");
            assert_eq!(pairs.top(n), top_n(&want_pairs, n), "top {n}");
            assert_eq!(protos.top(n), top_n(&want_protos, n), "top {n}");
        }
        assert_eq!((sums.len(), pairs.len()), (want.len(), want_pairs.len()));
    }
}
