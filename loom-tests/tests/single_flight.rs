//! Lock path: single flight (`begin` / `complete` / the leader's drop, the
//! followers' wait), alone and racing invalidation, stats and shutdown.
#![cfg(loom)]

use ghcache::core::{Begin, CacheMode, FetchFailed, FlightOutcome, Lookup};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{cache, fetched, key, node, start_host, HostLedger};

/// Three concurrent misses on one key make one fetch; the other two callers
/// either waited for it (coalesced) or came after it (hit).
#[test]
fn one_fetch_for_concurrent_misses() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let call = {
            let (c, fetches) = (c.clone(), fetches.clone());
            move || {
                c.get_or_fetch(&key(1), |stale| {
                    assert!(stale.is_none());
                    fetches.fetch_add(1, Ordering::SeqCst);
                    fetched(&c, &key(1), "v")
                })
                .expect("the fetch succeeds")
            }
        };
        let others: Vec<_> = (0..2).map(|_| thread::spawn(call.clone())).collect();
        let mut modes = vec![call().mode];
        modes.extend(others.into_iter().map(|t| t.join().unwrap().mode));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(modes.iter().filter(|m| **m == CacheMode::Miss).count(), 1);
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.coalesced + s.hits, 2);
        assert_eq!((s.api_calls, s.in_flight, s.entries), (1, 0, 1));
    });
}

/// A failing leader hands its error to every follower; each fetch that ran
/// belongs to a caller that led, and every caller returns.
#[test]
fn leader_error_reaches_followers() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let fetches = Arc::new(AtomicUsize::new(0));
        let call = {
            let (c, fetches) = (c.clone(), fetches.clone());
            move || {
                c.get_or_fetch(&key(1), |_| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    Err(FetchFailed::msg("upstream 502"))
                })
                .expect_err("every caller sees the failure")
                .to_string()
            }
        };
        let others: Vec<_> = (0..2).map(|_| thread::spawn(call.clone())).collect();
        assert_eq!(call(), "upstream 502");
        for other in others {
            assert_eq!(other.join().unwrap(), "upstream 502");
        }
        let s = c.stats();
        s.check_consistency().unwrap();
        let fetches = fetches.load(Ordering::SeqCst) as u64;
        assert_eq!(s.fetch_errors, fetches);
        assert_eq!(s.coalesced + fetches, 3, "each caller either fetched or followed");
        assert_eq!((s.entries, s.in_flight), (0, 0));
    });
}

/// A leader that vanishes (a cancelled task drops its `FlightLeader`; a panic
/// unwinds through the same `Drop`) releases its followers, and one of them
/// leads the next fetch: nobody waits forever.
#[test]
fn dropped_leader_elects_new_leader() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let canceller = {
            let c = c.clone();
            thread::spawn(move || match c.begin(&key(1)) {
                Begin::Lead(leader) => drop(leader),
                Begin::Follow(follower) => {
                    follower.wait();
                }
                Begin::Fresh(_) => {}
            })
        };
        let served = c.get_or_fetch(&key(1), |_| fetched(&c, &key(1), "v")).unwrap();
        canceller.join().unwrap();
        assert_eq!(served.entry.body, "v");
        assert!(matches!(served.mode, CacheMode::Miss | CacheMode::Coalesced));
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.in_flight, s.api_calls, s.entries), (0, 1, 1));
    });
}

/// The async path: a follower awaited as a future (as the daemon does) is
/// woken by the leader's publish; no lost wake-up.
#[test]
fn async_follower_is_woken() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let task = {
            let c = c.clone();
            thread::spawn(move || {
                loom::future::block_on(async {
                    loop {
                        match c.begin(&key(1)) {
                            Begin::Fresh(e) => return e.body.clone(),
                            Begin::Lead(leader) => {
                                let result = fetched(&c, &key(1), "v");
                                return leader.complete(result).unwrap().entry.body.clone();
                            }
                            Begin::Follow(follower) => match follower.await {
                                FlightOutcome::Done(result) => return result.unwrap().body.clone(),
                                FlightOutcome::Abandoned => continue,
                            },
                        }
                    }
                })
            })
        };
        let mine = c.get_or_fetch(&key(1), |_| fetched(&c, &key(1), "v")).unwrap();
        assert_eq!(task.join().unwrap(), mine.entry.body);
        assert_eq!(c.stats().api_calls, 1);
    });
}

/// The fetch callback calls back into the cache (stats, lookup, insert of
/// another key): with any lock held across the callback this deadlocks.
#[test]
fn fetch_callback_may_call_back_into_the_cache() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let other = {
            let c = c.clone();
            thread::spawn(move || c.lookup(&key(1)))
        };
        let served = c
            .get_or_fetch(&key(1), |_| {
                c.stats().check_consistency().unwrap();
                assert_eq!(c.lookup(&key(1)), Lookup::Miss);
                assert!(c.insert(&key(2), loom_tests::entry(&c, &key(2), "side")));
                fetched(&c, &key(1), "v")
            })
            .unwrap();
        other.join().unwrap();
        assert_eq!(served.mode, CacheMode::Miss);
        c.stats().check_consistency().unwrap();
    });
}

/// Invalidate racing a fetch: an answer whose fetch began before the
/// invalidation is never left in the cache after it.
#[test]
fn invalidation_racing_a_fetch_never_keeps_an_older_answer() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let invalidation_started = Arc::new(AtomicBool::new(false));
        let invalidator = {
            let (c, started) = (c.clone(), invalidation_started.clone());
            thread::spawn(move || {
                started.store(true, Ordering::SeqCst);
                c.invalidate(&key(1));
            })
        };
        let mut began_before = false;
        let served = c
            .get_or_fetch(&key(1), |_| {
                began_before = !invalidation_started.load(Ordering::SeqCst);
                fetched(&c, &key(1), "old")
            })
            .unwrap();
        invalidator.join().unwrap();
        assert_eq!(served.entry.body, "old", "the caller still gets its answer");
        if began_before {
            assert_eq!(
                c.lookup(&key(1)),
                Lookup::Miss,
                "an answer older than the invalidation survived it"
            );
        }
        c.stats().check_consistency().unwrap();
    });
}

/// P2P shutdown racing a fetch: different locks, neither waits for the
/// other, the host stops once and the fetch completes.
#[test]
fn shutdown_racing_a_fetch() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        node.start_p2p(|| start_host(&ledger));
        let stopper = {
            let node = node.clone();
            thread::spawn(move || node.shutdown_p2p())
        };
        let c = node.cache();
        let served = c
            .get_or_fetch(&key(1), |_| {
                // Reads the lifecycle lock that shutdown is changing.
                node.stats().check_consistency().unwrap();
                fetched(c, &key(1), "v")
            })
            .unwrap();
        stopper.join().unwrap();
        assert_eq!(served.mode, CacheMode::Miss);
        assert_eq!((ledger.running(), ledger.stops.load(Ordering::SeqCst)), (0, 1));
    });
}

/// Everything at once on one node: a fetch, a P2P start, a shutdown and a
/// stats reader. Every thread returns, the fetch runs once, no host outlives
/// shutdown, and every snapshot is consistent.
#[test]
fn fetch_start_shutdown_and_stats_together() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let fetcher = {
            let node = node.clone();
            thread::spawn(move || {
                let c = node.cache();
                c.get_or_fetch(&key(1), |_| fetched(c, &key(1), "v"))
                    .unwrap()
                    .entry
                    .body
                    .clone()
            })
        };
        let starter = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
        };
        node.stats().check_consistency().unwrap();
        node.shutdown_p2p();
        assert_eq!(ledger.running(), 0, "a host is running after shutdown returned");
        assert_eq!(fetcher.join().unwrap(), "v");
        starter.join().unwrap();
        let s = node.stats();
        s.check_consistency().unwrap();
        assert_eq!((ledger.running(), s.api_calls, s.entries), (0, 1, 1));
    });
}
