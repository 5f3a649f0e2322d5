//! Single flight: concurrent misses on one key make one fetch.
//!
//! # Protocol
//! [`Cache::begin`] looks the key up and, in the **same** critical section of
//! the key's shard, either
//! - answers a fresh entry ([`Begin::Fresh`]),
//! - joins the fetch already in flight for the key ([`Begin::Follow`],
//!   counted as `coalesced`), or
//! - registers a new flight and makes the caller its leader
//!   ([`Begin::Lead`]), handing it the stale entry, if any, for a conditional
//!   request.
//!
//! The leader fetches with **no lock held**, then calls
//! [`FlightLeader::complete`], which in one critical section removes the
//! flight, stores the entry and counts how it was obtained; only after
//! releasing the shard lock does it publish the outcome to the followers'
//! [`OutcomeCell`]. A caller arriving after the removal finds the stored
//! entry, so no window lets a second fetch start while the first one's
//! result is being stored.
//!
//! # Invalidation while the fetch runs
//! An invalidation covering the key revokes the flight
//! (`core/flight_table.rs`): a caller arriving after it
//! leads a new flight instead of following the old one, and the old
//! leader's completion, which checks the flight's generation in the same
//! critical section as the insert, hands its answer to the leader and the
//! followers that joined before the invalidation but does not store it.
//! Both fill sources go through this one check: GitHub's answer and a
//! peer's ([`Via::Peer`]).
//!
//! # When the leader fails, panics or is dropped
//! - **Fails** (the fetch returns an error): the error is handed to every
//!   follower. They asked the same question at the same time; retrying at
//!   once would only multiply the failing calls.
//! - **Panics or is dropped** (a cancelled async task): the
//!   [`FlightLeader`]'s `Drop` removes the flight and publishes `Abandoned`;
//!   each follower then starts over, and the first to get the shard lock
//!   becomes the new leader. The vanished caller's reason to stop (a
//!   disconnected client, say) is not the followers' reason, so they are not
//!   failed for it. Every follower returns: the cell is always published,
//!   on every path out of a leader.
//!
//! # Waiting without blocking the runtime
//! A [`Follower`] can be waited on by a thread ([`Follower::wait`]) or
//! awaited by an async task (it is a `Future`, woken by the publish): the
//! daemon awaits it and never parks a tokio worker. The state transitions are
//! the same either way, and loom checks both.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::cache::{Cache, Lookup, SharedLookup};
use super::entry::Entry;
use super::flight_table::{Finish, Generation};
use super::key::CacheKey;
use super::outcome::OutcomeCell;
use super::stats::{Api, Event};
use crate::sync::{Arc, StdArc};

/// A failed fetch, shared by the leader and every follower.
#[derive(Clone)]
pub struct FetchFailed(StdArc<dyn Error + Send + Sync>);

impl FetchFailed {
    /// Wraps any error.
    pub fn new(error: impl Error + Send + Sync + 'static) -> FetchFailed {
        FetchFailed(StdArc::new(error))
    }

    /// An error with just a message.
    pub fn msg(message: impl Into<String>) -> FetchFailed {
        #[derive(Debug)]
        struct Message(String);
        impl fmt::Display for Message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Error for Message {}
        FetchFailed::new(Message(message.into()))
    }

    /// The original error, if it is a `T`.
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for FetchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for FetchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Error for FetchFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// How a fetched entry was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A full answer from GitHub (cost quota).
    Upstream(Api),
    /// GitHub answered 304 to the stale entry's ETag (free); the entry is the
    /// stale one made fresh again (see [`Entry::revalidated`]).
    NotModified,
    /// From a peer.
    Peer,
}

/// A leader's fetch result.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The entry to store and serve.
    pub entry: Entry,
    /// How it was obtained.
    pub via: Via,
}

/// How an answer was served: the `X-Cache-Mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Fresh from the cache.
    Hit,
    /// Fetched from GitHub.
    Miss,
    /// A stale entry confirmed by a free 304.
    Revalidated,
    /// A stale entry served because GitHub could not be asked.
    Stale,
    /// Another caller's fetch, waited for.
    Coalesced,
    /// From a peer.
    Peer,
}

impl CacheMode {
    /// Lower-case name, as in headers and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Hit => "hit",
            CacheMode::Miss => "miss",
            CacheMode::Revalidated => "revalidated",
            CacheMode::Stale => "stale",
            CacheMode::Coalesced => "coalesced",
            CacheMode::Peer => "peer",
        }
    }
}

impl From<Via> for CacheMode {
    fn from(via: Via) -> CacheMode {
        match via {
            Via::Upstream(_) => CacheMode::Miss,
            Via::NotModified => CacheMode::Revalidated,
            Via::Peer => CacheMode::Peer,
        }
    }
}

/// An answer and how it was served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The entry (shared with the cache).
    pub entry: StdArc<Entry>,
    /// How it was served.
    pub mode: CacheMode,
}

/// What a follower learns from its leader.
#[derive(Clone, Debug)]
pub enum FlightOutcome {
    /// The leader finished: its entry or its error.
    Done(Result<StdArc<Entry>, FetchFailed>),
    /// The leader vanished: start over (see the module docs).
    Abandoned,
}

/// What [`Cache::begin`] decided for the caller.
pub enum Begin {
    /// A fresh entry: no fetch needed.
    Fresh(StdArc<Entry>),
    /// The caller must fetch and then call [`FlightLeader::complete`].
    Lead(FlightLeader),
    /// Another caller is fetching: wait for it.
    Follow(Follower),
}

/// The duty to fetch one key. Dropping it without completing (a panic, a
/// cancelled task) abandons the flight and releases the followers.
pub struct FlightLeader {
    cache: Cache,
    key: CacheKey,
    outcome: Arc<OutcomeCell<FlightOutcome>>,
    /// The shard's invalidation generation when the flight began.
    generation: u64,
    stale: Option<StdArc<Entry>>,
    completed: bool,
}

impl FlightLeader {
    /// The stale entry found, if any: send its ETag as `If-None-Match`.
    pub fn stale(&self) -> Option<&StdArc<Entry>> {
        self.stale.as_ref()
    }

    /// The key being fetched.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Finishes the flight: stores and counts the result, then releases the
    /// followers. Returns the leader's own answer. An answer whose flight an
    /// invalidation revoked is handed out but not stored (module docs).
    pub fn complete(self, result: Result<Fetched, FetchFailed>) -> Result<Served, FetchFailed> {
        self.complete_stored(result).0
    }

    /// [`FlightLeader::complete`], also saying whether the answer was
    /// stored in the cache, and at which generation of the key's shard: not
    /// when it is an error, when an invalidation revoked the flight, or when
    /// the bounds refuse it. A copy kept elsewhere (the daemon's store)
    /// should follow the cache: keep it only when stored, and drop it again
    /// when [`Cache::unchanged_since`] that generation is false.
    pub fn complete_stored(
        mut self,
        result: Result<Fetched, FetchFailed>,
    ) -> (Result<Served, FetchFailed>, Option<Generation>) {
        let result = result.map(|Fetched { entry, via }| (StdArc::new(entry), via));
        let stored = {
            let mut shard = self.cache.lock_shard(&self.key);
            // The lease check and the insert share this critical section: no
            // invalidation can fall between them.
            let finish = shard.flights.finish(&self.key, self.generation);
            match &result {
                Ok((entry, via)) => {
                    shard.counters.record(match via {
                        Via::Upstream(api) => Event::ApiCall(*api),
                        Via::NotModified => Event::Revalidated,
                        Via::Peer => Event::PeerHit,
                    });
                    let kept = finish == Finish::Current && shard.insert(&self.key, entry.clone());
                    kept.then(|| shard.flights.generation())
                }
                Err(_) => {
                    shard.counters.record(Event::FetchError);
                    None
                }
            }
        };
        self.completed = true;
        let shared = result.as_ref().map(|(entry, _)| entry.clone()).map_err(Clone::clone);
        self.outcome.publish(FlightOutcome::Done(shared));
        let served = result.map(|(entry, via)| Served {
            entry,
            mode: via.into(),
        });
        (served, stored)
    }
}

impl Drop for FlightLeader {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        {
            let mut shard = self.cache.lock_shard(&self.key);
            shard.flights.finish(&self.key, self.generation);
            shard.counters.abandoned_flights += 1;
        }
        self.outcome.publish(FlightOutcome::Abandoned);
    }
}

impl fmt::Debug for FlightLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightLeader")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A caller waiting for another caller's fetch. Wait with
/// [`Follower::wait`] (threads) or `.await` (tasks).
pub struct Follower {
    outcome: Arc<OutcomeCell<FlightOutcome>>,
    stale: Option<StdArc<Entry>>,
}

impl Follower {
    /// The stale entry found when joining, if any (to serve if the fetch
    /// fails and serving stale is acceptable).
    pub fn stale(&self) -> Option<&StdArc<Entry>> {
        self.stale.as_ref()
    }

    /// Blocks the thread until the leader finishes or vanishes.
    pub fn wait(&self) -> FlightOutcome {
        self.outcome.wait()
    }
}

impl Future for Follower {
    type Output = FlightOutcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FlightOutcome> {
        self.outcome.poll(cx)
    }
}

impl fmt::Debug for Follower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Follower").finish_non_exhaustive()
    }
}

impl Cache {
    /// Looks `key` up and decides, in one critical section, whether the
    /// caller has an answer, leads a fetch or follows one (module docs).
    /// A fresh hit is served under the shard's read lock; anything else is
    /// decided under the write lock, looking up again from the start.
    pub fn begin(&self, key: &CacheKey) -> Begin {
        let now = self.now();
        let grace = self.shared.config.stale_grace;
        if let SharedLookup::Fresh(entry) = self.read_shard(key).lookup_shared(key, now, grace) {
            return Begin::Fresh(entry);
        }
        let mut shard = self.lock_shard(key);
        let stale = match shard.lookup(key, now, grace) {
            Lookup::Fresh(entry) => return Begin::Fresh(entry),
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        // Only the key's current flight is followed: one an invalidation
        // revoked has left the table.
        if let Some(outcome) = shard.flights.current(key) {
            let outcome = outcome.clone();
            shard.counters.coalesced += 1;
            return Begin::Follow(Follower { outcome, stale });
        }
        let outcome = Arc::new(OutcomeCell::new());
        let generation = shard.flights.start(key, outcome.clone());
        drop(shard);
        Begin::Lead(FlightLeader {
            cache: self.clone(),
            key: key.clone(),
            outcome,
            generation,
            stale,
            completed: false,
        })
    }

    /// The entry for `key`: from the cache when fresh, else from the one
    /// fetch in flight for it, else by running `fetch` (with the stale entry,
    /// if any) as the leader. Blocks the calling thread while following; async
    /// callers use [`Cache::begin`] and await the [`Follower`].
    ///
    /// `fetch` may use the cache freely, except to fetch the same key again:
    /// it would follow its own flight and wait for itself.
    pub fn get_or_fetch<F>(&self, key: &CacheKey, fetch: F) -> Result<Served, FetchFailed>
    where
        F: FnOnce(Option<&Entry>) -> Result<Fetched, FetchFailed>,
    {
        loop {
            match self.begin(key) {
                Begin::Fresh(entry) => {
                    return Ok(Served {
                        entry,
                        mode: CacheMode::Hit,
                    })
                }
                Begin::Follow(follower) => match follower.wait() {
                    FlightOutcome::Done(result) => {
                        return result.map(|entry| Served {
                            entry,
                            mode: CacheMode::Coalesced,
                        })
                    }
                    FlightOutcome::Abandoned => continue,
                },
                Begin::Lead(leader) => {
                    let result = fetch(leader.stale().map(|e| &**e));
                    return leader.complete(result);
                }
            }
        }
    }
}
