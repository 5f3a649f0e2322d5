//! A shard's fetches in flight, and the invalidation generation that keeps
//! a fill begun before an invalidation out of the cache (the stale-fill
//! race).
//!
//! # The race
//! A leader's fill (an upstream fetch, or a peer's answer) runs with no lock
//! held. An invalidation covering its key can land while it runs: GitHub's
//! data changed, and the fill may carry the data from before. Storing it
//! would undo the invalidation until the TTL runs out: memcache's *stale
//! set*, which Facebook's memcache closes with leases (Nishtala et al.,
//! NSDI 2013: a miss gets a lease token, a delete invalidates the token, and
//! a set with an invalid token is refused). This table is that lease, per
//! shard.
//!
//! # The mechanism
//! Each shard has a **generation**, a counter that every invalidation
//! reaching the shard (`invalidate`, `invalidate_prefix`,
//! `invalidate_repository`, `clear`) raises by one in its critical section.
//! [`FlightTable::start`] records the flight under the current generation,
//! and the leader keeps that number (its lease token). An invalidation
//! **revokes** each flight whose key it covers: the record leaves the table
//! (it is counted as detached until its leader finishes). At completion,
//! [`FlightTable::finish`] runs in the same critical section as the insert
//! and answers [`Finish::Current`] only if the table still holds a record
//! for the key with the leader's generation; only then is the fill stored.
//!
//! Why the generation and not the record's presence alone: once a flight is
//! revoked, a new one for the same key may start and register. The
//! generation it takes is newer (the revoking invalidation raised it), so
//! the revoked leader can never mistake the new record for its own, store
//! its old answer, or end the new flight.
//!
//! # Per shard, per key: why
//! - **Global** (one counter for the cache): every invalidation would need a
//!   second lock or an atomic ordered against every shard's critical
//!   sections, and any invalidation anywhere would revoke every fill in
//!   progress.
//! - **Per shard, compared alone** (a fill stores only if the shard's
//!   generation did not move): no extra state, but an invalidation of any
//!   key in the shard would throw away every fill in that shard and make
//!   the next request of each of those keys start a second fetch.
//! - **Per shard counter + per key revocation** (this): the counter lives
//!   under the shard lock that every operation on the key already takes, so
//!   it costs one add per invalidation and one compare per completion; the
//!   revocation walks the shard's flights, which the invalidation's critical
//!   section already visits (few: one per key being fetched). An
//!   invalidation revokes exactly the flights whose keys it covers.
//!
//! # The guarantee
//! Linearize each operation on key `k` at its critical section on `k`'s
//! shard (a prefix, repository or clear invalidation is linearized per
//! shard; it is not atomic across shards, and needs not be: it covers each
//! key once). Let `I` be an invalidation covering `k`. Then:
//! 1. **No older fill is stored.** After `I`, the cache holds for `k` only
//!    entries filled by flights that began after `I` (or written by a plain
//!    `Cache::insert` after `I`).
//! 2. **No later request joins an older flight.** A `begin(k)` after `I`
//!    never follows a flight that began before `I`: it finds a later entry,
//!    follows a later flight, or leads a new one.
//! 3. Hence, once `invalidate` has returned, no `lookup` or `begin` of `k`
//!    receives as fresh (a hit or a coalesced answer) a value fetched by a
//!    flight that began before `I`.
//!
//! What is allowed: the revoked flight's leader and the followers that
//! joined it before `I` receive its answer. Their requests overlapped `I`,
//! so ordering them before `I` is linearizable. The fill is not stored.
//!
//! This is what `loom-tests/tests/stale_fill.rs` checks under loom and the
//! spin model (`model/ghcache.pml`, `-DS_STALE`) checks without a
//! preemption bound; each has a variant without the check that is rejected.

use std::collections::HashMap;

use super::flight::FlightOutcome;
use super::key::{CacheKey, PrehashedKey};
use super::outcome::OutcomeCell;
use crate::sync::Arc;

/// One in-flight fetch, as the shard records it.
pub(crate) struct FlightRecord {
    pub(crate) outcome: Arc<OutcomeCell<FlightOutcome>>,
    /// The shard's generation when the flight began: its lease token.
    generation: u64,
}

/// A shard's invalidation generation, as a leader saw it when its answer
/// was stored ([`FlightLeader::complete_stored`](super::FlightLeader::complete_stored)).
/// [`Cache::unchanged_since`](super::Cache::unchanged_since) says whether
/// an invalidation has reached the key's shard since: a copy of the answer
/// kept outside the cache (the daemon's store) is then dropped too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(pub(crate) u64);

/// How a leader's flight ended, as [`FlightTable::finish`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The flight was still the key's current one: its fill may be stored.
    Current,
    /// An invalidation covering the key revoked it: do not store.
    Revoked,
}

/// The fetches in flight in one shard, and the shard's invalidation
/// generation. Guarded by the shard's lock, like everything in the shard.
pub(crate) struct FlightTable {
    /// The current flight of each key being fetched.
    current: HashMap<CacheKey, FlightRecord, PrehashedKey>,
    /// Raised by every invalidation that reaches the shard.
    generation: u64,
    /// Flights revoked whose leader has not finished yet.
    revoked_running: u64,
}

impl FlightTable {
    pub(crate) fn new() -> FlightTable {
        FlightTable {
            current: HashMap::with_hasher(PrehashedKey),
            generation: 0,
            revoked_running: 0,
        }
    }

    /// The shard's invalidation generation now.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.generation)
    }

    /// Fetches running in the shard, current or revoked.
    pub(crate) fn running(&self) -> u64 {
        self.current.len() as u64 + self.revoked_running
    }

    /// The outcome cell of `key`'s current flight, to follow it.
    pub(crate) fn current(&self, key: &CacheKey) -> Option<&Arc<OutcomeCell<FlightOutcome>>> {
        self.current.get(key).map(|record| &record.outcome)
    }

    /// Registers a flight for `key`, which must have none, and returns its
    /// generation (the leader's token for [`FlightTable::finish`]).
    pub(crate) fn start(&mut self, key: &CacheKey, outcome: Arc<OutcomeCell<FlightOutcome>>) -> u64 {
        let generation = self.generation;
        let previous = self.current.insert(key.clone(), FlightRecord { outcome, generation });
        debug_assert!(previous.is_none(), "one current flight per key");
        generation
    }

    /// Ends the leader's flight for `key` begun at `generation`: removes it
    /// if it is still current (a completion or an abandonment), or accounts
    /// for a revoked one. A newer flight of the key is left alone.
    pub(crate) fn finish(&mut self, key: &CacheKey, generation: u64) -> Finish {
        match self.current.get(key) {
            Some(record) if record.generation == generation => {
                self.current.remove(key);
                Finish::Current
            }
            _ => {
                debug_assert!(self.revoked_running > 0, "a revoked flight was counted");
                self.revoked_running -= 1;
                Finish::Revoked
            }
        }
    }

    /// An invalidation of `key` reached the shard: raises the generation and
    /// revokes the key's flight, if any.
    pub(crate) fn invalidate(&mut self, key: &CacheKey) {
        self.generation += 1;
        if self.current.remove(key).is_some() {
            self.revoked_running += 1;
        }
    }

    /// An invalidation of every key for which `doomed` holds reached the
    /// shard: raises the generation and revokes those keys' flights.
    pub(crate) fn invalidate_where(&mut self, doomed: impl Fn(&CacheKey) -> bool) {
        self.generation += 1;
        let before = self.current.len();
        self.current.retain(|key, _| !doomed(key));
        self.revoked_running += (before - self.current.len()) as u64;
    }
}
