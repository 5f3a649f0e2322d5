//! Counters and the statistics snapshot.
//!
//! Every counter lives in the shard of the key it is about and is bumped in
//! the same critical section as the change it counts, so an increment can
//! never be lost and a snapshot taken with every shard locked (see
//! [`Cache::stats`](super::Cache::stats)) is consistent: for example
//! `hits + stale_hits + misses == lookups` holds in every snapshot, not just
//! eventually. No counter is ever reset: clearing entries only adds to
//! `invalidations`.

use serde::{Deserialize, Serialize};

use super::lifecycle::P2pStatus;
use crate::sync::{stripe, AtomicU64, CachePadded, Ordering, STRIPES};

/// Which GitHub API an upstream call used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// The REST API.
    Rest,
    /// The GraphQL API.
    GraphQl,
}

/// A countable event that is not a lookup, insert or invalidation (those
/// count themselves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A call to GitHub that cost quota.
    ApiCall(Api),
    /// A conditional request answered 304 Not Modified (free).
    Revalidated,
    /// An entry obtained from a peer instead of GitHub.
    PeerHit,
    /// A stale entry served because GitHub could not be asked (error, rate
    /// limit).
    StaleServed,
    /// A fetch that failed.
    FetchError,
}

/// The counts of the lookups a shard settles under its *read* lock (fresh
/// hits and misses; see [`Cache::lookup`](super::Cache::lookup)).
///
/// Readers share the lock, so these are atomics, and each thread bumps its
/// own stripe ([`stripe`]), on its own cache line: two threads' hits write
/// different lines. Every bump happens while its reader holds the shard's
/// read lock, and they are only summed by [`ReadCounters::add_to`] with the
/// shard's write lock held, when no reader is inside: the sum is every
/// lookup settled before that moment and none after, so a snapshot still
/// sees whole lookups (`hits + stale_hits + misses == lookups`).
pub(crate) struct ReadCounters {
    stripes: [CachePadded<Stripe>; STRIPES],
}

#[derive(Default)]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadCounters {
    pub(crate) fn new() -> ReadCounters {
        ReadCounters {
            stripes: std::array::from_fn(|_| CachePadded::new(Stripe::default())),
        }
    }

    /// Counts a fresh hit (read lock held). `fetch_add`, not load + store:
    /// threads beyond [`STRIPES`] share a stripe.
    pub(crate) fn hit(&self) {
        self.stripes[stripe()].hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a miss (read lock held).
    pub(crate) fn miss(&self) {
        self.stripes[stripe()].misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds every stripe's counts to `into` as lookups, hits and misses.
    /// Takes `&mut self`: only the write lock's holder can call it, so no
    /// reader is counting meanwhile.
    pub(crate) fn add_to(&mut self, into: &mut Counters) {
        for stripe in &self.stripes {
            let (hits, misses) = (
                stripe.hits.load(Ordering::Relaxed),
                stripe.misses.load(Ordering::Relaxed),
            );
            into.lookups += hits + misses;
            into.hits += hits;
            into.misses += misses;
        }
    }
}

/// The counters of one shard that change under its write lock. Plain
/// integers: the lock guards them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) lookups: u64,
    pub(crate) hits: u64,
    pub(crate) stale_hits: u64,
    pub(crate) misses: u64,
    pub(crate) coalesced: u64,
    pub(crate) peer_hits: u64,
    pub(crate) expirations: u64,
    pub(crate) evictions: u64,
    pub(crate) revalidations: u64,
    pub(crate) api_calls_rest: u64,
    pub(crate) api_calls_graphql: u64,
    pub(crate) stale_served: u64,
    pub(crate) fetch_errors: u64,
    pub(crate) abandoned_flights: u64,
    pub(crate) inserts: u64,
    pub(crate) rejected_inserts: u64,
    pub(crate) invalidations: u64,
}

impl Counters {
    pub(crate) fn record(&mut self, event: Event) {
        match event {
            Event::ApiCall(Api::Rest) => self.api_calls_rest += 1,
            Event::ApiCall(Api::GraphQl) => self.api_calls_graphql += 1,
            Event::Revalidated => self.revalidations += 1,
            Event::PeerHit => self.peer_hits += 1,
            Event::StaleServed => self.stale_served += 1,
            Event::FetchError => self.fetch_errors += 1,
        }
    }

    pub(crate) fn add(&mut self, other: &Counters) {
        let Counters {
            lookups,
            hits,
            stale_hits,
            misses,
            coalesced,
            peer_hits,
            expirations,
            evictions,
            revalidations,
            api_calls_rest,
            api_calls_graphql,
            stale_served,
            fetch_errors,
            abandoned_flights,
            inserts,
            rejected_inserts,
            invalidations,
        } = *other;
        self.lookups += lookups;
        self.hits += hits;
        self.stale_hits += stale_hits;
        self.misses += misses;
        self.coalesced += coalesced;
        self.peer_hits += peer_hits;
        self.expirations += expirations;
        self.evictions += evictions;
        self.revalidations += revalidations;
        self.api_calls_rest += api_calls_rest;
        self.api_calls_graphql += api_calls_graphql;
        self.stale_served += stale_served;
        self.fetch_errors += fetch_errors;
        self.abandoned_flights += abandoned_flights;
        self.inserts += inserts;
        self.rejected_inserts += rejected_inserts;
        self.invalidations += invalidations;
    }
}

/// One owned, consistent picture of the cache, taken in one critical
/// section. Serialises to the JSON that `gh_get_cache_stats` returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Lookups answered (plain lookups and the first step of every fetch).
    pub lookups: u64,
    /// Lookups answered with a fresh entry.
    pub hits: u64,
    /// Lookups that found a stale entry (to revalidate).
    pub stale_hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Callers that waited for another caller's fetch instead of fetching.
    pub coalesced: u64,
    /// Entries obtained from peers instead of GitHub.
    pub peer_hits: u64,
    /// Entries dropped for being older than TTL + stale grace.
    pub expirations: u64,
    /// Entries dropped to stay within the entry or byte bound.
    pub evictions: u64,
    /// Conditional requests answered 304 (free).
    pub revalidations: u64,
    /// Upstream calls that cost quota: REST + GraphQL.
    pub api_calls: u64,
    /// REST calls that cost quota.
    pub api_calls_rest: u64,
    /// GraphQL calls that cost quota.
    pub api_calls_graphql: u64,
    /// Reads answered without spending quota:
    /// `hits + coalesced + revalidations + peer_hits + stale_served`.
    pub api_calls_saved: u64,
    /// Stale entries served because GitHub could not be asked.
    pub stale_served: u64,
    /// Fetches that failed.
    pub fetch_errors: u64,
    /// Fetches whose leader vanished (panicked or was dropped); their
    /// followers elected a new leader.
    pub abandoned_flights: u64,
    /// Entries stored.
    pub inserts: u64,
    /// Entries refused for being larger than a shard's byte bound.
    pub rejected_inserts: u64,
    /// Entries removed by invalidate, invalidate-prefix and clear.
    pub invalidations: u64,
    /// Fetches in progress.
    pub in_flight: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (see [`Entry::weight`](super::Entry::weight)).
    pub bytes: u64,
    /// Entry bound.
    pub max_entries: u64,
    /// Byte bound.
    pub max_bytes: u64,
    /// The P2P lifecycle: state, and peer id when running.
    pub p2p: P2pStatus,
}

impl StatsSnapshot {
    pub(crate) fn from_parts(
        c: &Counters,
        in_flight: u64,
        entries: u64,
        bytes: u64,
        max_entries: u64,
        max_bytes: u64,
        p2p: P2pStatus,
    ) -> StatsSnapshot {
        StatsSnapshot {
            lookups: c.lookups,
            hits: c.hits,
            stale_hits: c.stale_hits,
            misses: c.misses,
            coalesced: c.coalesced,
            peer_hits: c.peer_hits,
            expirations: c.expirations,
            evictions: c.evictions,
            revalidations: c.revalidations,
            api_calls: c.api_calls_rest + c.api_calls_graphql,
            api_calls_rest: c.api_calls_rest,
            api_calls_graphql: c.api_calls_graphql,
            api_calls_saved: c.hits + c.coalesced + c.revalidations + c.peer_hits + c.stale_served,
            stale_served: c.stale_served,
            fetch_errors: c.fetch_errors,
            abandoned_flights: c.abandoned_flights,
            inserts: c.inserts,
            rejected_inserts: c.rejected_inserts,
            invalidations: c.invalidations,
            in_flight,
            entries,
            bytes,
            max_entries,
            max_bytes,
            p2p,
        }
    }

    /// Checks the invariants every snapshot must satisfy; the error names
    /// the first one broken. Used by tests, loom models and fuzzers.
    pub fn check_consistency(&self) -> Result<(), String> {
        let rules: [(&str, bool); 8] = [
            (
                "hits + stale_hits + misses == lookups",
                self.hits + self.stale_hits + self.misses == self.lookups,
            ),
            (
                "coalesced <= stale_hits + misses",
                self.coalesced <= self.stale_hits + self.misses,
            ),
            (
                "api_calls == api_calls_rest + api_calls_graphql",
                self.api_calls == self.api_calls_rest + self.api_calls_graphql,
            ),
            (
                "api_calls_saved == hits + coalesced + revalidations + peer_hits + stale_served",
                self.api_calls_saved
                    == self.hits + self.coalesced + self.revalidations + self.peer_hits + self.stale_served,
            ),
            ("entries <= max_entries", self.entries <= self.max_entries),
            ("bytes <= max_bytes", self.bytes <= self.max_bytes),
            (
                "entries <= inserts - evictions - expirations - invalidations",
                self.entries + self.evictions + self.expirations + self.invalidations <= self.inserts,
            ),
            (
                "peer_id present exactly when running",
                self.p2p.peer_id.is_some() == (self.p2p.phase == super::P2pPhase::Running),
            ),
        ];
        match rules.iter().find(|(_, holds)| !holds) {
            None => Ok(()),
            Some((rule, _)) => Err(format!("stats invariant broken: {rule} in {self:?}")),
        }
    }
}
