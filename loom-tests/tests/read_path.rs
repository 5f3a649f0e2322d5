//! Lock path: lookups under the shard's **read** lock (`Cache::lookup` and
//! `Cache::begin` settle a fresh hit or a miss there) racing each other,
//! inserts that evict, an expiry under the write lock, and stats.
//!
//! What the read path adds to the write path's models: readers run at the
//! same time, so the hit and miss counters are atomics (one stripe per
//! thread; under loom every thread shares stripe 0, the case where a lost
//! increment could happen) and an entry's read counter is set by a relaxed
//! atomic store. Stats sums the stripes under every shard's write lock.
//!
//! The known-bad variants at the end are the same protocol in miniature with
//! one thing changed, which loom must reject (`ci/loom` lists them).
#![cfg(loom)]

use std::sync::Arc as StdArc;
use std::time::Duration;

use ghcache::core::{Cache, CacheConfig, Clock, Entry, Lookup, Origin};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::RwLock;
use loom::thread;
use loom_tests::{cache, entry, key, FrozenClock};

/// Two hits on one key racing each other and a snapshot: the snapshot is
/// consistent and sees 0, 1 or 2 whole hits; afterwards both are counted.
#[test]
fn hits_racing_each_other_and_stats_are_all_counted() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        c.insert(&key(1), entry(&c, &key(1), "a"));
        let reader = {
            let c = c.clone();
            thread::spawn(move || assert!(matches!(c.lookup(&key(1)), Lookup::Fresh(e) if e.body == "a")))
        };
        let other = {
            let c = c.clone();
            thread::spawn(move || assert!(matches!(c.lookup(&key(1)), Lookup::Fresh(_))))
        };
        let s = c.stats();
        s.check_consistency().unwrap();
        assert!(s.hits <= 2 && s.misses == 0, "{s:?}");
        reader.join().unwrap();
        other.join().unwrap();
        let s = c.stats();
        assert_eq!((s.lookups, s.hits, s.misses), (2, 2, 0), "a hit was lost");
    });
}

/// A miss under the read lock racing the insert of the same key and a
/// snapshot: the lookup answers the key's state before or after the insert,
/// and counts exactly one lookup, a hit or a miss to match.
#[test]
fn miss_racing_insert_and_stats_counts_one_lookup() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let writer = {
            let c = c.clone();
            thread::spawn(move || assert!(c.insert(&key(1), entry(&c, &key(1), "a"))))
        };
        let reader = {
            let c = c.clone();
            thread::spawn(move || c.lookup(&key(1)))
        };
        c.stats().check_consistency().unwrap();
        writer.join().unwrap();
        let found = reader.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        let hit = matches!(found, Lookup::Fresh(_));
        assert!(hit || found == Lookup::Miss);
        assert_eq!((s.lookups, s.hits, s.misses), (1, u64::from(hit), u64::from(!hit)));
    });
}

/// An entry expired as soon as it is stored: TTL zero, and the cache below
/// gives no stale grace.
fn expired() -> Entry {
    Entry::new("old", None, FrozenClock.now(), Duration::ZERO, Origin::Upstream)
}

/// A lookup that finds an expired entry under the read lock racing an
/// insert of a fresh one: the expired entry is removed (one expiration) only
/// when the write lock still finds it; the fresh entry is never removed.
#[test]
fn expired_lookup_racing_a_fresh_insert_keeps_the_fresh_entry() {
    loom_tests::model(|| {
        let config = CacheConfig {
            shards: 1,
            max_entries: 4,
            stale_grace: Duration::ZERO,
            ..CacheConfig::default()
        };
        let c = Cache::new(config, StdArc::new(FrozenClock));
        c.insert(&key(1), expired());
        let writer = {
            let c = c.clone();
            thread::spawn(move || assert!(c.insert(&key(1), entry(&c, &key(1), "new"))))
        };
        let found = c.lookup(&key(1));
        writer.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        match found {
            Lookup::Fresh(e) => {
                assert_eq!(e.body, "new");
                assert_eq!((s.hits, s.expirations), (1, 0));
            }
            Lookup::Miss => assert_eq!((s.misses, s.expirations), (1, 1)),
            Lookup::Stale(_) => panic!("an expired entry is never served"),
        }
        assert!(
            matches!(c.lookup(&key(1)), Lookup::Fresh(e) if e.body == "new"),
            "the fresh entry was removed"
        );
    });
}

/// Hits on the oldest key racing an insert that must evict and a snapshot:
/// a hit that lands before the eviction saves the key (its read counter is
/// set under the read lock), one after finds it gone; every snapshot is
/// consistent and within the bound.
#[test]
fn hits_racing_eviction_and_stats() {
    loom_tests::model(|| {
        let c = cache(1, 2);
        c.insert(&key(1), entry(&c, &key(1), "a"));
        c.insert(&key(2), entry(&c, &key(2), "b"));
        let writer = {
            let c = c.clone();
            thread::spawn(move || assert!(c.insert(&key(3), entry(&c, &key(3), "c"))))
        };
        let reader = {
            let c = c.clone();
            thread::spawn(move || matches!(c.lookup(&key(1)), Lookup::Fresh(_)))
        };
        let s = c.stats();
        s.check_consistency().unwrap();
        assert!(s.entries <= 2);
        writer.join().unwrap();
        let read_first = reader.join().unwrap();
        let s = c.stats();
        assert_eq!(
            (s.entries, s.evictions, s.lookups, s.hits),
            (2, 1, 1, u64::from(read_first))
        );
        let held = |n| matches!(c.lookup(&key(n)), Lookup::Fresh(_));
        assert_eq!((held(1), held(2), held(3)), (read_first, !read_first, true));
    });
}

/// A hit counted by load-then-store on a stripe two readers share (a read
/// lock does not exclude other readers): two hits can become one. Correct
/// design: `ReadCounters::hit` uses `fetch_add`.
#[test]
#[should_panic(expected = "lost hit")]
fn striped_hit_counted_by_load_and_store_loses_one() {
    loom::model(|| {
        let shard = StdArc::new((RwLock::new(()), AtomicU64::new(0)));
        let hit = {
            let shard = shard.clone();
            move || {
                let _read = shard.0.read().unwrap();
                let seen = shard.1.load(Ordering::Relaxed);
                shard.1.store(seen + 1, Ordering::Relaxed);
            }
        };
        let other = thread::spawn(hit.clone());
        hit();
        other.join().unwrap();
        let _write = shard.0.write().unwrap();
        assert_eq!(shard.1.load(Ordering::Relaxed), 2, "lost hit");
    });
}

/// Expiry decided under the read lock and carried out under the write lock
/// without looking again: an insert of a fresh entry in between is removed.
/// Correct design: `Cache::lookup` redoes the whole lookup under the write
/// lock (`Shard::lookup`), which sees the fresh entry.
#[test]
#[should_panic(expected = "fresh entry removed")]
fn expiry_decided_under_the_read_lock_removes_a_fresh_insert() {
    loom::model(|| {
        // The key's entry: Some(fresh?).
        let shard = StdArc::new(RwLock::new(Some(false)));
        let writer = {
            let shard = shard.clone();
            thread::spawn(move || *shard.write().unwrap() = Some(true))
        };
        let expired = *shard.read().unwrap() == Some(false);
        if expired {
            *shard.write().unwrap() = None;
        }
        writer.join().unwrap();
        assert_eq!(*shard.read().unwrap(), Some(true), "fresh entry removed");
    });
}
