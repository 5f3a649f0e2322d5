//! Property tests of the core against sequential models, in the regular
//! `cargo test` (no nightly needed).
//!
//! The models are the fuzz targets' own (`fuzz/src/*_model.rs`, included
//! below with `#[path]`), so proptest and libFuzzer check one specification:
//! - `cache_ops`: a proptest-state-machine test; the reference state machine
//!   is the cache model (TTL, S3-FIFO eviction by entries and bytes, prefix
//!   invalidation, counters that survive `clear`), the system under test a
//!   real `Cache` compared with it after every transition;
//! - `single_flight`: interleavings of three callers' steps, cache
//!   operations and real-thread races (with real panics in fetches here,
//!   which libFuzzer cannot unwind);
//! - `lifecycle`: the P2P state machine, with real panics in starters.
//!
//! A failure shrinks to a short op sequence; paste it into a regression
//! test below (see `regressions`).

#![allow(dead_code)]

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

#[path = "../../fuzz/src/cache_model.rs"]
mod cache_model;
#[path = "../../fuzz/src/flight_model.rs"]
mod flight_model;
#[path = "../../fuzz/src/lifecycle_model.rs"]
mod lifecycle_model;

use cache_model::{apply_real, check, disabled_p2p, CacheModel, CacheOp, CacheSetup};
use flight_model::{Completion, FlightOp};
use lifecycle_model::{LifeOp, LifecycleSetup, StartResult};

fn cache_setup() -> impl Strategy<Value = CacheSetup> {
    // Mostly one shard (exact eviction order checked), sometimes several.
    let shards = prop_oneof![3 => Just(0u8), 1 => 1u8..4];
    (any::<u8>(), any::<u16>(), 0u16..3000, 0u16..3000, shards).prop_map(
        |(max_entries, max_bytes, ttl_ms, grace_ms, shards)| CacheSetup {
            max_entries,
            max_bytes,
            ttl_ms,
            grace_ms,
            shards,
        },
    )
}

fn cache_op() -> impl Strategy<Value = CacheOp> {
    let key = || 0u8..8;
    let insert = (
        key(),
        0u8..100,
        any::<u8>(),
        proptest::option::of(0u8..4),
        0u8..3,
        prop_oneof![Just(0u16), 0u16..6000],
        proptest::option::of(0u16..6000),
    )
        .prop_map(|(key, len, fill, etag, origin, age_ms, ttl_ms)| CacheOp::Insert {
            key,
            len,
            fill,
            etag,
            origin,
            age_ms,
            ttl_ms,
        });
    prop_oneof![
        4 => key().prop_map(|key| CacheOp::Lookup { key }),
        5 => insert,
        1 => key().prop_map(|key| CacheOp::Invalidate { key }),
        1 => (0u8..7).prop_map(|prefix| CacheOp::InvalidatePrefix { prefix }),
        1 => Just(CacheOp::Clear),
        2 => (0u16..3000).prop_map(|ms| CacheOp::Advance { ms }),
        1 => (key(), 0u8..6).prop_map(|(key, event)| CacheOp::Record { key, event }),
        1 => Just(CacheOp::Stats),
    ]
}

/// The reference state: the setup (to build the cache from) and the model.
#[derive(Clone, Debug)]
struct CacheRef {
    setup: CacheSetup,
    model: CacheModel,
}

struct CacheMachine;

impl ReferenceStateMachine for CacheMachine {
    type State = CacheRef;
    type Transition = CacheOp;

    fn init_state() -> BoxedStrategy<CacheRef> {
        cache_setup()
            .prop_map(|setup| CacheRef {
                model: setup.model(),
                setup,
            })
            .boxed()
    }

    fn transitions(_: &CacheRef) -> BoxedStrategy<CacheOp> {
        cache_op().boxed()
    }

    fn apply(mut state: CacheRef, op: &CacheOp) -> CacheRef {
        state.model.apply(op);
        state
    }
}

struct CacheUnderTest {
    cache: crate::core::Cache,
    clock: std::sync::Arc<crate::core::ManualClock>,
}

impl StateMachineTest for CacheMachine {
    type SystemUnderTest = CacheUnderTest;
    type Reference = CacheMachine;

    fn init_test(state: &CacheRef) -> CacheUnderTest {
        let (cache, clock) = state.setup.cache();
        CacheUnderTest { cache, clock }
    }

    fn apply(sut: CacheUnderTest, state: &CacheRef, op: CacheOp) -> CacheUnderTest {
        // `state` is the model after `op`; an insert's entry depends only on
        // the clock and the TTLs, which an insert does not change.
        let got = apply_real(&sut.cache, &sut.clock, &state.model, &op);
        assert_eq!(Some(got), state.model.last, "answer to {op:?}");
        sut
    }

    fn check_invariants(sut: &CacheUnderTest, state: &CacheRef) {
        check(&sut.cache, &sut.clock, &state.model, disabled_p2p());
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn cache_ops_match_the_model(sequential 1..80 => CacheMachine);
}

fn completion() -> impl Strategy<Value = Completion> {
    prop_oneof![
        3 => (any::<bool>(), 0u8..60).prop_map(|(graphql, len)| Completion::Upstream { graphql, len }),
        2 => Just(Completion::NotModified),
        1 => (0u8..60).prop_map(|len| Completion::Peer { len }),
        2 => Just(Completion::Error),
    ]
}

fn flight_op() -> impl Strategy<Value = FlightOp> {
    let caller = || 0u8..3;
    prop_oneof![
        5 => (caller(), 0u8..3).prop_map(|(caller, key)| FlightOp::Begin { caller, key }),
        3 => (caller(), completion()).prop_map(|(caller, how)| FlightOp::Complete { caller, how }),
        1 => caller().prop_map(|caller| FlightOp::Abandon { caller }),
        3 => caller().prop_map(|caller| FlightOp::Poll { caller }),
        1 => caller().prop_map(|caller| FlightOp::Wait { caller }),
        1 => (0u8..3).prop_map(|key| FlightOp::PanicFetch { key }),
        4 => cache_op().prop_map(FlightOp::Cache),
        1 => (any::<bool>(), any::<[bool; 3]>(), any::<bool>())
            .prop_map(|(three, ok, stale_first)| FlightOp::Race { three, ok, stale_first }),
    ]
}

// Times on a 100 ms grid, so clock moves land exactly on `retry_at` often
// (off-by-one bugs at the boundary are the likely ones).
fn life_setup() -> impl Strategy<Value = LifecycleSetup> {
    (
        prop_oneof![5 => Just(true), 1 => Just(false)],
        0u8..6,
        0u16..40,
        0u16..100,
    )
        .prop_map(|(enabled, max_failures, base, max)| LifecycleSetup {
            enabled,
            max_failures,
            base_ms: base * 100,
            max_ms: max * 100,
        })
}

fn life_op() -> impl Strategy<Value = LifeOp> {
    let result = prop_oneof![1 => Just(StartResult::Ok), 2 => Just(StartResult::Err), 1 => Just(StartResult::Panic)];
    prop_oneof![
        6 => (result, prop_oneof![Just(0u16), 0u16..30]).prop_map(|(result, slow)| LifeOp::Start { result, slow_ms: slow * 100 }),
        1 => any::<bool>().prop_map(|ok| LifeOp::StartRacedByShutdown { ok }),
        1 => Just(LifeOp::Shutdown),
        4 => (0u16..80).prop_map(|ms| LifeOp::Advance { ms: ms * 100 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn single_flight_matches_the_model(setup in cache_setup(), ops in proptest::collection::vec(flight_op(), 1..60)) {
        flight_model::run(&setup, &ops, true);
    }

    #[test]
    fn lifecycle_matches_the_model(setup in life_setup(), ops in proptest::collection::vec(life_op(), 1..40)) {
        lifecycle_model::run(&setup, &ops, true);
    }
}

/// Cases found by the fuzzers, proptest or mutation testing (`ci/mutants`
/// survivors), kept as plain tests.
mod regressions {
    use std::error::Error;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::core::key::PrehashedKey;
    use crate::core::outcome::OutcomeCell;
    use crate::core::{AlreadyInitialized, LifecycleConfig, Node, StatsSnapshot};
    use crate::core::{
        Begin, Cache, CacheConfig, CacheKey, CacheMode, Clock, ETag, FetchFailed, ManualClock, Operation, Origin,
        SystemClock, Timestamp,
    };

    /// Keys spread over the shards (a survivor: every key routed to one
    /// shard went unseen, as that only makes eviction start early). 200
    /// keys in 4 shards of 100 entries: with any even spread nothing is
    /// evicted; all in one shard would evict 100. (A mutant that sends keys
    /// past the last shard panics on the index.)
    #[test]
    fn keys_spread_over_the_shards() {
        let cache = Cache::new(
            CacheConfig {
                max_entries: 400,
                shards: 4,
                ..CacheConfig::default()
            },
            Arc::new(ManualClock::new()),
        );
        for n in 0..200 {
            let k = CacheKey::new(Operation::Api, [("n", Some(n.to_string()))]);
            assert!(cache.insert(&k, cache.new_entry(&k, "x", None, Origin::Upstream)));
        }
        let s = cache.stats();
        assert_eq!((s.entries, s.evictions), (200, 0));
    }

    /// The diagnostic and wire names (survivors: nothing read them).
    #[test]
    fn names_and_debug_output() {
        let clock: Arc<ManualClock> = Arc::new(ManualClock::new());
        let cache = Cache::new(CacheConfig::default(), clock.clone());
        assert!(format!("{cache:?}").starts_with("Cache { config: CacheConfig {"));
        assert_eq!(format!("{:?}", ETag::new("W/\"x\"").unwrap()), "ETag(\"W/\\\"x\\\"\")");
        assert_eq!(Timestamp::from_millis(5).to_string(), "t+5ms");
        let names: Vec<&str> = [
            CacheMode::Hit,
            CacheMode::Miss,
            CacheMode::Revalidated,
            CacheMode::Stale,
            CacheMode::Coalesced,
            CacheMode::Peer,
        ]
        .into_iter()
        .map(CacheMode::as_str)
        .collect();
        assert_eq!(names, ["hit", "miss", "revalidated", "stale", "coalesced", "peer"]);
        let k = CacheKey::new(Operation::Repo, [("repo", Some("o/r"))]);
        let Begin::Lead(leader) = cache.begin(&k) else {
            panic!("first caller leads")
        };
        assert_eq!(
            format!("{leader:?}"),
            "FlightLeader { key: CacheKey(\"repo:repo=o/r\"), .. }"
        );
        assert_eq!(format!("{:?}", FetchFailed::msg("boom")), "Message(\"boom\")");
    }

    /// More names (survivors: nothing read them).
    #[test]
    fn key_names_and_errors_display() {
        let k = CacheKey::new(Operation::WorkflowRuns, [("repo", Some("o/r"))]);
        assert_eq!(
            (k.to_string(), format!("{k:?}")),
            (
                "workflow_runs:repo=o/r".to_owned(),
                "CacheKey(\"workflow_runs:repo=o/r\")".to_owned()
            )
        );
        assert_eq!(Operation::PullRequests.to_string(), "pull_requests");
        let err = CacheKey::parse("nope:").unwrap_err();
        assert_eq!(err.to_string(), "invalid cache key: unknown operation \"nope\"");
        let cache = Cache::new(CacheConfig::default(), Arc::new(ManualClock::new()));
        let Begin::Lead(_leader) = cache.begin(&k) else {
            panic!("first caller leads")
        };
        let Begin::Follow(follower) = cache.begin(&k) else {
            panic!("second caller follows")
        };
        assert_eq!(format!("{follower:?}"), "Follower { .. }");
    }

    /// Maps keyed by `CacheKey` use its precomputed hash as is (survivors:
    /// with every hash zero the maps stay correct, only slow, so nothing
    /// else notices), and other writes fold bytes by rotate-and-xor.
    #[test]
    fn prehashed_keys_pass_their_hash_through() {
        use std::hash::{BuildHasher, Hasher};
        let k = CacheKey::new(Operation::Repo, [("repo", Some("o/r"))]);
        assert_eq!(PrehashedKey.hash_one(&k), k.hash_value());
        assert_ne!(
            k.hash_value(),
            CacheKey::new(Operation::Repo, [("repo", Some("o/s"))]).hash_value()
        );
        let fold = |bytes: &[u8]| {
            let mut h = PrehashedKey.build_hasher();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(fold(&[1, 2]), 0x0102);
        assert_eq!(
            fold(&[1, 0, 0, 0, 0, 0, 0, 0, 1]),
            0,
            "the ninth byte lands on the first"
        );
    }

    /// `peek` sees a published value; the node's names (survivors).
    #[test]
    fn outcome_peek_and_node_names() {
        let cell = OutcomeCell::new();
        assert_eq!(cell.peek(), None);
        cell.publish(3);
        assert_eq!(cell.peek(), Some(3));
        assert_eq!(
            AlreadyInitialized.to_string(),
            "the ghcache node of this process is already initialised; use Node::get()"
        );
        let node = Node::new_for_tests(
            CacheConfig::default(),
            LifecycleConfig::disabled(),
            Arc::new(ManualClock::new()),
        );
        assert!(format!("{node:?}").starts_with("Node { cache: Cache { config: CacheConfig {"));
    }

    /// Each rule of `check_consistency` rejects a snapshot that breaks it
    /// (a survivor: the tests only ever showed it consistent snapshots).
    #[test]
    fn check_consistency_rejects_each_broken_rule() {
        let good = Cache::new(CacheConfig::default(), Arc::new(ManualClock::new())).stats();
        assert_eq!(good.check_consistency(), Ok(()));
        type Break = fn(&mut StatsSnapshot);
        let breaks: [(&str, Break); 8] = [
            ("hits + stale_hits + misses == lookups", |s| s.hits += 1),
            ("coalesced <= stale_hits + misses", |s| s.coalesced += 1),
            ("api_calls == api_calls_rest + api_calls_graphql", |s| s.api_calls += 1),
            ("api_calls_saved ==", |s| s.api_calls_saved += 1),
            ("entries <= max_entries", |s| s.entries = s.max_entries + 1),
            ("bytes <= max_bytes", |s| s.bytes = s.max_bytes + 1),
            ("entries <= inserts - evictions", |s| s.evictions += 1),
            ("peer_id present exactly when running", |s| {
                s.p2p.peer_id = Some("x".into())
            }),
        ];
        for (rule, break_it) in breaks {
            let mut bad = good.clone();
            break_it(&mut bad);
            let err = bad.check_consistency().unwrap_err();
            assert!(err.contains(rule), "{rule}: {err}");
        }
    }

    /// `FetchFailed` keeps the original error (survivors).
    #[test]
    fn fetch_failed_keeps_the_original_error() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = FetchFailed::new(Outer(std::io::Error::other("inner")));
        assert_eq!(e.to_string(), "outer");
        assert!(e.downcast_ref::<Outer>().is_some());
        assert!(e.downcast_ref::<std::io::Error>().is_none());
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("inner"));
    }

    /// Clock arithmetic away from zero (a survivor: `saturating_sub` was
    /// only checked where it saturates to zero).
    #[test]
    fn timestamps_subtract() {
        assert_eq!(
            Timestamp::from_millis(5_000).saturating_sub(Duration::from_secs(2)),
            Timestamp::from_millis(3_000)
        );
    }

    /// The system clock moves (a survivor: `now` returning zero kept the
    /// monotonicity test green). Sleeping guarantees at least that much
    /// monotonic time passes; the coarse clock may show up to one kernel
    /// tick less (at most 10 ms, at HZ=100), so this cannot flake.
    #[test]
    fn the_system_clock_moves() {
        let clock = SystemClock::new();
        std::thread::sleep(Duration::from_millis(25));
        assert!(clock.now() >= Timestamp::from_millis(15));
    }

    /// `Cache::config` reports the bounds as adjusted, not as asked
    /// (a survivor: the adjusted `max_entries` was not checked anywhere).
    #[test]
    fn config_reports_the_adjusted_bounds() {
        let cache = Cache::new(
            CacheConfig {
                max_entries: 0,
                shards: 0,
                ..CacheConfig::default()
            },
            Arc::new(ManualClock::new()),
        );
        assert_eq!((cache.config().max_entries, cache.config().shards), (1, 1));
        assert_eq!(cache.stats().max_entries, 1);
    }
}
