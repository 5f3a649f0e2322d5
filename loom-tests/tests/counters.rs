//! Lock path: counters (bumped under the key's shard lock), racing each
//! other and clear.
#![cfg(loom)]

use ghcache::core::{Api, Event};
use loom::thread;
use loom_tests::{cache, entry, key};

/// Increments racing each other and a clear are all kept: clearing entries
/// never touches counters (a clear that replaced them would break the next
/// increment: `known_bad.rs`).
#[test]
fn no_lost_increments_across_clear() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        c.insert(&key(1), entry(&c, &key(1), "v"));
        let other = {
            let c = c.clone();
            thread::spawn(move || {
                c.record(&key(1), Event::ApiCall(Api::Rest));
                c.record(&key(1), Event::Revalidated);
            })
        };
        c.record(&key(1), Event::ApiCall(Api::Rest));
        c.clear();
        c.record(&key(2), Event::Revalidated);
        other.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.api_calls, s.revalidations, s.entries), (2, 2, 0));
    });
}

/// Lookup outcome counters racing on one key keep
/// `hits + stale + misses == lookups` and lose nothing.
#[test]
fn concurrent_lookups_count_exactly() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let other = {
            let c = c.clone();
            thread::spawn(move || {
                c.lookup(&key(1));
                c.lookup(&key(1));
            })
        };
        c.insert(&key(1), entry(&c, &key(1), "v"));
        other.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.lookups, 2);
    });
}
