//! The hottest cache keys, approximately: the *space-saving* algorithm
//! (Metwally, Agrawal, El Abbadi 2005) over the keys that reads ask for.
//!
//! The core keeps no per-entry counts (its lock paths stay minimal), so
//! the daemon counts on the read path: `capacity` counters; a key already
//! counted adds one; a new key takes the smallest counter's place and
//! inherits its count plus one. Every key read more than `reads /
//! capacity` times is in the table, and a count overstates the truth by at
//! most the `error` it inherited, which is reported with it.
//!
//! # Invariants
//! - **Bounded**: `capacity` counters, whatever the key space.
//! - **The read path never waits on this**: [`note`](HotKeys::note)
//!   *tries* the lock and drops the sample when another reader holds it;
//!   dropped samples are counted, so the figures say how approximate they
//!   are. The lock is a leaf: nothing is awaited or called under it.

use serde::Serialize;

use crate::core::CacheKey;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hot {
    /// The key's canonical text.
    pub key: String,
    /// Reads counted (an overestimate by at most `error`).
    pub count: u64,
    /// What the count may overstate.
    pub error: u64,
}

#[derive(Debug)]
struct Counter {
    key: CacheKey,
    count: u64,
    error: u64,
}

/// The table (module docs).
#[derive(Debug)]
pub struct HotKeys {
    capacity: usize,
    counters: Mutex<Vec<Counter>>,
    skipped: AtomicU64,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys::new(32)
    }
}

impl HotKeys {
    /// A table of `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> HotKeys {
        HotKeys {
            capacity: capacity.max(1),
            counters: Mutex::new(Vec::with_capacity(capacity.max(1))),
            skipped: AtomicU64::new(0),
        }
    }

    /// Counts one read of `key`, unless another reader is counting now.
    pub fn note(&self, key: &CacheKey) {
        let Ok(mut counters) = self.counters.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        Self::add(&mut counters, self.capacity, key);
    }

    /// Space-saving's step, on the guarded table.
    fn add(counters: &mut Vec<Counter>, capacity: usize, key: &CacheKey) {
        if let Some(c) = counters.iter_mut().find(|c| c.key == *key) {
            c.count += 1;
        } else if counters.len() < capacity {
            counters.push(Counter {
                key: key.clone(),
                count: 1,
                error: 0,
            });
        } else if let Some(min) = counters.iter_mut().min_by_key(|c| c.count) {
            *min = Counter {
                key: key.clone(),
                count: min.count + 1,
                error: min.count,
            };
        }
    }

    /// The `n` hottest keys, hottest first, and how many reads were not
    /// counted because the table was busy.
    pub fn top(&self, n: usize) -> (Vec<Hot>, u64) {
        let mut rows: Vec<Hot> = lock(&self.counters)
            .iter()
            .map(|c| Hot {
                key: c.key.as_str().to_string(),
                count: c.count,
                error: c.error,
            })
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        rows.truncate(n);
        (rows, self.skipped.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Operation;

    fn key(repo: &str) -> CacheKey {
        CacheKey::new(Operation::Repo, [("repo", Some(repo))])
    }

    #[test]
    fn frequent_keys_stay_and_counts_bound_the_truth() {
        let hot = HotKeys::new(4);
        // "a" 50 times, "b" 20 times, and 30 keys read once each between.
        for i in 0..50 {
            hot.note(&key("o/a"));
            if i < 20 {
                hot.note(&key("o/b"));
            }
            if i < 30 {
                hot.note(&key(&format!("o/once{i}")));
            }
        }
        let (top, skipped) = hot.top(2);
        assert_eq!(skipped, 0);
        assert_eq!(top[0].key, "repo:repo=o/a");
        assert_eq!(top[1].key, "repo:repo=o/b");
        for (row, truth) in top.iter().zip([50, 20]) {
            assert!(row.count >= truth && row.count - row.error <= truth, "{row:?}");
        }
        assert_eq!(hot.top(10).0.len(), 4, "bounded by capacity");
    }

    #[test]
    fn a_busy_table_skips_rather_than_waits() {
        let hot = HotKeys::new(4);
        let held = hot.counters.lock().unwrap();
        hot.note(&key("o/a"));
        drop(held);
        assert_eq!(hot.top(4), (vec![], 1));
    }
}
