//! Lock path: stats (every shard lock in order, then the lifecycle lock),
//! racing the paths that change what it reports.
#![cfg(loom)]

use ghcache::core::{Api, Event, P2pPhase};
use loom::sync::Arc;
use loom::thread;
use loom_tests::{cache, entry, key, node, start_host, HostLedger};

/// Snapshots taken while another thread inserts and looks up are consistent
/// at every point, not just at the end.
#[test]
fn stats_consistent_while_inserting() {
    loom_tests::model(|| {
        let c = cache(1, 4);
        let worker = {
            let c = c.clone();
            thread::spawn(move || {
                c.lookup(&key(1));
                c.insert(&key(1), entry(&c, &key(1), "v"));
                c.lookup(&key(1));
            })
        };
        let snapshot = c.stats();
        snapshot.check_consistency().unwrap();
        assert!(snapshot.lookups <= 2 && snapshot.entries <= 1);
        worker.join().unwrap();
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1));
    });
}

/// With two shards, stats takes both locks at once: a snapshot never shows
/// the second shard's update without the first's.
#[test]
fn stats_across_shards_is_one_moment() {
    loom_tests::model(|| {
        let c = cache(2, 4);
        let a = key(1);
        let b = (2..).map(key).find(|k| c.shard_index(k) != c.shard_index(&a)).unwrap();
        let writer = {
            let c = c.clone();
            thread::spawn(move || {
                c.record(&a, Event::ApiCall(Api::Rest));
                c.record(&b, Event::ApiCall(Api::GraphQl));
            })
        };
        let s = c.stats();
        s.check_consistency().unwrap();
        assert!(
            s.api_calls_graphql <= s.api_calls_rest,
            "saw the second update without the first"
        );
        writer.join().unwrap();
        assert_eq!(c.stats().api_calls, 2);
    });
}

/// Stats racing a P2P start: the peer id appears exactly when the state is
/// running (checked by `check_consistency`).
#[test]
fn stats_racing_start_report_a_real_state() {
    loom_tests::model(|| {
        let node = node();
        let ledger = Arc::new(HostLedger::default());
        let starter = {
            let (node, ledger) = (node.clone(), ledger.clone());
            thread::spawn(move || node.start_p2p(|| start_host(&ledger)))
        };
        let s = node.stats();
        s.check_consistency().unwrap();
        assert!(matches!(
            s.p2p.phase,
            P2pPhase::Idle | P2pPhase::Starting | P2pPhase::Running
        ));
        starter.join().unwrap();
        assert_eq!(node.stats().p2p.peer_id.as_deref(), Some("12D3KooWloom"));
    });
}

/// Stats racing clear and prefix invalidation (which walk the shards one
/// lock at a time): each snapshot is consistent and counts every removal.
#[test]
fn stats_racing_clear_and_prefix_invalidation() {
    loom_tests::model(|| {
        let c = cache(2, 8);
        for n in 1..=3 {
            c.insert(&key(n), entry(&c, &key(n), "v"));
        }
        let clearer = {
            let c = c.clone();
            thread::spawn(move || c.invalidate_prefix("repo:repo=o/r1") + c.clear())
        };
        let s = c.stats();
        s.check_consistency().unwrap();
        assert_eq!(s.entries + s.invalidations, 3);
        assert_eq!(clearer.join().unwrap(), 3);
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.invalidations), (0, 0, 3));
    });
}
