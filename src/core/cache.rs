//! The cache: sharded entries, their counters and in-flight fetches.
//!
//! # Locks
//! [`Cache`] holds `N` shard locks and one lifecycle lock (plus the leaf lock
//! inside each [`OutcomeCell`](super::outcome)). The lock order is
//!
//! ```text
//! shard[0] < shard[1] < ... < shard[N-1] < lifecycle
//! leaves, never held with another lock: each OutcomeCell's lock, the process registry (Node::init)
//! ```
//!
//! A shard lock is a reader-writer lock ([`ShardLock`]: one stripe per
//! thread, so readers write only their own cache line). Every operation on
//! a key takes exactly one shard lock, once: a lookup (and the first step of
//! [`Cache::begin`]) takes it for reading and settles a fresh hit or a miss
//! there; anything else, including a lookup that found a stale or expired
//! entry, takes it for writing, after the read guard is dropped (never an
//! upgrade while holding it), and looks again from the start. Only
//! [`Cache::stats`] takes more than one: all shards' write locks in
//! ascending order, then the lifecycle lock. P2P start and shutdown take
//! only the lifecycle lock. No code takes a lock while holding a lock that
//! comes later in the order (nor the same one twice), so there is no cycle
//! and no deadlock.
//!
//! # What a hit writes
//! Under the read lock a fresh hit writes: its thread's stripe of the
//! read lock and of the hit counter ([`ReadCounters`], each on its own cache
//! line), the entry's read counter only while it is below the top, and the
//! entry's reference count (the `Arc` it hands out). No other thread's line
//! and no shared shard line. Counts made under the read lock are atomics
//! summed by [`Cache::stats`] under the write locks, so a snapshot still
//! holds whole operations only.
//!
//! Helpers that need a lock held take the guarded data (`&mut Shard`), never
//! `&self`: a function that can be called with the lock held cannot take it
//! again, by construction. No critical section calls a callback, the clock,
//! a waker, or does I/O.
//!
//! # Bounds and eviction
//! Each shard holds at most `max_entries / N` entries and `max_bytes / N`
//! bytes (the remainders go to the first shards), so the totals never exceed
//! the configured bounds. Within a shard, eviction is S3-FIFO (amortised
//! O(1); see [`s3fifo`](super::s3fifo) for the policy and why): inserting
//! past a bound evicts until both bounds hold, never the entry just written.
//! No list is relinked on a read. Keys spread evenly over shards (by hash), so
//! eviction starts close to the global bound; with few keys and many shards it
//! may start earlier. An entry heavier than a shard's byte bound is refused.

use std::time::Duration;

use super::clock::{Clock, Timestamp};
use super::entry::{Entry, Freshness, TtlPolicy};
use super::flight_table::FlightTable;
use super::key::{CacheKey, Operation};
use super::lifecycle::{Lifecycle, LifecycleConfig};
#[cfg(any(test, fuzzing))]
use super::s3fifo::Queue;
use super::s3fifo::S3Fifo;
use super::stats::{Counters, Event, ReadCounters, StatsSnapshot};
use crate::sync::{lock, read, write, Arc, Mutex, ShardLock, ShardReadGuard, ShardWriteGuard, StdArc};

/// Sizing and freshness settings of a [`Cache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries held at once.
    pub max_entries: usize,
    /// Most bytes held at once (see [`Entry::weight`]).
    pub max_bytes: usize,
    /// Number of independently locked shards (at least 1, at most
    /// `max_entries`).
    pub shards: usize,
    /// TTL per operation.
    pub ttl: TtlPolicy,
    /// How long past its TTL an entry is kept for revalidation.
    pub stale_grace: Duration,
}

impl Default for CacheConfig {
    /// 10,000 entries, 256 MiB, 16 shards, default TTLs, 24 h stale grace.
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            max_bytes: 256 << 20,
            shards: 16,
            ttl: TtlPolicy::default(),
            stale_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a lookup found. Entries are shared, not copied: a hit costs one
/// reference count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry: serve it.
    Fresh(StdArc<Entry>),
    /// A stale entry: revalidate (its ETag makes the request free when
    /// unchanged) or serve it when GitHub cannot be asked.
    Stale(StdArc<Entry>),
    /// Nothing usable.
    Miss,
}

/// One lock's worth of the cache. Everything here is guarded by the shard's
/// reader-writer lock. Methods that take `&mut self` run with the write
/// lock held; the two that take `&self` ([`Shard::lookup_shared`] and
/// [`Shard::unchanged_since`]) run under the read lock and write nothing but
/// atomics made for it (an entry's read counter, the read counters).
pub(crate) struct Shard {
    /// The entries, their bytes, bounds and eviction order.
    entries: S3Fifo<StdArc<Entry>>,
    /// The fetches in flight and the invalidation generation
    /// ([`flight_table`](super::flight_table)).
    pub(crate) flights: FlightTable,
    /// Counts of everything done under the write lock.
    pub(crate) counters: Counters,
    /// Counts of the lookups settled under the read lock.
    reads: ReadCounters,
}

/// What a lookup under the read lock settled. Only a fresh hit and an absent
/// key are settled there; a stale or expired entry is left to the write lock
/// (an expired one is removed, a stale one may start a fetch), which looks
/// again from the start.
pub(crate) enum SharedLookup {
    /// Counted as a hit, and as a read by the policy.
    Fresh(StdArc<Entry>),
    /// Not held; nothing counted (the caller counts a miss, or redoes the
    /// lookup under the write lock).
    Absent,
    /// Stale or expired; nothing counted or marked.
    Unsettled,
}

impl Shard {
    fn new(max_entries: usize, max_bytes: usize) -> Shard {
        Shard {
            entries: S3Fifo::new(max_entries, max_bytes),
            flights: FlightTable::new(),
            counters: Counters::default(),
            reads: ReadCounters::new(),
        }
    }

    /// Looks `key` up at `now` with only the read lock held: a fresh hit is
    /// counted and marked read; anything else is left to the caller (see
    /// [`SharedLookup`]).
    pub(crate) fn lookup_shared(&self, key: &CacheKey, now: Timestamp, stale_grace: Duration) -> SharedLookup {
        match self.entries.peek(key) {
            Some((entry, mark)) if entry.freshness(now, stale_grace) == Freshness::Fresh => {
                mark.mark_read();
                self.reads.hit();
                SharedLookup::Fresh(entry.clone())
            }
            Some(_) => SharedLookup::Unsettled,
            None => SharedLookup::Absent,
        }
    }

    /// The invalidation generation, read under the read lock.
    fn unchanged_since(&self, generation: super::Generation) -> bool {
        self.flights.generation() == generation
    }

    /// Looks `key` up at `now`, counting the outcome and dropping an expired
    /// entry.
    pub(crate) fn lookup(&mut self, key: &CacheKey, now: Timestamp, stale_grace: Duration) -> Lookup {
        self.counters.lookups += 1;
        let found = self
            .entries
            .get(key)
            .map(|entry| (entry.freshness(now, stale_grace), entry.clone()));
        match found {
            Some((Freshness::Fresh, entry)) => {
                self.counters.hits += 1;
                Lookup::Fresh(entry)
            }
            Some((Freshness::Stale, entry)) => {
                self.counters.stale_hits += 1;
                Lookup::Stale(entry)
            }
            Some((Freshness::Expired, _)) => {
                self.remove_entry(key);
                self.counters.expirations += 1;
                self.counters.misses += 1;
                Lookup::Miss
            }
            None => {
                self.counters.misses += 1;
                Lookup::Miss
            }
        }
    }

    /// Stores `entry` under `key`, evicting to stay within the bounds.
    /// Returns whether it was stored.
    pub(crate) fn insert(&mut self, key: &CacheKey, entry: StdArc<Entry>) -> bool {
        let weight = entry.weight(key);
        if weight > self.entries.max_bytes() {
            // Refused; an older answer for the same key is outdated now.
            if self.remove_entry(key).is_some() {
                self.counters.evictions += 1;
            }
            self.counters.rejected_inserts += 1;
            return false;
        }
        self.entries.insert(key.clone(), entry, weight);
        self.counters.inserts += 1;
        // The new entry fits alone and is never the victim, so it stays.
        while self.entries.evict().is_some() {
            self.counters.evictions += 1;
        }
        true
    }

    /// Removes `key`'s entry (uncounted; the caller counts why).
    fn remove_entry(&mut self, key: &CacheKey) -> Option<StdArc<Entry>> {
        self.entries.remove(key)
    }

    fn invalidate(&mut self, key: &CacheKey) -> bool {
        self.flights.invalidate(key);
        let removed = self.remove_entry(key).is_some();
        self.counters.invalidations += u64::from(removed);
        removed
    }

    fn invalidate_where(&mut self, doomed: impl Fn(&CacheKey) -> bool) -> usize {
        self.flights.invalidate_where(&doomed);
        let removed = self.entries.remove_where(doomed);
        self.counters.invalidations += removed.len() as u64;
        removed.len()
    }

    fn clear(&mut self) -> usize {
        self.flights.invalidate_where(|_| true);
        let removed = self.entries.len();
        self.entries.clear();
        self.counters.invalidations += removed as u64;
        removed
    }

    #[cfg(any(test, fuzzing))]
    fn policy_state(&self) -> Vec<(CacheKey, Queue, u8)> {
        self.entries.state()
    }
}

/// State shared by every handle to one cache.
pub(crate) struct Shared {
    pub(crate) shards: Box<[ShardLock<Shard>]>,
    pub(crate) lifecycle: Mutex<Lifecycle>,
    pub(crate) clock: StdArc<dyn Clock>,
    pub(crate) config: CacheConfig,
}

/// The cache core: a cheap-to-clone handle to shared, sharded state.
///
/// A `Cache` made with [`Cache::new`] is local-only: its P2P lifecycle is
/// `disabled` and cannot be started. The process's P2P-capable cache is the
/// [`Node`](super::Node), of which there is one per process.
#[derive(Clone)]
pub struct Cache {
    pub(crate) shared: Arc<Shared>,
}

impl Cache {
    /// A local-only cache.
    pub fn new(config: CacheConfig, clock: StdArc<dyn Clock>) -> Cache {
        Cache::with_lifecycle(config, clock, LifecycleConfig::disabled())
    }

    pub(crate) fn with_lifecycle(config: CacheConfig, clock: StdArc<dyn Clock>, p2p: LifecycleConfig) -> Cache {
        let max_entries = config.max_entries.max(1);
        let n = config.shards.clamp(1, max_entries);
        let share = |total: usize, i: usize| total / n + usize::from(i < total % n);
        let shards = (0..n)
            .map(|i| ShardLock::new(Shard::new(share(max_entries, i).max(1), share(config.max_bytes, i))))
            .collect();
        Cache {
            shared: Arc::new(Shared {
                shards,
                lifecycle: Mutex::new(Lifecycle::new(p2p)),
                clock,
                config: CacheConfig {
                    max_entries,
                    shards: n,
                    ..config
                },
            }),
        }
    }

    /// The settings in force (shard count and bounds as adjusted).
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// The cache's clock reading.
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// The TTL for entries of `op`.
    pub fn ttl(&self, op: Operation) -> Duration {
        self.shared.config.ttl.ttl(op)
    }

    /// A fresh entry for `key` with this cache's TTL for its operation,
    /// fetched now.
    pub fn new_entry(
        &self,
        key: &CacheKey,
        body: impl Into<bytes::Bytes>,
        etag: Option<super::ETag>,
        origin: super::Origin,
    ) -> Entry {
        Entry::new(body, etag, self.now(), self.ttl(key.operation()), origin)
    }

    /// Looks `key` up; see [`Lookup`].
    ///
    /// A fresh hit and a miss are settled under the shard's read lock
    /// (readers do not wait for each other, and write only their own cache
    /// lines: see [`crate::sync::ShardLock`]); a stale or expired entry is
    /// looked up again under the write lock, which decides on what it finds
    /// then (an insert may have replaced the entry meanwhile).
    pub fn lookup(&self, key: &CacheKey) -> Lookup {
        let now = self.now();
        let grace = self.shared.config.stale_grace;
        {
            let shard = self.read_shard(key);
            match shard.lookup_shared(key, now, grace) {
                SharedLookup::Fresh(entry) => return Lookup::Fresh(entry),
                SharedLookup::Absent => {
                    shard.reads.miss();
                    return Lookup::Miss;
                }
                SharedLookup::Unsettled => {}
            }
        }
        self.lock_shard(key).lookup(key, now, grace)
    }

    /// Stores `entry` (an [`Origin::Peer`](super::Origin::Peer) entry also
    /// counts a peer hit: it was obtained without asking GitHub, even if the
    /// bounds refuse to keep it). Returns whether it was stored (see the
    /// bounds in the module docs).
    pub fn insert(&self, key: &CacheKey, entry: Entry) -> bool {
        let from_peer = entry.origin == super::Origin::Peer;
        let mut shard = self.lock_shard(key);
        if from_peer {
            shard.counters.record(Event::PeerHit);
        }
        shard.insert(key, StdArc::new(entry))
    }

    /// Drops `key`'s entry and revokes a fetch of it in progress: its
    /// answer will not be stored, and later callers start a new fetch
    /// (`core/flight_table.rs`). Returns whether there was
    /// an entry.
    pub fn invalidate(&self, key: &CacheKey) -> bool {
        self.lock_shard(key).invalidate(key)
    }

    /// Drops every entry whose key starts with `prefix` (e.g. `runners:`),
    /// one shard at a time, and revokes the fetches of such keys in
    /// progress (as [`Cache::invalidate`]). O(entries). Returns how many.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        self.each_shard(|shard| shard.invalidate_where(|key| key.has_prefix(prefix)))
    }

    /// Drops every entry whose key names repository `repo` (see
    /// [`CacheKey::names_repository`]), and revokes their fetches in
    /// progress, one shard at a time: the same lock path as
    /// [`Cache::invalidate_prefix`]. O(entries). Returns how many.
    pub fn invalidate_repository(&self, repo: &str) -> usize {
        self.each_shard(|shard| shard.invalidate_where(|key| key.names_repository(repo)))
    }

    /// Drops every entry whose key `doomed` accepts, and revokes their
    /// fetches in progress, one shard at a time: the same lock path as
    /// [`Cache::invalidate_prefix`]. `doomed` runs with a shard lock held,
    /// so it must be a pure test of the key (no call into the cache, no
    /// I/O). O(entries). Returns how many.
    pub fn invalidate_matching(&self, doomed: impl Fn(&CacheKey) -> bool) -> usize {
        self.each_shard(|shard| shard.invalidate_where(&doomed))
    }

    /// Drops every entry and revokes every fetch in progress, one shard at
    /// a time. Counters are kept. Returns how many.
    pub fn clear(&self) -> usize {
        self.each_shard(Shard::clear)
    }

    /// Whether no invalidation has reached `key`'s shard since `generation`
    /// (see [`FlightLeader::complete_stored`](super::FlightLeader::complete_stored)).
    /// False after any invalidation of the shard, so a caller acting on
    /// `false` (dropping a copy) may drop one it could have kept, never
    /// the reverse.
    pub fn unchanged_since(&self, key: &CacheKey, generation: super::Generation) -> bool {
        self.read_shard(key).unchanged_since(generation)
    }

    /// Counts `event` against `key`.
    pub fn record(&self, key: &CacheKey, event: Event) {
        self.lock_shard(key).counters.record(event);
    }

    /// One consistent snapshot of every counter, the sizes and the P2P
    /// state, taken with all shard locks and then the lifecycle lock held
    /// (the documented order). Never returns a guard; does no I/O.
    pub fn stats(&self) -> StatsSnapshot {
        let mut shards: Vec<ShardWriteGuard<'_, Shard>> = self.shared.shards.iter().map(write).collect();
        let lifecycle = lock(&self.shared.lifecycle);
        let mut counters = Counters::default();
        let (mut in_flight, mut entries, mut bytes) = (0, 0, 0);
        for shard in &mut shards {
            counters.add(&shard.counters);
            shard.reads.add_to(&mut counters);
            in_flight += shard.flights.running();
            entries += shard.entries.len() as u64;
            bytes += shard.entries.bytes() as u64;
        }
        let max_entries = shards.iter().map(|s| s.entries.max_entries() as u64).sum();
        let max_bytes = shards.iter().map(|s| s.entries.max_bytes() as u64).sum();
        StatsSnapshot::from_parts(
            &counters,
            in_flight,
            entries,
            bytes,
            max_entries,
            max_bytes,
            lifecycle.status(),
        )
    }

    /// Every entry's key, queue and read counter in eviction order, shard
    /// by shard: small from newest to oldest, then main from newest to
    /// oldest (for sequential models in tests and fuzzing).
    #[cfg(any(test, fuzzing))]
    pub fn policy_state(&self) -> Vec<(CacheKey, Queue, u8)> {
        self.each_shard_collect(|shard| shard.policy_state())
    }

    /// Write-locks the shard that owns `key`.
    pub(crate) fn lock_shard(&self, key: &CacheKey) -> ShardWriteGuard<'_, Shard> {
        write(&self.shared.shards[self.shard_index(key)])
    }

    /// Read-locks the shard that owns `key`.
    pub(crate) fn read_shard(&self, key: &CacheKey) -> ShardReadGuard<'_, Shard> {
        read(&self.shared.shards[self.shard_index(key)])
    }

    /// Which shard holds `key` (for diagnostics and tests).
    pub fn shard_index(&self, key: &CacheKey) -> usize {
        // Bits 32..56 of the hash, a fraction of 2^24, scaled to the shard
        // count by a multiply and a shift (no division on the lookup path):
        // hashbrown uses the low bits for the bucket and the top 7 for its
        // tag, so shards do not skew either.
        let bits = (key.hash_value() >> 32) & 0x00ff_ffff;
        ((u128::from(bits) * self.shared.shards.len() as u128) >> 24) as usize
    }

    /// Runs `f` on each shard in turn, one lock at a time, summing results.
    fn each_shard(&self, mut f: impl FnMut(&mut Shard) -> usize) -> usize {
        self.shared.shards.iter().map(|m| f(&mut write(m))).sum()
    }

    #[cfg(any(test, fuzzing))]
    fn each_shard_collect<T>(&self, mut f: impl FnMut(&Shard) -> Vec<T>) -> Vec<T> {
        self.shared.shards.iter().flat_map(|m| f(&read(m))).collect()
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
