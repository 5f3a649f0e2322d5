//! Sequential semantics of the core: TTL, eviction, invalidation, counters,
//! single flight and the P2P lifecycle, on one thread (plus a few real
//! threads). Interleavings are loom's job (`loom-tests/`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::sync::StdArc;

fn key(n: u32) -> CacheKey {
    CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{n}")))])
}

fn setup(config: CacheConfig) -> (Cache, StdArc<ManualClock>) {
    let clock = StdArc::new(ManualClock::new());
    (Cache::new(config, clock.clone()), clock)
}

fn one_shard(max_entries: usize, max_bytes: usize) -> CacheConfig {
    CacheConfig {
        max_entries,
        max_bytes,
        shards: 1,
        ..CacheConfig::default()
    }
}

fn body(cache: &Cache, k: &CacheKey, text: &str) -> Entry {
    cache.new_entry(k, text.to_owned(), ETag::new("\"v1\""), Origin::Upstream)
}

fn checked(cache: &Cache) -> StatsSnapshot {
    let stats = cache.stats();
    stats.check_consistency().unwrap();
    stats
}

#[test]
fn lookup_goes_fresh_then_stale_then_expires() {
    let (cache, clock) = setup(CacheConfig {
        stale_grace: Duration::from_secs(100),
        ..CacheConfig::default()
    });
    let k = key(1);
    assert_eq!(cache.lookup(&k), Lookup::Miss);
    assert!(cache.insert(&k, body(&cache, &k, "a")));
    assert!(matches!(cache.lookup(&k), Lookup::Fresh(e) if e.body == "a"));
    clock.advance(Operation::Repo.default_ttl());
    match cache.lookup(&k) {
        Lookup::Stale(e) => assert_eq!(e.etag.as_ref().unwrap().as_str(), "\"v1\""),
        other => panic!("expected stale, got {other:?}"),
    }
    clock.advance(Duration::from_secs(100));
    assert_eq!(cache.lookup(&k), Lookup::Miss);
    let s = checked(&cache);
    assert_eq!(
        (s.lookups, s.hits, s.stale_hits, s.misses, s.expirations, s.entries),
        (4, 1, 1, 2, 1, 0)
    );
}

#[test]
fn ttl_overrides_apply_per_operation() {
    let (cache, clock) = setup(CacheConfig {
        ttl: TtlPolicy::default().with(Operation::Repo, Duration::from_secs(1)),
        ..CacheConfig::default()
    });
    let k = key(1);
    cache.insert(&k, body(&cache, &k, "a"));
    clock.advance(Duration::from_millis(999));
    assert!(matches!(cache.lookup(&k), Lookup::Fresh(_)));
    clock.advance(Duration::from_millis(1));
    assert!(matches!(cache.lookup(&k), Lookup::Stale(_)));
}

/// The policy's view of `cache`: (key, queue, read counter), small then
/// main, each from newest to oldest.
fn queues(cache: &Cache) -> Vec<(CacheKey, Queue, u8)> {
    cache.policy_state()
}

#[test]
fn eviction_promotes_what_was_read_and_evicts_the_oldest_unread_new_key() {
    let (cache, _) = setup(one_shard(3, 1 << 20));
    for n in 0..3 {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
    }
    assert!(matches!(cache.lookup(&key(0)), Lookup::Fresh(_)));
    assert_eq!(queues(&cache)[2], (key(0), Queue::Small, 1), "a read counts");
    cache.insert(&key(3), body(&cache, &key(3), "x"));
    assert_eq!(cache.lookup(&key(1)), Lookup::Miss, "oldest unread new key evicted");
    assert_eq!(
        queues(&cache),
        [
            (key(3), Queue::Small, 0),
            (key(2), Queue::Small, 0),
            (key(0), Queue::Main, 0)
        ],
        "the read one moved to main, its counter cleared"
    );
    let s = checked(&cache);
    assert_eq!((s.entries, s.evictions), (3, 1));
    // key(1) is in the ghost: back in, it goes straight to main.
    cache.insert(&key(1), body(&cache, &key(1), "x"));
    assert_eq!(
        queues(&cache),
        [
            (key(3), Queue::Small, 0),
            (key(1), Queue::Main, 0),
            (key(0), Queue::Main, 0)
        ]
    );
    assert_eq!(checked(&cache).evictions, 2);
}

#[test]
fn main_gives_read_entries_a_second_chance_and_reads_at_the_top_write_nothing() {
    let (cache, _) = setup(one_shard(2, 1 << 20));
    // 0 and 1 are evicted unread from small (into the ghost), 2 too when
    // they come back: through the ghost, both go straight to main.
    for n in [0, 1, 2, 0, 1] {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
    }
    assert_eq!(queues(&cache), [(key(1), Queue::Main, 0), (key(0), Queue::Main, 0)]);
    for _ in 0..9 {
        cache.lookup(&key(0));
    }
    assert_eq!(queues(&cache)[1], (key(0), Queue::Main, 7), "the counter stops at 7");
    // Small holds only the newest entry, so main gives: key(0) was read and
    // goes round once more (7 -> 6); key(1) was not and is evicted.
    cache.insert(&key(3), body(&cache, &key(3), "x"));
    assert_eq!(queues(&cache), [(key(3), Queue::Small, 0), (key(0), Queue::Main, 6)]);
    assert_eq!(cache.lookup(&key(1)), Lookup::Miss);
    assert_eq!(checked(&cache).evictions, 4);
}

#[test]
fn one_off_keys_pass_through_small_without_pushing_out_the_hot_set() {
    let (cache, _) = setup(one_shard(20, 1 << 20));
    for n in 0..10 {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
        cache.lookup(&key(n));
    }
    for n in 100..1000 {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
    }
    for n in 0..10 {
        assert!(
            matches!(cache.lookup(&key(n)), Lookup::Fresh(_)),
            "hot key {n} survived the scan"
        );
    }
}

#[test]
fn eviction_keeps_bytes_within_the_byte_bound() {
    let k0 = key(0);
    let w = body_weight(&k0, 10);
    let (cache, _) = setup(one_shard(100, 3 * w));
    for n in 0..3 {
        cache.insert(&key(n), body(&cache, &key(n), &"x".repeat(10)));
    }
    assert_eq!(checked(&cache).bytes as usize, 3 * w);
    // A double-weight entry pushes out the two coldest.
    cache.insert(&key(5), body(&cache, &key(5), &"x".repeat(10 + w)));
    let s = checked(&cache);
    let held: Vec<_> = queues(&cache).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(held, [key(5), key(2)], "the oldest two went");
    assert_eq!((s.evictions, s.bytes as usize), (2, 3 * w));
    // Heavier than the whole bound: refused, and the old answer dropped.
    assert!(!cache.insert(&key(2), body(&cache, &key(2), &"x".repeat(4 * w))));
    assert_eq!(cache.lookup(&key(2)), Lookup::Miss);
    assert_eq!(checked(&cache).rejected_inserts, 1);
}

fn body_weight(k: &CacheKey, len: usize) -> usize {
    k.as_str().len() + len + "\"v1\"".len()
}

#[test]
fn replacing_an_entry_adjusts_bytes() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    cache.insert(&k, body(&cache, &k, "aaaa"));
    cache.insert(&k, body(&cache, &k, "b"));
    let s = checked(&cache);
    assert_eq!((s.entries, s.bytes as usize, s.inserts), (1, body_weight(&k, 1), 2));
}

#[test]
fn sharded_bounds_add_up_to_the_configured_ones() {
    let (cache, _) = setup(CacheConfig {
        max_entries: 10,
        max_bytes: 1001,
        shards: 4,
        ..CacheConfig::default()
    });
    let s = cache.stats();
    assert_eq!((s.max_entries, s.max_bytes), (10, 1001));
    for n in 0..100 {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
        assert!(checked(&cache).entries <= 10);
    }
    let (tiny, _) = setup(CacheConfig {
        max_entries: 2,
        shards: 16,
        ..CacheConfig::default()
    });
    assert_eq!(tiny.config().shards, 2, "never more shards than entries");
}

#[test]
fn invalidate_prefix_and_clear_remove_entries_but_keep_counters() {
    let (cache, _) = setup(CacheConfig::default());
    let runners = |r: &str| CacheKey::new(Operation::Runners, [("repo", Some(r))]);
    for r in ["a/b", "a/c", "d/e"] {
        cache.insert(&runners(r), body(&cache, &runners(r), "x"));
    }
    cache.insert(&key(1), body(&cache, &key(1), "x"));
    cache.lookup(&key(1));
    cache.record(&key(1), Event::ApiCall(Api::Rest));
    assert_eq!(cache.invalidate_prefix("runners:repo=a/"), 2);
    assert!(matches!(cache.lookup(&runners("d/e")), Lookup::Fresh(_)));
    assert!(cache.invalidate(&runners("d/e")));
    assert!(!cache.invalidate(&runners("d/e")));
    let before = checked(&cache);
    assert_eq!(cache.clear(), 1);
    let after = checked(&cache);
    assert_eq!((after.entries, after.bytes), (0, 0));
    assert_eq!(
        (after.hits, after.api_calls, after.lookups),
        (before.hits, before.api_calls, before.lookups)
    );
    assert_eq!(after.invalidations, 4);
    // Counting goes on after a clear: clear drops entries, never the counters.
    cache.lookup(&key(1));
    cache.record(&key(1), Event::ApiCall(Api::Rest));
    let again = checked(&cache);
    assert_eq!((again.misses, again.api_calls), (after.misses + 1, 2));
}

#[test]
fn counters_and_derived_figures() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    cache.record(&k, Event::ApiCall(Api::Rest));
    cache.record(&k, Event::ApiCall(Api::GraphQl));
    cache.record(&k, Event::Revalidated);
    cache.record(&k, Event::StaleServed);
    cache.record(&k, Event::FetchError);
    cache.insert(
        &k,
        Entry::new("p", None, cache.now(), Duration::from_secs(1), Origin::Peer),
    );
    cache.lookup(&k);
    let s = checked(&cache);
    assert_eq!((s.api_calls, s.api_calls_rest, s.api_calls_graphql), (2, 1, 1));
    assert_eq!(
        (s.revalidations, s.stale_served, s.fetch_errors, s.peer_hits, s.hits),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(s.api_calls_saved, 4);
}

/// A fresh hit is settled under the shard's read lock: it is served while
/// another thread holds that lock for reading, where a lookup that took the
/// write lock would wait (a survivor of cargo-mutants: deciding every hit
/// under the write lock gives the same answers, only slower and with
/// readers queued behind each other).
#[test]
fn a_fresh_hit_is_served_while_another_reader_holds_the_shard() {
    let (cache, _) = setup(one_shard(4, 1 << 20));
    let k = key(1);
    cache.insert(&k, body(&cache, &k, "a"));
    let reader = cache.read_shard(&k);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(matches!(cache.lookup(&k), Lookup::Fresh(_))).unwrap());
        // Generous: the answer needs no lock that is held; this only bounds
        // how long a broken build waits before failing.
        let served = rx.recv_timeout(Duration::from_secs(10));
        drop(reader);
        assert_eq!(served, Ok(true), "the hit waited for the read guard to go");
    });
}

/// More threads than counter stripes (so some share one) hit and miss under
/// the read lock at once, with snapshots in between: every snapshot is
/// consistent and the last counts every lookup exactly.
#[test]
fn hits_and_misses_from_many_threads_are_all_counted() {
    let (cache, _) = setup(CacheConfig::default());
    for n in 0..64 {
        cache.insert(&key(n), body(&cache, &key(n), "x"));
    }
    let threads = 2 * crate::sync::STRIPES + 1;
    let per_thread = 128 * 16u32;
    std::thread::scope(|s| {
        for t in 0..threads {
            let cache = &cache;
            s.spawn(move || {
                for i in 0..per_thread {
                    // Keys 0..64 are held; 64..128 are not.
                    let n = (i * 7 + t as u32) % 128;
                    assert_eq!(matches!(cache.lookup(&key(n)), Lookup::Fresh(_)), n < 64);
                }
            });
        }
        for _ in 0..20 {
            checked(&cache);
        }
    });
    let s = checked(&cache);
    let lookups = u64::from(per_thread) * threads as u64;
    assert_eq!((s.lookups, s.hits + s.misses, s.stale_hits), (lookups, lookups, 0));
    assert_eq!(
        s.hits,
        lookups / 2,
        "each thread asks every key of 0..128 equally often"
    );
}
fn fetched(cache: &Cache, k: &CacheKey, text: &str) -> Result<Fetched, FetchFailed> {
    Ok(Fetched {
        entry: body(cache, k, text),
        via: Via::Upstream(Api::Rest),
    })
}

#[test]
fn get_or_fetch_fetches_once_then_hits_then_revalidates() {
    let (cache, clock) = setup(CacheConfig::default());
    let k = key(1);
    let calls = AtomicUsize::new(0);
    let fetch = |stale: Option<&Entry>| {
        calls.fetch_add(1, Ordering::SeqCst);
        match stale {
            None => fetched(&cache, &k, "v1"),
            Some(old) => Ok(Fetched {
                entry: old.revalidated(cache.now(), cache.ttl(Operation::Repo)),
                via: Via::NotModified,
            }),
        }
    };
    assert_eq!(cache.get_or_fetch(&k, fetch).unwrap().mode, CacheMode::Miss);
    assert_eq!(cache.get_or_fetch(&k, fetch).unwrap().mode, CacheMode::Hit);
    clock.advance(Operation::Repo.default_ttl());
    let served = cache.get_or_fetch(&k, fetch).unwrap();
    assert_eq!(
        (served.mode, served.entry.body.as_ref()),
        (CacheMode::Revalidated, &b"v1"[..])
    );
    assert_eq!(cache.get_or_fetch(&k, fetch).unwrap().mode, CacheMode::Hit);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let s = checked(&cache);
    assert_eq!(
        (
            s.api_calls,
            s.revalidations,
            s.hits,
            s.misses,
            s.stale_hits,
            s.in_flight
        ),
        (1, 1, 2, 1, 1, 0)
    );
}

#[test]
fn a_failed_fetch_is_counted_and_not_stored() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let err = cache
        .get_or_fetch(&k, |_| Err(FetchFailed::msg("upstream 502")))
        .unwrap_err();
    assert_eq!(err.to_string(), "upstream 502");
    assert_eq!(cache.lookup(&k), Lookup::Miss);
    assert_eq!(checked(&cache).fetch_errors, 1);
}

#[test]
fn followers_share_the_leaders_result_and_error() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let Begin::Lead(leader) = cache.begin(&k) else {
        panic!("first caller leads")
    };
    let Begin::Follow(follower) = cache.begin(&k) else {
        panic!("second caller follows")
    };
    assert_eq!(checked(&cache).in_flight, 1);
    leader.complete(Err(FetchFailed::msg("boom"))).unwrap_err();
    assert!(matches!(follower.wait(), FlightOutcome::Done(Err(e)) if e.to_string() == "boom"));

    let Begin::Lead(leader) = cache.begin(&k) else {
        panic!("after a failure a new caller leads")
    };
    let Begin::Follow(follower) = cache.begin(&k) else {
        panic!()
    };
    let served = leader.complete(fetched(&cache, &k, "ok")).unwrap();
    assert_eq!(served.mode, CacheMode::Miss);
    assert!(matches!(follower.wait(), FlightOutcome::Done(Ok(e)) if e.body == "ok"));
    let s = checked(&cache);
    assert_eq!((s.coalesced, s.fetch_errors, s.api_calls, s.in_flight), (2, 1, 1, 0));
}

#[test]
fn a_dropped_leader_releases_followers_to_elect_a_new_one() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let Begin::Lead(leader) = cache.begin(&k) else { panic!() };
    let Begin::Follow(follower) = cache.begin(&k) else {
        panic!()
    };
    drop(leader);
    assert!(matches!(follower.wait(), FlightOutcome::Abandoned));
    assert!(
        matches!(cache.begin(&k), Begin::Lead(_)),
        "the follower retries and leads"
    );
    assert_eq!(checked(&cache).abandoned_flights, 2);
}

#[test]
fn a_panicking_fetch_abandons_the_flight() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.get_or_fetch(&k, |_| panic!("fetch exploded"))
    }));
    assert!(result.is_err());
    let s = checked(&cache);
    assert_eq!((s.in_flight, s.abandoned_flights), (0, 1));
    assert_eq!(
        cache.get_or_fetch(&k, |_| fetched(&cache, &k, "v")).unwrap().mode,
        CacheMode::Miss
    );
}

#[test]
fn invalidation_during_a_fetch_keeps_its_result_out_of_the_cache() {
    let (cache, _) = setup(CacheConfig::default());
    for invalidate in [
        &(|c: &Cache, k: &CacheKey| assert!(!c.invalidate(k))) as &dyn Fn(&Cache, &CacheKey),
        &|c, _| assert_eq!(c.invalidate_prefix("repo:"), 0),
        &|c, _| assert_eq!(c.clear(), 0),
    ] {
        let k = key(1);
        let Begin::Lead(leader) = cache.begin(&k) else { panic!() };
        invalidate(&cache, &k);
        let served = leader.complete(fetched(&cache, &k, "old")).unwrap();
        assert_eq!(served.entry.body, "old", "the caller still gets its answer");
        assert_eq!(cache.lookup(&k), Lookup::Miss, "but it is not stored");
    }
}

#[test]
fn a_request_after_an_invalidation_starts_a_new_flight_that_the_old_one_cannot_clobber() {
    let (cache, _) = setup(CacheConfig::default());
    let unrelated = CacheKey::new(Operation::Runners, [("repo", Some("x/y".to_string()))]);
    for invalidate in [
        &(|c: &Cache, k: &CacheKey| assert!(!c.invalidate(k))) as &dyn Fn(&Cache, &CacheKey),
        &|c, _| assert_eq!(c.invalidate_prefix("repo:"), 0),
        &|c, _| assert_eq!(c.invalidate_repository("o/r1"), 0),
        &|c, _| assert_eq!(c.clear(), 0),
    ] {
        let k = key(1);
        let Begin::Lead(old) = cache.begin(&k) else { panic!() };
        let Begin::Follow(early) = cache.begin(&k) else {
            panic!("a caller before the invalidation follows")
        };
        invalidate(&cache, &k);
        assert_eq!(checked(&cache).in_flight, 1, "the revoked fetch still runs");
        let Begin::Lead(new) = cache.begin(&k) else {
            panic!("a caller after the invalidation leads a new flight")
        };
        let Begin::Follow(late) = cache.begin(&k) else {
            panic!("and the next one follows the new flight")
        };
        assert_eq!(checked(&cache).in_flight, 2);
        let (served, stored) = old.complete_stored(fetched(&cache, &k, "old"));
        assert_eq!((served.unwrap().entry.body.as_ref(), stored), (&b"old"[..], None));
        assert!(matches!(early.wait(), FlightOutcome::Done(Ok(e)) if e.body == "old"));
        assert_eq!(cache.lookup(&k), Lookup::Miss, "the old answer is not stored");
        assert!(
            matches!(cache.begin(&k), Begin::Follow(_)),
            "the new flight is still registered"
        );
        let (served, stored) = new.complete_stored(fetched(&cache, &k, "new"));
        assert_eq!(served.unwrap().entry.body.as_ref(), &b"new"[..]);
        let stored = stored.expect("the new flight's answer is stored");
        assert!(cache.unchanged_since(&k, stored));
        assert_eq!(cache.invalidate_prefix("none:"), 0);
        assert!(
            !cache.unchanged_since(&k, stored),
            "every invalidation reaching the shard counts"
        );
        assert!(matches!(late.wait(), FlightOutcome::Done(Ok(e)) if e.body == "new"));
        assert!(matches!(cache.lookup(&k), Lookup::Fresh(e) if e.body == "new"));
        assert_eq!(checked(&cache).in_flight, 0);
        cache.clear();
    }
    // An invalidation of another key leaves a flight alone.
    let k = key(2);
    let Begin::Lead(leader) = cache.begin(&k) else { panic!() };
    cache.invalidate(&unrelated);
    assert!(matches!(cache.begin(&k), Begin::Follow(_)));
    assert!(leader.complete_stored(fetched(&cache, &k, "v")).1.is_some());
}

#[test]
fn a_revoked_leader_that_vanishes_leaves_the_new_flight_alone() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let Begin::Lead(old) = cache.begin(&k) else { panic!() };
    cache.invalidate(&k);
    let Begin::Lead(new) = cache.begin(&k) else { panic!() };
    drop(old);
    assert!(
        matches!(cache.begin(&k), Begin::Follow(_)),
        "the new flight is still registered"
    );
    assert!(new.complete_stored(fetched(&cache, &k, "new")).1.is_some());
    let s = checked(&cache);
    assert_eq!((s.in_flight, s.abandoned_flights), (0, 1));
}

#[test]
fn followers_block_on_real_threads_until_the_leader_finishes() {
    let (cache, _) = setup(CacheConfig::default());
    let k = key(1);
    let calls = AtomicUsize::new(0);
    let gate = std::sync::Barrier::new(5);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                gate.wait();
                cache.get_or_fetch(&k, |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    fetched(&cache, &k, "v")
                })
            });
        }
        gate.wait();
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let s = checked(&cache);
    assert_eq!(s.coalesced + s.hits, 3);
}

// --- P2P lifecycle ---------------------------------------------------------

struct TestHost {
    id: &'static str,
    stops: StdArc<AtomicUsize>,
}

impl P2pHost for TestHost {
    fn peer_id(&self) -> String {
        self.id.to_owned()
    }
    fn stop(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
}

fn node(p2p: LifecycleConfig) -> (Node, StdArc<ManualClock>) {
    let clock = StdArc::new(ManualClock::new());
    (Node::new_for_tests(CacheConfig::default(), p2p, clock.clone()), clock)
}

fn host(stops: &StdArc<AtomicUsize>) -> Result<Box<dyn P2pHost>, StartError> {
    Ok(Box::new(TestHost {
        id: "12D3KooWtest",
        stops: stops.clone(),
    }))
}

#[test]
fn start_runs_once_and_shutdown_stops_once() {
    let (node, _) = node(LifecycleConfig::default());
    let stops = StdArc::new(AtomicUsize::new(0));
    assert_eq!(node.stats().p2p.phase, P2pPhase::Idle);
    let running = StartOutcome::Running {
        peer_id: "12D3KooWtest".into(),
    };
    assert_eq!(node.start_p2p(|| host(&stops)), running);
    assert_eq!(node.start_p2p(|| panic!("never called again")), running);
    let s = node.stats();
    s.check_consistency().unwrap();
    assert_eq!(
        (s.p2p.phase, s.p2p.peer_id.as_deref()),
        (P2pPhase::Running, Some("12D3KooWtest"))
    );
    node.shutdown_p2p();
    node.shutdown_p2p();
    assert_eq!(stops.load(Ordering::SeqCst), 1);
    assert_eq!(
        node.start_p2p(|| panic!("nothing starts after shutdown")),
        StartOutcome::ShutDown
    );
    assert_eq!(node.stats().p2p.phase, P2pPhase::Stopped);
}

#[test]
fn failures_back_off_exponentially_then_degrade() {
    let config = LifecycleConfig {
        max_start_failures: 3,
        backoff_base: Duration::from_secs(2),
        backoff_max: Duration::from_secs(3),
        ..LifecycleConfig::default()
    };
    assert_eq!(config.backoff(1), Duration::from_secs(2));
    assert_eq!(config.backoff(2), Duration::from_secs(3), "capped");
    let (node, clock) = node(config);
    let fail = || -> Result<Box<dyn P2pHost>, StartError> { Err("port 9100 in use".into()) };
    assert!(matches!(
        node.start_p2p(fail),
        StartOutcome::Failed {
            failures: 1,
            degraded: false,
            ..
        }
    ));
    let retry_at = Timestamp::from_millis(2_000);
    assert_eq!(
        node.start_p2p(|| panic!("backing off")),
        StartOutcome::BackingOff { retry_at }
    );
    let s = node.stats();
    assert_eq!(
        (s.p2p.phase, s.p2p.retry_at, s.p2p.last_error.as_deref()),
        (P2pPhase::BackingOff, Some(retry_at), Some("port 9100 in use"))
    );
    clock.advance(Duration::from_secs(2));
    assert!(matches!(node.start_p2p(fail), StartOutcome::Failed { failures: 2, .. }));
    clock.advance(Duration::from_secs(3));
    assert!(matches!(
        node.start_p2p(fail),
        StartOutcome::Failed {
            failures: 3,
            degraded: true,
            ..
        }
    ));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(node.start_p2p(|| panic!("degraded")), StartOutcome::Degraded);
    assert_eq!(node.stats().p2p.phase, P2pPhase::Degraded);
}

#[test]
fn a_success_resets_the_failure_count() {
    let (node, clock) = node(LifecycleConfig::default());
    let stops = StdArc::new(AtomicUsize::new(0));
    assert!(matches!(
        node.start_p2p(|| Err("once".into())),
        StartOutcome::Failed { .. }
    ));
    clock.advance(Duration::from_secs(1));
    assert!(matches!(node.start_p2p(|| host(&stops)), StartOutcome::Running { .. }));
    assert_eq!(node.stats().p2p.failures, 0);
}

#[test]
fn a_panicking_starter_counts_as_a_failure() {
    let (node, _) = node(LifecycleConfig::default());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        node.start_p2p(|| panic!("bind exploded"))
    }));
    assert!(r.is_err());
    let s = node.stats();
    assert_eq!((s.p2p.phase, s.p2p.failures), (P2pPhase::BackingOff, 1));
}

#[test]
fn disabled_nodes_and_local_caches_never_start() {
    let (node, _) = node(LifecycleConfig::disabled());
    assert_eq!(node.start_p2p(|| panic!("disabled")), StartOutcome::Disabled);
    node.shutdown_p2p();
    assert_eq!(node.stats().p2p.phase, P2pPhase::Stopped);
    let (cache, _) = setup(CacheConfig::default());
    assert_eq!(cache.stats().p2p.phase, P2pPhase::Disabled);
}

#[test]
fn shutdown_during_a_start_stops_the_new_host_before_returning() {
    let (node, _) = node(LifecycleConfig::default());
    let stops = StdArc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (node, stops) = (&node, &stops);
    std::thread::scope(|s| {
        let starter = s.spawn(move || {
            node.start_p2p(move || {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                host(stops)
            })
        });
        entered_rx.recv().unwrap();
        let shutdown = s.spawn(|| node.shutdown_p2p());
        while !node.stats().p2p.shutdown_requested {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(node.stats().p2p.phase, P2pPhase::Starting);
        assert!(!shutdown.is_finished(), "shutdown waits for the start in progress");
        release_tx.send(()).unwrap();
        shutdown.join().unwrap();
        assert_eq!(stops.load(Ordering::SeqCst), 1, "stopped by the time shutdown returned");
        assert_eq!(starter.join().unwrap(), StartOutcome::ShutDown);
    });
    assert_eq!(node.stats().p2p.phase, P2pPhase::Stopped);
}

#[test]
fn a_host_whose_stop_panics_still_releases_a_waiting_shutdown() {
    struct PanickyHost;
    impl P2pHost for PanickyHost {
        fn peer_id(&self) -> String {
            "12D3KooWpanicky".into()
        }
        fn stop(&self) {
            panic!("stop exploded");
        }
    }
    let (node, _) = node(LifecycleConfig::default());
    let node = &node;
    std::thread::scope(|s| {
        let starter = s.spawn(move || {
            node.start_p2p(|| {
                while !node.stats().p2p.shutdown_requested {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(Box::new(PanickyHost))
            })
        });
        while node.stats().p2p.phase != P2pPhase::Starting {
            std::thread::sleep(Duration::from_millis(1));
        }
        let shutdown = s.spawn(|| node.shutdown_p2p());
        assert!(starter.join().is_err(), "the panic reaches the starter's caller");
        shutdown.join().unwrap();
    });
    assert_eq!(node.stats().p2p.phase, P2pPhase::Stopped);
}

#[test]
fn the_process_has_one_node() {
    let clock: StdArc<dyn Clock> = StdArc::new(SystemClock::new());
    let node = Node::init(CacheConfig::default(), LifecycleConfig::disabled(), clock.clone()).unwrap();
    assert_eq!(
        Node::init(CacheConfig::default(), LifecycleConfig::default(), clock).unwrap_err(),
        AlreadyInitialized
    );
    assert!(crate::sync::Arc::ptr_eq(&Node::get().unwrap(), &node));
}

#[test]
fn stats_serialise_to_json_for_the_stats_tool() {
    let (cache, _) = setup(CacheConfig::default());
    let s = cache.stats();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["p2p"]["phase"], "disabled");
    assert_eq!(serde_json::from_value::<StatsSnapshot>(json).unwrap(), s);
}
