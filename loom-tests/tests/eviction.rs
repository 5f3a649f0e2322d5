//! Lock path: S3-FIFO eviction (inside an insert, under the shard lock)
//! racing a lookup, an invalidation and a stats snapshot. Each model states
//! which key the policy must evict in every interleaving, not just that the
//! bound holds.
#![cfg(loom)]

use std::sync::Arc as StdArc;

use ghcache::core::{Cache, CacheConfig, ETag, Lookup, Origin};
use loom::thread;
use loom_tests::{cache, entry, key, FrozenClock};

/// One shard holding `a` then `b`, both new (in small, unread), full.
fn full_of_two() -> Cache {
    let c = cache(1, 2);
    c.insert(&key(1), entry(&c, &key(1), "a"));
    c.insert(&key(2), entry(&c, &key(2), "b"));
    c
}

fn held(c: &Cache, n: u32) -> bool {
    matches!(c.lookup(&key(n)), Lookup::Fresh(_))
}

/// A lookup of the oldest new key racing an insert that must evict: a read
/// that lands first saves it (it moves to main) and the other new key goes;
/// a read that comes after finds it evicted.
#[test]
fn eviction_racing_lookup_evicts_exactly_the_unread_key() {
    loom_tests::model(|| {
        let c = full_of_two();
        let writer = {
            let c = c.clone();
            thread::spawn(move || assert!(c.insert(&key(3), entry(&c, &key(3), "c"))))
        };
        let read_first = matches!(c.lookup(&key(1)), Lookup::Fresh(e) if e.body == "a");
        writer.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.entries, s.evictions, s.inserts), (2, 1, 3));
        assert_eq!(
            (held(&c, 1), held(&c, 2), held(&c, 3)),
            (read_first, !read_first, true),
            "the read key survives exactly when the read came first"
        );
    });
}

/// An invalidation racing an evicting insert: every key is held, evicted
/// or invalidated, exactly once; the insert evicts only when the
/// invalidation has not made room first.
#[test]
fn eviction_racing_invalidate_removes_each_key_once() {
    loom_tests::model(|| {
        let c = full_of_two();
        let writer = {
            let c = c.clone();
            thread::spawn(move || c.insert(&key(3), entry(&c, &key(3), "c")))
        };
        let removed = c.invalidate(&key(1));
        writer.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.entries + s.evictions + s.invalidations, 3);
        assert_eq!(u64::from(removed) + s.evictions, 1, "room made by one or the other");
        assert!(!held(&c, 1) && held(&c, 2) && held(&c, 3));
    });
}

/// Snapshots racing an insert that evicts two entries by bytes and a
/// lookup: every snapshot is within both bounds and its counts add up
/// (entries = inserts - evictions), never caught between two evictions.
#[test]
fn stats_racing_eviction_by_bytes_sees_whole_steps() {
    loom_tests::model(|| {
        let weight = |c: &Cache, n: u32, body: &'static str| entry(c, &key(n), body).weight(&key(n));
        let probe = cache(1, 8);
        let light = weight(&probe, 1, "a");
        let config = CacheConfig {
            shards: 1,
            max_entries: 8,
            max_bytes: 2 * light,
            ..CacheConfig::default()
        };
        let c = Cache::new(config, StdArc::new(FrozenClock));
        c.insert(&key(1), entry(&c, &key(1), "a"));
        c.insert(&key(2), entry(&c, &key(2), "b"));
        // key(3)'s body makes it weigh as much as the two others together.
        let heavy = c.new_entry(&key(3), "c".repeat(1 + light), ETag::new("\"e\""), Origin::Upstream);
        assert_eq!(heavy.weight(&key(3)), 2 * light);
        let writer = {
            let c = c.clone();
            thread::spawn(move || {
                assert!(c.insert(&key(3), heavy));
                c.lookup(&key(3));
            })
        };
        let s = c.stats();
        s.check_consistency().unwrap();
        assert!(s.bytes <= s.max_bytes && s.entries <= s.max_entries);
        assert_eq!(s.entries, s.inserts - s.evictions);
        assert!(s.evictions == 0 || s.evictions == 2, "both went in one step: {s:?}");
        writer.join().unwrap();
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.bytes as usize), (1, 2, 2 * light));
        assert!(held(&c, 3));
    });
}
