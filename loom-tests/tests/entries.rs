//! Lock path: lookup / insert / invalidate / clear (one shard lock each),
//! alone and racing each other.
#![cfg(loom)]

use ghcache::core::Lookup;
use loom::thread;
use loom_tests::{cache, entry, key};

/// A lookup racing an insert sees nothing or the whole entry.
#[test]
fn lookup_racing_insert_sees_nothing_or_everything() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let writer = {
            let c = c.clone();
            thread::spawn(move || assert!(c.insert(&key(1), entry(&c, &key(1), "v1"))))
        };
        match c.lookup(&key(1)) {
            Lookup::Miss => {}
            Lookup::Fresh(e) => assert_eq!(e.body, "v1"),
            Lookup::Stale(e) => panic!("a just-inserted entry is fresh, got stale {e:?}"),
        }
        writer.join().unwrap();
        assert!(matches!(c.lookup(&key(1)), Lookup::Fresh(e) if e.body == "v1"));
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.lookups, s.entries, s.inserts), (2, 1, 1));
    });
}

/// Invalidate racing insert: the entry survives exactly when the
/// invalidation came first (and so found nothing).
#[test]
fn invalidate_racing_insert_leaves_a_consistent_answer() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let writer = {
            let c = c.clone();
            thread::spawn(move || c.insert(&key(1), entry(&c, &key(1), "v1")))
        };
        let removed = c.invalidate(&key(1));
        writer.join().unwrap();
        let present = matches!(c.lookup(&key(1)), Lookup::Fresh(_));
        assert_eq!(present, !removed);
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.invalidations, u64::from(removed));
    });
}

/// Clear and invalidate-prefix walk the shards one lock at a time while
/// inserts go on in both shards: bounds, bytes and counts stay exact.
#[test]
fn clear_and_prefix_invalidation_racing_inserts() {
    loom_tests::model(|| {
        let c = cache(2, 4);
        let writer = {
            let c = c.clone();
            thread::spawn(move || {
                c.insert(&key(1), entry(&c, &key(1), "a"));
                c.insert(&key(2), entry(&c, &key(2), "b"));
            })
        };
        let cleared = c.clear() + c.invalidate_prefix("repo:");
        writer.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(
            s.entries + cleared as u64,
            2,
            "every entry is either held or was removed once"
        );
        assert_eq!(s.invalidations, cleared as u64);
    });
}

/// Two inserts into a one-entry cache: exactly one survives, one eviction.
#[test]
fn eviction_racing_inserts_keeps_the_bound() {
    loom_tests::model(|| {
        let c = cache(1, 1);
        let writer = {
            let c = c.clone();
            thread::spawn(move || c.insert(&key(1), entry(&c, &key(1), "a")))
        };
        c.insert(&key(2), entry(&c, &key(2), "b"));
        writer.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.entries, s.evictions), (1, 1));
    });
}

/// A lookup racing the clock passing an entry's TTL and grace: it sees the
/// entry fresh, stale or gone (expired and dropped, counted once), never
/// anything else, and the counters add up.
#[test]
fn lookup_racing_expiry() {
    use ghcache::core::{Cache, CacheConfig, ManualClock};
    use std::time::Duration;
    loom_tests::model(|| {
        let clock = std::sync::Arc::new(ManualClock::new());
        let config = CacheConfig {
            shards: 1,
            stale_grace: Duration::from_secs(10),
            ..CacheConfig::default()
        };
        let c = Cache::new(config, clock.clone());
        c.insert(&key(1), entry(&c, &key(1), "v"));
        let ticker = {
            let clock = clock.clone();
            thread::spawn(move || {
                clock.advance(ghcache::core::Operation::Repo.default_ttl());
                clock.advance(Duration::from_secs(10));
            })
        };
        let first = c.lookup(&key(1));
        ticker.join().unwrap();
        assert_eq!(c.lookup(&key(1)), Lookup::Miss, "past TTL + grace the entry is gone");
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.expirations, 1, "expired exactly once: {first:?}");
        assert_eq!(s.entries, 0);
    });
}
