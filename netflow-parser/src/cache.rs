//! The template cache: bounded, scoped per exporter, owned by the caller.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::net::IpAddr;

pub(crate) use crate::key::{ExporterKey, TemplateKey};

use crate::error::{DecodeError, ExceededLimit, TemplateProblem};
use crate::exporters::ExporterTable;
use crate::field::{FieldId, FieldSpec};
use crate::template::{Template, TemplateKind};

/// Bounds on what a [`TemplateCache`] and the pending buffer of a [`Decoder`](crate::Decoder)
/// may hold. Hitting one gives an error or a counted drop, never unbounded growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Templates one exporter may define (over all versions and domains). Default 1024.
    pub max_templates_per_exporter: usize,
    /// Distinct exporters with templates. Default 4096.
    pub max_exporters: usize,
    /// Fields in one template. Default 512.
    pub max_fields: usize,
    /// Data sets kept while their template is unknown. Default 1024.
    pub max_pending_sets: usize,
    /// Bytes of data sets kept while their template is unknown. Default 4 MiB.
    pub max_pending_bytes: usize,
    /// How long a data set waits for its template, in microseconds of the caller's clock.
    /// Default 10 minutes (exporters resend templates every few minutes at most).
    pub max_pending_age_micros: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_templates_per_exporter: 1024,
            max_exporters: 4096,
            max_fields: 512,
            max_pending_sets: 1024,
            max_pending_bytes: 4 << 20,
            max_pending_age_micros: 600_000_000,
        }
    }
}

/// What [`TemplateCache::insert`] (or the decoder, on a template record) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateUpdate {
    /// A template id seen for the first time.
    New,
    /// The same definition again (a periodic refresh): nothing was allocated.
    Refreshed,
    /// An existing id with a different definition: the new one replaced it.
    Redefined,
}

/// Compiled templates keyed by [`TemplateKey`], shared by all exporters of a process.
///
/// Data and options templates share one id space per (exporter, version, domain): the last
/// definition of an id wins. Owned by the caller; lookups hand out `&Template`, learning is a
/// separate `&mut` step. Bounded by [`Limits`].
///
/// # When the cache is full
///
/// A new template of an exporter that already holds [`Limits::max_templates_per_exporter`] is
/// refused ([`DecodeError::LimitExceeded`]). A template of a new exporter when
/// [`Limits::max_exporters`] exporters hold templates evicts the exporter **seen least
/// recently** (a template learned or refreshed, or a data set decoded with one of its
/// templates): all its templates go, and the [`Decoder`](crate::Decoder) also drops its pending
/// sets and options state. Evictions are counted ([`TemplateCache::exporters_evicted`]).
/// Admitting, touching and evicting cost O(1) in the number of exporters, and an eviction
/// the templates the evicted exporter held; nothing grows past the limits.
///
/// What a spoofing attacker (UDP sources are trivially forged) can and cannot do:
/// * It **cannot** grow memory past the limits, nor lock new or restarted exporters out: a real
///   exporter's template is always admitted.
/// * It **can** evict an exporter that has been silent for longer than the attacker needs to
///   send `max_exporters` forged templates from distinct addresses; that exporter's data then
///   waits as pending sets (or is reported lost) until its next template refresh. An exporter
///   that sends data more often than that is not evicted. Raising `max_exporters` widens the
///   window at the price of memory.
/// * It can always, as with any UDP collector, forge templates or data in the name of a real
///   exporter's address; the cache cannot tell those apart.
#[derive(Debug, Clone, Default)]
pub struct TemplateCache {
    map: HashMap<TemplateKey, Entry, RandomState>,
    exporters: ExporterTable,
    limits: Limits,
    evicted: u64,
}

/// A template and the slot of its exporter in the eviction order. Boxed: a compiled template
/// is about 1 KB, and inline the map's buckets would be too, so that growing the map (what one
/// datagram's new template may do) cost a kilobyte per bucket, 1 MB at 1,000 templates.
#[derive(Debug, Clone)]
struct Entry {
    template: Box<Template>,
    slot: u32,
}

/// Magic and version of the snapshot format of [`TemplateCache::export`].
const SNAPSHOT_MAGIC: &[u8; 8] = b"NFTPL\0\0\x01";

impl TemplateCache {
    /// An empty cache with these limits.
    pub fn new(limits: Limits) -> TemplateCache {
        TemplateCache {
            map: HashMap::default(),
            exporters: ExporterTable::default(),
            limits,
            evicted: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The template for `key`, if known.
    #[inline]
    pub fn get(&self, key: &TemplateKey) -> Option<&Template> {
        self.map.get(key).map(|e| &*e.template)
    }

    /// The template for `key`, marking its exporter as seen now (eviction order).
    #[inline]
    pub(crate) fn get_seen(&mut self, key: &TemplateKey) -> Option<&Template> {
        let e = self.map.get(key)?;
        self.exporters.touch(e.slot);
        Some(&e.template)
    }

    /// Number of templates held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no template is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of exporters holding templates.
    pub fn exporters(&self) -> usize {
        self.exporters.len()
    }

    /// Exporters evicted so far (with all their templates) to admit a new exporter while
    /// [`Limits::max_exporters`] were held.
    pub fn exporters_evicted(&self) -> u64 {
        self.evicted
    }

    /// Every template with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TemplateKey, &Template)> {
        self.map.iter().map(|(k, e)| (k, &*e.template))
    }

    /// Adds or replaces a compiled template. A template of a new exporter when the cache holds
    /// [`Limits::max_exporters`] exporters evicts the one seen least recently.
    pub fn insert(
        &mut self,
        key: TemplateKey,
        template: Template,
    ) -> Result<TemplateUpdate, DecodeError> {
        self.insert_evicting(key, template).map(|(l, _)| l)
    }

    /// [`TemplateCache::insert`], also returning the exporter evicted to make room, if any.
    pub(crate) fn insert_evicting(
        &mut self,
        key: TemplateKey,
        template: Template,
    ) -> Result<(TemplateUpdate, Option<ExporterKey>), DecodeError> {
        if let Some(old) = self.map.get_mut(&key) {
            self.exporters.touch(old.slot);
            if *old.template == template {
                return Ok((TemplateUpdate::Refreshed, None));
            }
            *old.template = template;
            return Ok((TemplateUpdate::Redefined, None));
        }
        let (slot, evicted) = self.admit(key)?;
        self.map.insert(
            key,
            Entry {
                template: Box::new(template),
                slot,
            },
        );
        Ok((TemplateUpdate::New, evicted))
    }

    /// Learns a template from its wire form without allocating when it is a refresh. Returns
    /// what was learned and the exporter evicted to make room, if any.
    pub(crate) fn learn_raw(
        &mut self,
        key: TemplateKey,
        kind: TemplateKind,
        raw: &[u8],
        compile: impl FnOnce() -> Result<Template, TemplateProblem>,
        offset: usize,
    ) -> Result<(TemplateUpdate, Option<ExporterKey>), DecodeError> {
        if let Some(old) = self.map.get(&key)
            && old.template.kind() == kind
            && old.template.raw() == raw
        {
            self.exporters.touch(old.slot);
            return Ok((TemplateUpdate::Refreshed, None));
        }
        let t = compile().map_err(|why| DecodeError::BadTemplate {
            offset,
            template_id: key.template_id,
            why,
        })?;
        self.insert_evicting(key, t)
    }

    /// Makes room for a new template `key`: its exporter's slot, and the exporter evicted.
    fn admit(&mut self, key: TemplateKey) -> Result<(u32, Option<ExporterKey>), DecodeError> {
        if let Some(slot) = self.exporters.slot(&key.exporter) {
            let max = self.limits.max_templates_per_exporter;
            if self.exporters.templates(slot).len() >= max {
                return Err(DecodeError::LimitExceeded {
                    key,
                    limit: ExceededLimit::TemplatesPerExporter,
                    max,
                });
            }
            self.exporters.add_template(slot, key);
            self.exporters.touch(slot);
            return Ok((slot, None));
        }
        if self.limits.max_exporters == 0 || self.limits.max_templates_per_exporter == 0 {
            let (limit, max) = if self.limits.max_exporters == 0 {
                (ExceededLimit::Exporters, 0)
            } else {
                (ExceededLimit::TemplatesPerExporter, 0)
            };
            return Err(DecodeError::LimitExceeded { key, limit, max });
        }
        let mut evicted = None;
        if self.exporters.len() >= self.limits.max_exporters
            && let Some(lru) = self.exporters.least_recent()
        {
            if self.evicted == 0 {
                // From now on every admission removes an exporter's keys and inserts others.
                // The removals leave tombstones, and a hash table whose free slots run out
                // doubles when it holds more than half its capacity, at a random moment of a
                // flood, in one call. Made twice the size once, here, it rehashes in place.
                self.map.reserve(self.map.len() + 1);
                self.exporters.reserve_for_churn();
            }
            let map = &mut self.map;
            evicted = self.exporters.remove(lru, |k| {
                map.remove(k);
            });
            self.evicted += 1;
        }
        let slot = self.exporters.insert(key.exporter);
        self.exporters.add_template(slot, key);
        Ok((slot, evicted))
    }

    /// Removes one template (IPFIX withdrawal). Returns whether it was there.
    pub fn remove(&mut self, key: &TemplateKey) -> bool {
        let Some(e) = self.map.remove(key) else {
            return false;
        };
        self.exporters.remove_template(e.slot, key);
        true
    }

    /// Removes every template of an exporter (e.g. when it restarted). Returns how many.
    pub fn forget_exporter(&mut self, exporter: ExporterKey) -> usize {
        let Some(slot) = self.exporters.slot(&exporter) else {
            return 0;
        };
        let map = &mut self.map;
        let mut n = 0;
        self.exporters.remove(slot, |k| {
            n += usize::from(map.remove(k).is_some());
        });
        n
    }

    /// Removes the templates of one (exporter, version, domain), e.g. on an IPFIX
    /// all-templates withdrawal. Returns how many.
    pub fn forget_domain(&mut self, exporter: ExporterKey, version: u16, domain: u32) -> usize {
        let Some(slot) = self.exporters.slot(&exporter) else {
            return 0;
        };
        let hit = |k: &TemplateKey| k.version == version && k.domain == domain;
        for k in self.exporters.templates(slot) {
            if hit(k) {
                self.map.remove(k);
            }
        }
        self.exporters.retain_templates(slot, |k| !hit(k))
    }

    /// Serializes every template into a compact, versioned binary snapshot, so that a restarted
    /// process can decode data at once instead of waiting for the exporters' next refresh.
    ///
    /// Format (all big-endian): the 8-byte magic `NFTPL\0\0\x01`, a u32 count, then per template:
    /// address family (4 or 6), address (4 or 16 bytes), port u16, version u16, domain u32,
    /// template id u16, scope field count u16 (0xffff for a data template), field count u16, and
    /// the fields as enterprise u32, id u16, length u16.
    pub fn export(&self) -> Vec<u8> {
        let mut keys: Vec<&TemplateKey> = self.map.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(16 + self.map.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
        for key in keys {
            let Some(t) = self.get(key) else { continue };
            match key.exporter.addr {
                IpAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    out.push(6);
                    out.extend_from_slice(&a.octets());
                }
            }
            out.extend_from_slice(&key.exporter.port.to_be_bytes());
            out.extend_from_slice(&key.version.to_be_bytes());
            out.extend_from_slice(&key.domain.to_be_bytes());
            out.extend_from_slice(&key.template_id.to_be_bytes());
            let scope = match t.kind() {
                TemplateKind::Data => u16::MAX,
                TemplateKind::Options { scope_fields } => scope_fields,
            };
            out.extend_from_slice(&scope.to_be_bytes());
            out.extend_from_slice(&(t.fields().len() as u16).to_be_bytes());
            for f in t.fields() {
                out.extend_from_slice(&f.enterprise.to_be_bytes());
                out.extend_from_slice(&f.id.0.to_be_bytes());
                out.extend_from_slice(&f.len.to_be_bytes());
            }
        }
        out
    }

    /// Loads a snapshot made by [`TemplateCache::export`], adding its templates (limits apply).
    /// Returns how many templates were loaded. A malformed snapshot is refused whole.
    pub fn import(&mut self, snapshot: &[u8]) -> Result<usize, DecodeError> {
        let mut r = Reader(snapshot);
        if r.take(8)? != SNAPSHOT_MAGIC {
            return Err(DecodeError::Snapshot(
                "not a template snapshot (bad magic or version)",
            ));
        }
        let count = r.u32()?;
        let mut staged = Vec::new();
        for _ in 0..count {
            let addr = match r.take(1)?[0] {
                4 => IpAddr::from(
                    <[u8; 4]>::try_from(r.take(4)?)
                        .map_err(|_| DecodeError::Snapshot("address"))?,
                ),
                6 => IpAddr::from(
                    <[u8; 16]>::try_from(r.take(16)?)
                        .map_err(|_| DecodeError::Snapshot("address"))?,
                ),
                _ => return Err(DecodeError::Snapshot("bad address family")),
            };
            let port = r.u16()?;
            let version = r.u16()?;
            let domain = r.u32()?;
            let template_id = r.u16()?;
            let scope = r.u16()?;
            let n = usize::from(r.u16()?);
            if n > self.limits.max_fields {
                return Err(DecodeError::Snapshot(
                    "template has more fields than allowed",
                ));
            }
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                let enterprise = r.u32()?;
                let id = FieldId(r.u16()?);
                let len = r.u16()?;
                fields.push(FieldSpec {
                    id,
                    len,
                    enterprise,
                });
            }
            let kind = if scope == u16::MAX {
                TemplateKind::Data
            } else {
                TemplateKind::Options {
                    scope_fields: scope,
                }
            };
            let t = Template::compile(template_id, kind, &fields)
                .map_err(|_| DecodeError::Snapshot("invalid template"))?;
            staged.push((
                TemplateKey {
                    exporter: ExporterKey { addr, port },
                    version,
                    domain,
                    template_id,
                },
                t,
            ));
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Snapshot("trailing bytes"));
        }
        let n = staged.len();
        for (k, t) in staged {
            self.insert(k, t)?;
        }
        Ok(n)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Snapshot("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn key(addr: u8, id: u16) -> TemplateKey {
        TemplateKey {
            exporter: IpAddr::V4(Ipv4Addr::new(10, 0, 0, addr)).into(),
            version: 9,
            domain: 0,
            template_id: id,
        }
    }

    fn t(id: u16, n: u16) -> Template {
        let fields: Vec<FieldSpec> = (1..=n).map(|i| FieldSpec::new(FieldId(i), 4)).collect();
        Template::compile(id, TemplateKind::Data, &fields).unwrap()
    }

    #[test]
    fn learn_refresh_redefine() {
        let mut c = TemplateCache::new(Limits::default());
        assert_eq!(c.insert(key(1, 256), t(256, 2)), Ok(TemplateUpdate::New));
        assert_eq!(
            c.insert(key(1, 256), t(256, 2)),
            Ok(TemplateUpdate::Refreshed)
        );
        assert_eq!(
            c.insert(key(1, 256), t(256, 3)),
            Ok(TemplateUpdate::Redefined)
        );
        assert_eq!(c.get(&key(1, 256)).map(|t| t.fields().len()), Some(3));
        assert!(c.get(&key(2, 256)).is_none());
    }

    #[test]
    fn test_limits_refuse_growth() {
        let limits = Limits {
            max_templates_per_exporter: 2,
            max_exporters: 2,
            ..Limits::default()
        };
        let mut c = TemplateCache::new(limits);
        c.insert(key(1, 256), t(256, 1)).unwrap();
        c.insert(key(1, 257), t(257, 1)).unwrap();
        assert!(matches!(
            c.insert(key(1, 258), t(258, 1)),
            Err(DecodeError::LimitExceeded {
                limit: ExceededLimit::TemplatesPerExporter,
                ..
            })
        ));
        // Redefinition of a known id is still allowed at the limit.
        assert_eq!(
            c.insert(key(1, 257), t(257, 2)),
            Ok(TemplateUpdate::Redefined)
        );
        c.insert(key(2, 256), t(256, 1)).unwrap();
        // A third exporter evicts the one seen least recently: 1 (2 came later).
        assert_eq!(
            c.insert_evicting(key(3, 256), t(256, 1)),
            Ok((TemplateUpdate::New, Some(key(1, 256).exporter)))
        );
        assert_eq!(c.exporters_evicted(), 1);
        assert_eq!((c.len(), c.exporters()), (2, 2));
        assert!(c.get(&key(1, 256)).is_none() && c.get(&key(1, 257)).is_none());
        // Seeing 2 (a data set decoded with its template) makes 3 the least recent.
        assert!(c.get_seen(&key(2, 256)).is_some());
        assert_eq!(
            c.insert_evicting(key(4, 256), t(256, 1)),
            Ok((TemplateUpdate::New, Some(key(3, 256).exporter)))
        );
        assert!(c.get(&key(2, 256)).is_some());
        // A refresh counts as seen too.
        assert_eq!(
            c.insert(key(2, 256), t(256, 1)),
            Ok(TemplateUpdate::Refreshed)
        );
        c.insert(key(5, 256), t(256, 1)).unwrap();
        assert!(c.get(&key(2, 256)).is_some() && c.get(&key(4, 256)).is_none());
        assert_eq!(c.exporters_evicted(), 3);
        assert!(c.remove(&key(2, 256)));
        assert_eq!(c.exporters(), 1);
        c.insert(key(6, 256), t(256, 1)).unwrap();
        assert_eq!(c.exporters_evicted(), 3);
        // No exporter at all: a refusal.
        let mut none = TemplateCache::new(Limits {
            max_exporters: 0,
            ..Limits::default()
        });
        assert!(matches!(
            none.insert(key(1, 256), t(256, 1)),
            Err(DecodeError::LimitExceeded {
                limit: ExceededLimit::Exporters,
                ..
            })
        ));
    }

    #[test]
    fn forget_domain_and_exporter_keep_the_counts() {
        let mut c = TemplateCache::new(Limits::default());
        let mut k = key(1, 256);
        c.insert(k, t(256, 1)).unwrap();
        k.template_id = 257;
        c.insert(k, t(257, 1)).unwrap();
        k.domain = 1;
        c.insert(k, t(257, 1)).unwrap();
        assert_eq!(c.forget_domain(k.exporter, 9, 0), 2);
        assert_eq!((c.len(), c.exporters()), (1, 1));
        assert_eq!(c.forget_exporter(k.exporter), 1);
        assert_eq!((c.len(), c.exporters()), (0, 0));
        assert_eq!(c.forget_exporter(k.exporter), 0);
    }

    #[test]
    fn export_import_round_trip() {
        let mut c = TemplateCache::new(Limits::default());
        c.insert(key(1, 256), t(256, 3)).unwrap();
        let opts = Template::compile(
            300,
            TemplateKind::Options { scope_fields: 1 },
            &[
                FieldSpec::new(FieldId(2), 4),
                FieldSpec {
                    id: FieldId(7),
                    len: FieldSpec::VARIABLE,
                    enterprise: 9,
                },
            ],
        )
        .unwrap();
        let k6 = TemplateKey {
            exporter: SocketAddr::new("2001:db8::1".parse().unwrap(), 9995).into(),
            version: 10,
            domain: 7,
            template_id: 300,
        };
        c.insert(k6, opts.clone()).unwrap();
        let snap = c.export();
        let mut d = TemplateCache::new(Limits::default());
        assert_eq!(d.import(&snap), Ok(2));
        assert_eq!(d.get(&k6), Some(&opts));
        assert_eq!(d.get(&key(1, 256)), c.get(&key(1, 256)));
        for cut in 0..snap.len() {
            assert!(
                TemplateCache::new(Limits::default())
                    .import(&snap[..cut])
                    .is_err()
            );
        }
    }
}
