//! Known-bad variants: classic lock mistakes of a cache with one lock around
//! its state, rebuilt in miniature with loom's primitives, each of which the
//! checker must reject. They live here, never in `src/`. Each is the correct
//! design with one thing changed, named in its doc comment.
//!
//! Their state is shared through std's `Arc` (not loom's): when loom aborts
//! an execution on a deadlock, a loom `Arc` still held by a parked thread can
//! abort the whole test binary instead of failing the one test.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Condvar, Mutex};
use loom::thread;

#[derive(Default)]
struct Counters {
    hits: usize,
    misses: usize,
}

struct SeedCache {
    inner: Mutex<Counters>,
}

impl SeedCache {
    fn new() -> Arc<Self> {
        Arc::new(SeedCache {
            inner: Mutex::new(Counters::default()),
        })
    }

    /// BUG (a stats call that hangs): a helper that takes the lock,
    /// called by a method that already holds it.
    fn lookups(&self) -> usize {
        let c = self.inner.lock().unwrap();
        c.hits + c.misses
    }

    fn stats(&self) -> (usize, usize) {
        let c = self.inner.lock().unwrap();
        (c.hits, self.lookups())
    }

    /// BUG (callback under the lock): the fetch runs with the lock held.
    fn get_or_fetch(&self, fetch: impl FnOnce() -> usize) -> usize {
        let mut c = self.inner.lock().unwrap();
        c.misses += 1;
        fetch()
    }
}

/// Stats re-taking a non-reentrant lock. Correct design: helpers
/// take the guarded data (`&mut Shard`), never `&self`.
#[test]
#[should_panic(expected = "deadlock")]
fn stats_retaking_its_own_lock_deadlocks() {
    loom::model(|| {
        let cache = SeedCache::new();
        cache.stats();
    });
}

/// A fetch callback run under the cache lock that calls back into the
/// cache. Correct design: `begin` releases the lock before the fetch.
#[test]
#[should_panic(expected = "deadlock")]
fn callback_under_the_lock_that_calls_stats_deadlocks() {
    loom::model(|| {
        let cache = SeedCache::new();
        let inner = cache.clone();
        cache.get_or_fetch(move || inner.stats().0);
    });
}

/// Check-then-act P2P init: "is it started?" and "mark it started" in two
/// critical sections with the start between them. Correct design: the
/// caller that moves the state to `Starting` in one critical section is the
/// only one that starts.
#[test]
#[should_panic(expected = "two P2P hosts")]
fn check_then_act_init_starts_two_hosts() {
    loom::model(|| {
        let started = Arc::new(Mutex::new(false));
        let hosts = Arc::new(AtomicUsize::new(0));
        let init = {
            let (started, hosts) = (started.clone(), hosts.clone());
            move || {
                let already = *started.lock().unwrap();
                if !already {
                    hosts.fetch_add(1, Ordering::SeqCst);
                    *started.lock().unwrap() = true;
                }
            }
        };
        let other = thread::spawn(init.clone());
        init();
        other.join().unwrap();
        assert!(hosts.load(Ordering::SeqCst) <= 1, "two P2P hosts started");
    });
}

/// Single flight whose follower checks "done" outside the lock and whose
/// leader notifies without storing state under it: the notification can fall
/// between the check and the wait. Correct design: `OutcomeCell` checks the
/// stored value under its lock before waiting.
#[test]
#[should_panic(expected = "deadlock")]
fn single_flight_wakeup_can_be_lost() {
    loom::model(|| {
        let done = Arc::new(AtomicBool::new(false));
        let lock = Arc::new(Mutex::new(()));
        let ready = Arc::new(Condvar::new());
        let leader = {
            let (done, ready) = (done.clone(), ready.clone());
            thread::spawn(move || {
                done.store(true, Ordering::SeqCst);
                ready.notify_all();
            })
        };
        if !done.load(Ordering::SeqCst) {
            let guard = lock.lock().unwrap();
            let _guard = ready.wait(guard).unwrap();
        }
        leader.join().unwrap();
    });
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Idle,
    Starting,
    Running,
    Stopped,
}

/// Shutdown that only stops a *running* host and ignores a start in
/// progress: the start completes after shutdown returned, leaving a host
/// running. Correct design: shutdown records the request and waits for the
/// starter, which stops its host before publishing.
#[test]
#[should_panic(expected = "host running after shutdown")]
fn shutdown_that_ignores_a_start_in_progress_leaves_a_host_running() {
    loom::model(|| {
        let phase = Arc::new(Mutex::new(Phase::Idle));
        let running = Arc::new(AtomicUsize::new(0));
        let starter = {
            let (phase, running) = (phase.clone(), running.clone());
            thread::spawn(move || {
                {
                    let mut p = phase.lock().unwrap();
                    if *p != Phase::Idle {
                        return;
                    }
                    *p = Phase::Starting;
                }
                running.fetch_add(1, Ordering::SeqCst);
                *phase.lock().unwrap() = Phase::Running;
            })
        };
        {
            let mut p = phase.lock().unwrap();
            if *p == Phase::Running {
                running.fetch_sub(1, Ordering::SeqCst);
            }
            *p = Phase::Stopped;
        }
        starter.join().unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 0, "host running after shutdown");
    });
}

/// A counter bumped as load-then-store instead of inside the critical
/// section (or with `fetch_add`): two increments can become one. Correct
/// design: counters live in the shard and change under its lock.
#[test]
#[should_panic(expected = "lost increment")]
fn non_atomic_counter_increment_loses_updates() {
    loom::model(|| {
        let api_calls = Arc::new(AtomicUsize::new(0));
        let bump = {
            let api_calls = api_calls.clone();
            move || {
                let seen = api_calls.load(Ordering::SeqCst);
                api_calls.store(seen + 1, Ordering::SeqCst);
            }
        };
        let other = thread::spawn(bump.clone());
        bump();
        other.join().unwrap();
        assert_eq!(api_calls.load(Ordering::SeqCst), 2, "lost increment");
    });
}

/// A clear that replaces the counters instead of clearing entries, so the
/// next increment crashes. Correct design: clear removes entries
/// only; counters are never reset.
#[test]
#[should_panic(expected = "counters gone")]
fn clear_that_drops_the_counters_breaks_the_next_increment() {
    loom::model(|| {
        let counters: Arc<Mutex<Option<Counters>>> = Arc::new(Mutex::new(Some(Counters::default())));
        let clearer = {
            let counters = counters.clone();
            thread::spawn(move || *counters.lock().unwrap() = None)
        };
        clearer.join().unwrap();
        counters.lock().unwrap().as_mut().expect("counters gone").hits += 1;
    });
}

/// Shutdown that records `Stopped` before the host is actually stopped
/// (the stop runs after the lock is released, as it must): a second,
/// concurrent shutdown sees `Stopped` and returns while the host still runs.
/// This was in ghcache's own first version of the lifecycle; the spin model
/// (`model/`, variant `AS_IS_STOPPED_EARLY`) found it. Correct design: an
/// intermediate `Stopping` state that later shutdowns wait on.
#[test]
#[should_panic(expected = "host running after shutdown")]
fn shutdown_that_records_stopped_before_stopping_lets_another_return_early() {
    loom::model(|| {
        let phase = Arc::new(Mutex::new(Phase::Running));
        let running = Arc::new(AtomicUsize::new(1));
        let shutdown = {
            let (phase, running) = (phase.clone(), running.clone());
            move || {
                let was_running = {
                    let mut p = phase.lock().unwrap();
                    let was = *p == Phase::Running;
                    *p = Phase::Stopped;
                    was
                };
                if was_running {
                    running.fetch_sub(1, Ordering::SeqCst);
                }
                assert_eq!(running.load(Ordering::SeqCst), 0, "host running after shutdown");
            }
        };
        let other = thread::spawn(shutdown.clone());
        shutdown();
        other.join().unwrap();
    });
}

/// A slab of cache slots, as S3-FIFO's: key and read bit per slot, freed
/// slots reused.
struct Slots {
    key: [u32; 1],
    read: [bool; 1],
}

/// A read bit set after the shard lock is released (to keep the write off
/// the locked path): between the lookup and the write, an eviction frees
/// the slot and an insert reuses it, so the bit lands on a key nobody read,
/// which then outlives hotter keys. Correct design: the read counter changes
/// in the lookup's own critical section (`S3Fifo::get` under the shard
/// lock), and only when below the top, so a hit on a hot key writes nothing.
#[test]
#[should_panic(expected = "read bit on a key never read")]
fn read_bit_set_after_the_lock_marks_another_key() {
    loom::model(|| {
        let shard = Arc::new(Mutex::new(Slots {
            key: [1],
            read: [false],
        }));
        let reader = {
            let shard = shard.clone();
            thread::spawn(move || {
                let slot = {
                    let s = shard.lock().unwrap();
                    s.key.iter().position(|&k| k == 1)
                };
                if let Some(i) = slot {
                    shard.lock().unwrap().read[i] = true;
                }
            })
        };
        {
            // Insert key 2 into a full shard: key 1 is unread, so it goes,
            // and key 2 takes its slot.
            let mut s = shard.lock().unwrap();
            if !s.read[0] {
                s.key[0] = 2;
                s.read[0] = false;
            }
        }
        reader.join().unwrap();
        let s = shard.lock().unwrap();
        assert!(!(s.key[0] == 2 && s.read[0]), "read bit on a key never read");
    });
}
