//! A least-recently-used map with O(1) lookup, touch, insert and eviction.
//!
//! Entries live in a slab (`Vec` of slots, freed slots reused) threaded on a
//! doubly linked recency list by slot index; a hash map from key to slot finds
//! them. `get` moves an entry to the front, eviction takes the back: no scan,
//! whatever the size. This is plain sequential code: the caller's lock (a
//! shard of the cache) is what makes it safe to share.

use std::collections::HashMap;

use super::key::{CacheKey, PrehashedKey};

const NIL: usize = usize::MAX;

struct Slot<V> {
    key: CacheKey,
    value: V,
    /// Towards the most recently used end.
    prev: usize,
    /// Towards the least recently used end.
    next: usize,
}

/// See the module docs.
pub(crate) struct Lru<V> {
    index: HashMap<CacheKey, usize, PrehashedKey>,
    slots: Vec<Option<Slot<V>>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next eviction.
    tail: usize,
}

impl<V> Lru<V> {
    pub(crate) fn new() -> Self {
        Lru {
            index: HashMap::with_hasher(PrehashedKey),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The value for `key`, marked most recently used.
    pub(crate) fn get(&mut self, key: &CacheKey) -> Option<&V> {
        let i = *self.index.get(key)?;
        self.unlink(i);
        self.push_front(i);
        Some(&self.slot(i).value)
    }

    /// The value for `key`, recency untouched.
    #[cfg(test)]
    pub(crate) fn peek(&self, key: &CacheKey) -> Option<&V> {
        self.index.get(key).map(|&i| &self.slot(i).value)
    }

    /// Inserts or replaces, marking `key` most recently used; returns the
    /// value it replaced.
    pub(crate) fn insert(&mut self, key: CacheKey, value: V) -> Option<V> {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return Some(std::mem::replace(&mut self.slot_mut(i).value, value));
        }
        let slot = Slot {
            key: key.clone(),
            value,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        self.push_front(i);
        None
    }

    pub(crate) fn remove(&mut self, key: &CacheKey) -> Option<V> {
        let i = self.index.remove(key)?;
        Some(self.release(i).1)
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_lru(&mut self) -> Option<(CacheKey, V)> {
        if self.tail == NIL {
            return None;
        }
        let i = self.tail;
        let (key, value) = self.release(i);
        self.index.remove(&key);
        Some((key, value))
    }

    /// Removes every entry for which `doomed` holds, returning them. O(n).
    pub(crate) fn remove_where(&mut self, mut doomed: impl FnMut(&CacheKey, &V) -> bool) -> Vec<(CacheKey, V)> {
        let hits: Vec<usize> = self
            .index
            .iter()
            .filter(|(k, &i)| doomed(k, &self.slot(i).value))
            .map(|(_, &i)| i)
            .collect();
        hits.into_iter()
            .map(|i| {
                let (key, value) = self.release(i);
                self.index.remove(&key);
                (key, value)
            })
            .collect()
    }

    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
    }

    /// Keys from most to least recently used (for tests and models).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn keys_by_recency(&self) -> Vec<CacheKey> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = self.head;
        while i != NIL {
            out.push(self.slot(i).key.clone());
            i = self.slot(i).next;
        }
        out
    }

    fn slot(&self, i: usize) -> &Slot<V> {
        self.slots[i].as_ref().expect("linked slot is occupied")
    }

    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        self.slots[i].as_mut().expect("linked slot is occupied")
    }

    /// Unlinks slot `i` and puts it on the free list (the index entry is the
    /// caller's to remove).
    fn release(&mut self, i: usize) -> (CacheKey, V) {
        self.unlink(i);
        let slot = self.slots[i].take().expect("released slot is occupied");
        self.free.push(i);
        (slot.key, slot.value)
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = {
            let s = self.slot(i);
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slot_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slot_mut(n).prev = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        {
            let s = self.slot_mut(i);
            s.prev = NIL;
            s.next = old_head;
        }
        match old_head {
            NIL => self.tail = i,
            h => self.slot_mut(h).prev = i,
        }
        self.head = i;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::core::key::Operation;

    fn k(n: u32) -> CacheKey {
        CacheKey::new(Operation::Api, [("n", Some(n.to_string()))])
    }

    fn order(lru: &Lru<u32>) -> Vec<String> {
        lru.keys_by_recency()
            .iter()
            .map(|k| k.as_str().trim_start_matches("api:n=").to_string())
            .collect()
    }

    #[test]
    fn get_moves_to_front_and_pop_takes_the_back() {
        let mut lru = Lru::new();
        for n in 1..=3 {
            assert_eq!(lru.insert(k(n), n), None);
        }
        assert_eq!(order(&lru), ["3", "2", "1"]);
        assert_eq!(lru.get(&k(1)), Some(&1));
        assert_eq!(order(&lru), ["1", "3", "2"]);
        assert_eq!(lru.peek(&k(2)), Some(&2));
        assert_eq!(order(&lru), ["1", "3", "2"]);
        assert_eq!(lru.pop_lru().map(|(_, v)| v), Some(2));
        assert_eq!(lru.insert(k(3), 33), Some(3));
        assert_eq!(order(&lru), ["3", "1"]);
        assert_eq!(lru.remove(&k(1)), Some(1));
        assert_eq!(lru.remove(&k(1)), None);
        assert_eq!(lru.pop_lru().map(|(_, v)| v), Some(33));
        assert_eq!(lru.pop_lru().map(|(_, v)| v), None);
        assert_eq!(lru.len(), 0);
    }

    #[test]
    fn slots_are_reused_and_remove_where_keeps_the_list_whole() {
        let mut lru = Lru::new();
        for n in 0..10 {
            lru.insert(k(n), n);
        }
        let removed = lru.remove_where(|_, v| v % 2 == 0);
        assert_eq!(removed.len(), 5);
        assert_eq!(order(&lru), ["9", "7", "5", "3", "1"]);
        for n in 10..15 {
            lru.insert(k(n), n);
        }
        assert_eq!(lru.slots.len(), 10, "freed slots are reused");
        assert_eq!(lru.len(), 10);
        lru.clear();
        assert_eq!(order(&lru), Vec::<String>::new());
        assert_eq!(lru.pop_lru().map(|(_, v)| v), None);
    }
}
