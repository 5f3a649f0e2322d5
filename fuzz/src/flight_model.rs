//! Single flight, modelled: up to three logical callers on one thread, the
//! fuzzer choosing which one takes its next step (begin, complete, abandon,
//! poll, wait), interleaved with any cache operation; plus real races of 2-3
//! OS threads through `get_or_fetch`.
//!
//! Each step of a logical caller is one call of the public API, so an
//! interleaving of steps is an interleaving of critical sections: the
//! fuzzer explores *which* caller goes next deterministically (the
//! reproducible part), loom explores the memory-level interleavings inside
//! the calls. Followers are polled as futures with counting wakers, so a
//! lost or doubled wake-up is seen, and a blocking `wait` is only issued
//! once the model says the outcome is published (it must then return at
//! once, not hang).
//!
//! Shared by the `single_flight` fuzz target and `src/core/proptests.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, LazyLock, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::cache_model::{apply_real, check, disabled_p2p, key, CacheModel, CacheOp, CacheSetup};
use crate::core::{
    Api, Begin, Cache, CacheConfig, CacheKey, CacheMode, Entry, Event, FetchFailed, Fetched, FlightLeader,
    FlightOutcome, Follower, ManualClock, Origin, Served, Timestamp, Via,
};

/// How many logical callers there are.
pub const CALLERS: usize = 3;

/// How a leader's fetch ends.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Completion {
    /// A full answer from GitHub (REST or GraphQL) of `len` bytes.
    Upstream { graphql: bool, len: u8 },
    /// A 304: the stale entry made fresh (a new entry when there is none).
    NotModified,
    /// An answer from a peer.
    Peer { len: u8 },
    /// An error.
    Error,
}

/// One step.
#[derive(Clone, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum FlightOp {
    /// An idle caller calls `begin` on key `key % 3`.
    Begin { caller: u8, key: u8 },
    /// A leading caller completes its fetch.
    Complete { caller: u8, how: Completion },
    /// A leading caller vanishes: its `FlightLeader` is dropped (what a
    /// panic in the fetch or a cancelled task does).
    Abandon { caller: u8 },
    /// A following caller polls its `Follower` future.
    Poll { caller: u8 },
    /// A following caller blocks in `wait` (only once the outcome is
    /// published: it must then return at once).
    Wait { caller: u8 },
    /// `get_or_fetch` whose fetch panics, when the key has no flight (with
    /// `unwinding` harnesses only; otherwise a drop, as above).
    PanicFetch { key: u8 },
    /// Any cache operation, in the middle of the flights.
    Cache(CacheOp),
    /// A race of 2 or 3 real threads through `get_or_fetch` on a fresh
    /// cache, each fetch succeeding or failing per `ok` (the first `Race` of
    /// a run only).
    Race {
        three: bool,
        ok: [bool; 3],
        stale_first: bool,
    },
}

/// What the model says about a caller.
#[derive(Clone, Debug)]
enum ModelCaller {
    Idle,
    Leading {
        key: CacheKey,
        flight: u64,
        stale: Option<Arc<Entry>>,
    },
    Following {
        flight: u64,
    },
}

/// A published outcome, as the model sees it.
#[derive(Clone, Debug)]
enum ModelOutcome {
    Done(Result<Entry, String>),
    Abandoned,
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

enum RealCaller {
    Idle,
    Leading(FlightLeader),
    Following {
        follower: Follower,
        waker: Arc<CountingWaker>,
        polled_pending: bool,
    },
}

/// The real cache, its callers and the model, stepped together.
pub struct FlightHarness {
    cache: Cache,
    clock: Arc<ManualClock>,
    model: CacheModel,
    callers: Vec<RealCaller>,
    model_callers: Vec<ModelCaller>,
    outcomes: BTreeMap<u64, ModelOutcome>,
    next_flight: u64,
    /// Whether panics may unwind (not under libFuzzer, whose panic hook
    /// aborts the process).
    unwinding: bool,
    /// Real-thread races left: one per run, as they cost more than all the
    /// other steps together.
    races_left: usize,
}

impl FlightHarness {
    pub fn new(setup: &CacheSetup, unwinding: bool) -> FlightHarness {
        let (cache, clock) = setup.cache();
        FlightHarness {
            cache,
            clock,
            model: setup.model(),
            callers: (0..CALLERS).map(|_| RealCaller::Idle).collect(),
            model_callers: vec![ModelCaller::Idle; CALLERS],
            outcomes: BTreeMap::new(),
            next_flight: 0,
            unwinding,
            races_left: 1,
        }
    }

    fn fetched(&self, key: &CacheKey, stale: Option<&Entry>, how: Completion) -> Result<Fetched, FetchFailed> {
        let now = Timestamp::from_millis(self.model.now);
        let ttl = Duration::from_millis(self.model.ttl_ms(key.operation()));
        let fresh = |len: u8, origin| Entry::new(vec![b'f'; usize::from(len)], None, now, ttl, origin);
        Ok(match how {
            Completion::Upstream { graphql, len } => Fetched {
                entry: fresh(len, Origin::Upstream),
                via: Via::Upstream(if graphql { Api::GraphQl } else { Api::Rest }),
            },
            Completion::NotModified => Fetched {
                entry: stale.map_or_else(|| fresh(1, Origin::Upstream), |s| s.revalidated(now, ttl)),
                via: Via::NotModified,
            },
            Completion::Peer { len } => Fetched {
                entry: fresh(len, Origin::Peer),
                via: Via::Peer,
            },
            Completion::Error => return Err(FetchFailed::msg(format!("upstream error at {now}"))),
        })
    }

    /// Checks the followers of `flight` after its outcome was published: a
    /// follower that had polled `Pending` was woken exactly once, one that
    /// had not polled was not woken.
    fn check_wakers(&self, flight: u64) {
        for (i, (real, model)) in self.callers.iter().zip(&self.model_callers).enumerate() {
            if let (
                RealCaller::Following {
                    waker, polled_pending, ..
                },
                ModelCaller::Following { flight: f },
            ) = (real, model)
            {
                if *f == flight {
                    let woken = waker.0.load(Ordering::SeqCst);
                    assert_eq!(
                        woken,
                        usize::from(*polled_pending),
                        "caller {i}'s waker fired {woken} times"
                    );
                }
            }
        }
    }

    /// Ends the model's flight for `key` with `outcome`; returns whether
    /// it was still the key's current flight (not revoked), so its answer
    /// may be stored.
    fn end_flight(&mut self, key: &CacheKey, flight: u64, outcome: ModelOutcome) -> bool {
        self.outcomes.insert(flight, outcome);
        if self.model.flights.get(key).is_some_and(|f| f.id == flight) {
            self.model.flights.remove(key);
            true
        } else {
            assert!(
                self.model.revoked.remove(&flight),
                "model: flight {flight} is current or revoked"
            );
            false
        }
    }

    fn compare_outcome(got: FlightOutcome, want: &ModelOutcome) {
        match (got, want) {
            (FlightOutcome::Done(Ok(e)), ModelOutcome::Done(Ok(w))) => assert_eq!(&*e, w, "follower's entry"),
            (FlightOutcome::Done(Err(e)), ModelOutcome::Done(Err(w))) => {
                assert_eq!(&e.to_string(), w, "follower's error")
            }
            (FlightOutcome::Abandoned, ModelOutcome::Abandoned) => {}
            (got, want) => panic!("follower got {got:?}, model says {want:?}"),
        }
    }

    pub fn step(&mut self, op: &FlightOp) {
        match op {
            FlightOp::Begin { caller, key: k } => self.begin(usize::from(*caller) % CALLERS, key(*k % 3)),
            FlightOp::Complete { caller, how } => self.complete(usize::from(*caller) % CALLERS, *how),
            FlightOp::Abandon { caller } => {
                let c = usize::from(*caller) % CALLERS;
                if let ModelCaller::Leading { key, flight, .. } = self.model_callers[c].clone() {
                    self.callers[c] = RealCaller::Idle; // drops the FlightLeader
                    self.model_callers[c] = ModelCaller::Idle;
                    self.model.counts.abandoned_flights += 1;
                    self.end_flight(&key, flight, ModelOutcome::Abandoned);
                    self.check_wakers(flight);
                }
            }
            FlightOp::Poll { caller } => self.poll(usize::from(*caller) % CALLERS),
            FlightOp::Wait { caller } => {
                let c = usize::from(*caller) % CALLERS;
                let published = match &self.model_callers[c] {
                    ModelCaller::Following { flight } => self.outcomes.get(flight).cloned(),
                    _ => None,
                };
                match published {
                    Some(want) => {
                        let RealCaller::Following { follower, .. } =
                            std::mem::replace(&mut self.callers[c], RealCaller::Idle)
                        else {
                            panic!("caller {c} is not following")
                        };
                        Self::compare_outcome(follower.wait(), &want);
                        self.model_callers[c] = ModelCaller::Idle;
                    }
                    None => self.poll(c),
                }
            }
            FlightOp::PanicFetch { key: k } => self.panic_fetch(key(*k % 3)),
            FlightOp::Cache(op) => {
                let got = apply_real(&self.cache, &self.clock, &self.model, op);
                let want = self.model.apply(op);
                assert_eq!(got, want, "answer to {op:?}");
            }
            FlightOp::Race { three, ok, stale_first } => {
                if self.races_left > 0 {
                    self.races_left -= 1;
                    race(if *three { 3 } else { 2 }, *ok, *stale_first);
                }
            }
        }
        check(&self.cache, &self.clock, &self.model, disabled_p2p());
    }

    fn begin(&mut self, c: usize, key: CacheKey) {
        if !matches!(self.model_callers[c], ModelCaller::Idle) {
            return;
        }
        let looked_up = self.model.lookup(&key);
        let begin = self.cache.begin(&key);
        let stale = match looked_up {
            crate::core::Lookup::Fresh(want) => {
                let Begin::Fresh(got) = begin else {
                    panic!("begin: model says fresh")
                };
                assert_eq!(got, want, "begin: fresh entry");
                return;
            }
            crate::core::Lookup::Stale(e) => Some(e),
            crate::core::Lookup::Miss => None,
        };
        if let Some(flight) = self.model.flights.get(&key) {
            let flight = flight.id;
            self.model.counts.coalesced += 1;
            let Begin::Follow(follower) = begin else {
                panic!("begin: model says follow flight {flight}")
            };
            assert_eq!(follower.stale(), stale.as_ref(), "follower's stale entry");
            let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
            self.callers[c] = RealCaller::Following {
                follower,
                waker,
                polled_pending: false,
            };
            self.model_callers[c] = ModelCaller::Following { flight };
        } else {
            let flight = self.next_flight;
            self.next_flight += 1;
            self.model
                .flights
                .insert(key.clone(), super::cache_model::ModelFlight { id: flight });
            let Begin::Lead(leader) = begin else {
                panic!("begin: model says lead")
            };
            assert_eq!(leader.stale(), stale.as_ref(), "leader's stale entry");
            assert_eq!(leader.key(), &key);
            self.callers[c] = RealCaller::Leading(leader);
            self.model_callers[c] = ModelCaller::Leading { key, flight, stale };
        }
    }

    fn complete(&mut self, c: usize, how: Completion) {
        let ModelCaller::Leading { key, flight, stale } = self.model_callers[c].clone() else {
            return;
        };
        let RealCaller::Leading(leader) = std::mem::replace(&mut self.callers[c], RealCaller::Idle) else {
            panic!("caller {c} is not leading")
        };
        self.model_callers[c] = ModelCaller::Idle;
        let result = self.fetched(&key, stale.as_deref(), how);
        let want: Result<Served, String> = match &result {
            Ok(f) => {
                self.model.record(match f.via {
                    Via::Upstream(api) => Event::ApiCall(api),
                    Via::NotModified => Event::Revalidated,
                    Via::Peer => Event::PeerHit,
                });
                Ok(Served {
                    entry: Arc::new(f.entry.clone()),
                    mode: CacheMode::from(f.via),
                })
            }
            Err(e) => {
                self.model.record(Event::FetchError);
                Err(e.to_string())
            }
        };
        let shared = want.clone().map(|s| (*s.entry).clone());
        let current = self.end_flight(&key, flight, ModelOutcome::Done(shared));
        let stored = match (&want, current) {
            (Ok(served), true) => self.model.store(&key, (*served.entry).clone()),
            _ => false,
        };
        let (got, got_stored) = leader.complete_stored(result);
        assert_eq!(got.map_err(|e| e.to_string()), want, "leader's answer");
        assert_eq!(got_stored.is_some(), stored, "whether the leader's answer was stored");
        self.check_wakers(flight);
    }

    fn poll(&mut self, c: usize) {
        let ModelCaller::Following { flight } = self.model_callers[c] else {
            return;
        };
        let RealCaller::Following {
            follower,
            waker,
            polled_pending,
        } = &mut self.callers[c]
        else {
            panic!("caller {c} is not following")
        };
        let w = Waker::from(waker.clone());
        let got = std::pin::Pin::new(follower).poll(&mut Context::from_waker(&w));
        match (got, self.outcomes.get(&flight)) {
            (Poll::Pending, None) => *polled_pending = true,
            (Poll::Ready(got), Some(want)) => {
                Self::compare_outcome(got, want);
                self.callers[c] = RealCaller::Idle;
                self.model_callers[c] = ModelCaller::Idle;
            }
            (got, want) => panic!("poll of flight {flight}: got {got:?}, model says {want:?}"),
        }
    }

    fn panic_fetch(&mut self, key: CacheKey) {
        if self.model.flights.contains_key(&key) {
            return; // get_or_fetch would follow and block this thread
        }
        let looked_up = self.model.lookup(&key);
        let fresh = matches!(looked_up, crate::core::Lookup::Fresh(_));
        if !fresh {
            self.model.counts.abandoned_flights += 1;
        }
        if self.unwinding {
            let cache = self.cache.clone();
            let k = key.clone();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                cache.get_or_fetch(&k, |_| panic!("planned panic in a fetch"))
            }));
            assert_eq!(
                r.is_err(),
                !fresh,
                "a fetch runs (and panics) exactly when the entry is not fresh"
            );
        } else {
            match self.cache.begin(&key) {
                Begin::Fresh(_) => assert!(fresh, "begin: model says not fresh"),
                Begin::Lead(leader) => {
                    assert!(!fresh, "begin: model says fresh");
                    drop(leader);
                }
                Begin::Follow(_) => panic!("begin followed a flight the model does not have"),
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Three long-lived racer threads: spawning threads per race cost more than
/// everything else in a fuzz run (ASan makes thread creation slow). The lock
/// makes races take turns (parallel proptests share the pool).
static WORKERS: LazyLock<Mutex<Vec<mpsc::Sender<Job>>>> = LazyLock::new(|| {
    Mutex::new(
        (0..3)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::spawn(move || rx.into_iter().for_each(|job| job()));
                tx
            })
            .collect(),
    )
});

/// `n` real threads race through `get_or_fetch` on one key of a fresh cache
/// (holding a stale entry first if `stale_first`); thread `i`'s fetch
/// succeeds with body `t{i}` when `ok[i]`. Whatever the interleaving: every
/// thread returns; fetches, results and counters add up.
pub fn race(n: usize, ok: [bool; 3], stale_first: bool) {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::new(
        CacheConfig {
            shards: 1,
            ..CacheConfig::default()
        },
        clock.clone(),
    );
    let k = key(2);
    if stale_first {
        cache.insert(
            &k,
            Entry::new("old", None, Timestamp::ZERO, Duration::ZERO, Origin::Upstream),
        );
    }
    let fetches = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Barrier::new(n));
    let (done_tx, done) = mpsc::channel();
    // Races run one at a time (a shared pool: see `WORKERS`).
    let workers = WORKERS.lock().unwrap_or_else(|p| p.into_inner());
    for (i, ok) in ok.iter().copied().enumerate().take(n) {
        let (cache, k, fetches, gate, done_tx) =
            (cache.clone(), k.clone(), fetches.clone(), gate.clone(), done_tx.clone());
        workers[i]
            .send(Box::new(move || {
                gate.wait();
                let r = cache.get_or_fetch(&k, |_| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    if ok {
                        Ok(Fetched {
                            entry: cache.new_entry(&k, format!("t{i}"), None, Origin::Upstream),
                            via: Via::Upstream(Api::Rest),
                        })
                    } else {
                        Err(FetchFailed::msg(format!("e{i}")))
                    }
                });
                let _ = done_tx.send(r);
            }))
            .expect("race worker alive");
    }
    drop(done_tx);
    // A caller stuck for good shows up as a hang (libFuzzer's -timeout).
    let results: Vec<_> = (0..n).map(|_| done.recv().expect("every racer returns")).collect();
    drop(workers);
    let fetches = fetches.load(Ordering::SeqCst);
    let s = cache.stats();
    s.check_consistency().unwrap();
    let count = |mode| results.iter().filter(|r| matches!(r, Ok(x) if x.mode == mode)).count() as u64;
    let errors = results.iter().filter(|r| r.is_err()).count() as u64;
    let (misses, hits, coalesced) = (
        count(CacheMode::Miss),
        count(CacheMode::Hit),
        count(CacheMode::Coalesced),
    );
    assert_eq!(results.len(), n, "every thread returned");
    assert_eq!(
        misses + hits + coalesced + errors,
        n as u64,
        "every result is a value or an error"
    );
    assert_eq!(
        fetches as u64,
        s.api_calls + s.fetch_errors,
        "each fetch counted once: {s:?}"
    );
    assert_eq!(misses, s.api_calls, "successful fetches: {s:?}");
    assert_eq!(hits, s.hits, "{s:?}");
    assert_eq!(s.coalesced, coalesced + (errors - s.fetch_errors), "followers: {s:?}");
    assert_eq!(
        n as u64,
        fetches as u64 + s.hits + s.coalesced,
        "each caller led, hit or followed once: {s:?}"
    );
    assert_eq!(s.lookups, n as u64, "no caller started over: {s:?}");
    assert_eq!((s.in_flight, s.abandoned_flights), (0, 0), "{s:?}");
    let stored: Vec<_> = results
        .iter()
        .flatten()
        .filter(|r| r.mode == CacheMode::Miss)
        .map(|r| r.entry.body.clone())
        .collect();
    for r in results.iter().flatten() {
        assert!(
            stored.contains(&r.entry.body),
            "{:?} was served but no leader fetched it",
            r.entry.body
        );
    }
}

/// The whole `single_flight` check. At the end every leader completes and
/// every follower must then be released.
pub fn run(setup: &CacheSetup, ops: &[FlightOp], unwinding: bool) {
    let mut h = FlightHarness::new(setup, unwinding);
    for op in ops {
        h.step(op);
    }
    for c in 0..CALLERS {
        h.step(&FlightOp::Complete {
            caller: c as u8,
            how: Completion::Error,
        });
    }
    for c in 0..CALLERS {
        h.step(&FlightOp::Wait { caller: c as u8 });
        assert!(matches!(h.model_callers[c], ModelCaller::Idle), "caller {c} is stuck");
    }
    assert_eq!(h.cache.stats().in_flight, 0);
}
