//! The exporters that hold templates, in the order they were last seen: the template cache's
//! eviction order.
//!
//! A slab of slots linked into a list, most recently seen first, with a hash index from the
//! exporter to its slot. Touching, admitting and evicting are O(1) and allocate nothing once
//! the slab has grown to the exporter limit; a slot keeps the keys of its exporter's templates
//! so that evicting it costs what the exporter holds, not what the whole cache holds.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::cache::{ExporterKey, TemplateKey};

/// "No slot" in the links.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Slot {
    exporter: ExporterKey,
    /// The keys of the exporter's templates (at most `max_templates_per_exporter`).
    templates: Vec<TemplateKey>,
    /// Towards the most recently seen.
    prev: u32,
    /// Towards the least recently seen.
    next: u32,
}

/// Exporters with templates, most recently seen first.
#[derive(Debug, Clone)]
pub(crate) struct ExporterTable {
    index: HashMap<ExporterKey, u32, RandomState>,
    slots: Vec<Slot>,
    /// Slots of exporters gone, reused before the slab grows.
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl Default for ExporterTable {
    fn default() -> Self {
        ExporterTable {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }
}

impl ExporterTable {
    /// Exporters held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Room for as many exporters again as are held, so that evicting and admitting (which
    /// leaves tombstones) rehashes the index in place instead of doubling it.
    pub fn reserve_for_churn(&mut self) {
        self.index.reserve(self.index.len() + 1);
    }

    /// The slot of `exporter`, if it holds templates.
    #[inline]
    pub fn slot(&self, exporter: &ExporterKey) -> Option<u32> {
        self.index.get(exporter).copied()
    }

    /// Templates held by the exporter of `slot`.
    pub fn templates(&self, slot: u32) -> &[TemplateKey] {
        self.slots
            .get(slot as usize)
            .map_or(&[], |s| s.templates.as_slice())
    }

    /// Marks the exporter of `slot` as seen now.
    #[inline]
    pub fn touch(&mut self, slot: u32) {
        if slot != self.head {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    /// Adds an exporter (not yet held), seen now; returns its slot.
    pub fn insert(&mut self, exporter: ExporterKey) -> u32 {
        let slot = match self.free.pop() {
            Some(i) => {
                if let Some(s) = self.slots.get_mut(i as usize) {
                    s.exporter = exporter;
                    s.templates.clear();
                }
                i
            }
            None => {
                self.slots.push(Slot {
                    exporter,
                    templates: Vec::new(),
                    prev: NIL,
                    next: NIL,
                });
                u32::try_from(self.slots.len() - 1).unwrap_or(NIL)
            }
        };
        self.index.insert(exporter, slot);
        self.push_front(slot);
        slot
    }

    /// The slot of the exporter seen least recently.
    pub fn least_recent(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Records a new template of the exporter of `slot`.
    pub fn add_template(&mut self, slot: u32, key: TemplateKey) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.templates.push(key);
        }
    }

    /// Forgets one template of the exporter of `slot`; frees the slot when it was the last one.
    pub fn remove_template(&mut self, slot: u32, key: &TemplateKey) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if let Some(i) = s.templates.iter().position(|k| k == key) {
            s.templates.swap_remove(i);
        }
        if s.templates.is_empty() {
            self.remove(slot, |_| {});
        }
    }

    /// Removes the exporter of `slot`, handing each of its template keys to `each`; returns it.
    pub fn remove(&mut self, slot: u32, mut each: impl FnMut(&TemplateKey)) -> Option<ExporterKey> {
        let exporter = self.slots.get(slot as usize)?.exporter;
        if self.index.get(&exporter) != Some(&slot) {
            return None;
        }
        self.unlink(slot);
        self.index.remove(&exporter);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            // Drained, not dropped: the slot keeps its capacity for the next exporter.
            for k in s.templates.drain(..) {
                each(&k);
            }
        }
        self.free.push(slot);
        Some(exporter)
    }

    /// Keeps only the templates of the exporter of `slot` for which `keep` says so; frees the
    /// slot when none is left. Returns how many went.
    pub fn retain_templates(&mut self, slot: u32, keep: impl Fn(&TemplateKey) -> bool) -> usize {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return 0;
        };
        let before = s.templates.len();
        s.templates.retain(|k| keep(k));
        let removed = before - s.templates.len();
        if s.templates.is_empty() {
            self.remove(slot, |_| {});
        }
        removed
    }

    fn unlink(&mut self, slot: u32) {
        let Some(&Slot { prev, next, .. }) = self.slots.get(slot as usize) else {
            return;
        };
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, slot: u32) {
        let head = self.head;
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.prev = NIL;
            s.next = head;
        }
        match self.slots.get_mut(head as usize) {
            Some(h) => h.prev = slot,
            None => self.tail = slot,
        }
        self.head = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ex(n: u8) -> ExporterKey {
        Ipv4Addr::new(192, 0, 2, n).into()
    }

    fn order(t: &ExporterTable) -> Vec<ExporterKey> {
        let mut out = Vec::new();
        let mut i = t.head;
        while let Some(s) = t.slots.get(i as usize) {
            out.push(s.exporter);
            i = s.next;
        }
        out
    }

    #[test]
    fn touch_moves_to_front_and_eviction_takes_the_tail() {
        let mut t = ExporterTable::default();
        let a = t.insert(ex(1));
        let b = t.insert(ex(2));
        let c = t.insert(ex(3));
        assert_eq!(order(&t), [ex(3), ex(2), ex(1)]);
        t.touch(a);
        assert_eq!(order(&t), [ex(1), ex(3), ex(2)]);
        t.touch(c);
        t.touch(c);
        assert_eq!(order(&t), [ex(3), ex(1), ex(2)]);
        assert_eq!(t.least_recent(), Some(b));
        assert_eq!(t.remove(b, |_| {}), Some(ex(2)));
        assert_eq!(order(&t), [ex(3), ex(1)]);
        // The freed slot is reused.
        assert_eq!(t.insert(ex(4)), b);
        assert_eq!(order(&t), [ex(4), ex(3), ex(1)]);
        assert_eq!(t.remove(a, |_| {}), Some(ex(1)));
        assert_eq!(t.remove(c, |_| {}), Some(ex(3)));
        assert_eq!(t.remove(b, |_| {}), Some(ex(4)));
        assert_eq!(t.remove(b, |_| {}), None);
        assert_eq!((t.len(), t.least_recent()), (0, None));
    }
}
