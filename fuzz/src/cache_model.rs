//! The cache as a plain sequential model: two FIFO lists of `(key, entry,
//! read counter)` and a ghost list of keys, with the TTL, S3-FIFO eviction
//! and counting rules written out from the documentation, not from the code.
//!
//! Shared by the `cache_ops` fuzz target and `src/core/proptests.rs` (which
//! includes this file with `#[path]`), so it names the core only as
//! `crate::core` and its siblings only as `super::`.
//!
//! Rules modelled (see `src/core/cache.rs` and `entry.rs`):
//! - freshness by age: `age < ttl` fresh, `< ttl + grace` stale, else
//!   expired; an expired entry is removed by the lookup that finds it
//!   (one expiration and one miss), and every lookup that finds a live
//!   entry adds one to its read counter, which stops at 7;
//! - insert: weight = key text + body + ETag bytes; heavier than the (shard)
//!   byte bound is refused and drops the old entry for that key (one eviction
//!   if there was one, one rejected insert); a key held is replaced in place
//!   (counted as a read); a new key goes to the front of main when the ghost
//!   remembers it (and the ghost forgets it), else to the front of small.
//!   Then, while over a bound, S3-FIFO (`src/core/s3fifo.rs`) picks victims,
//!   never the entry just written: small's oldest when small is over 2 % of
//!   a bound (or main has nothing to give) -- to main with its counter
//!   cleared if read, else evicted and remembered by the ghost (which keeps
//!   40 % as many keys as the cache then holds, at least one);
//!   otherwise main's oldest -- to
//!   main's front one read less if read (the newest unchanged), else evicted;
//! - a peer entry counts a peer hit when inserted through `Cache::insert`;
//! - invalidate / invalidate_prefix / clear count one invalidation per entry
//!   removed and revoke matching fetches in flight (they leave `flights`, so
//!   a later `begin` leads a new fetch, and their answers are not stored;
//!   they stay in `in_flight` until their leaders finish); `clear` also
//!   empties the ghost;
//! - counters are never reset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::core::{
    Api, Cache, CacheConfig, CacheKey, Clock, ETag, Entry, Event, Lookup, ManualClock, Operation, Origin, P2pPhase,
    P2pStatus, Queue, StatsSnapshot, Timestamp, TtlPolicy,
};

/// The keys the fuzzer picks from: several operations, and keys that are
/// prefixes of each other's text, so prefix invalidation has work to do.
pub fn key(i: u8) -> CacheKey {
    match i % 8 {
        0 => CacheKey::new(Operation::Runners, [("repo", Some("o/a"))]),
        1 => CacheKey::new(Operation::Runners, [("repo", Some("o/b"))]),
        2 => CacheKey::new(Operation::Repo, [("repo", Some("o/a"))]),
        3 => CacheKey::new(Operation::Repo, [("repo", Some("o/ab"))]),
        4 => CacheKey::new(Operation::Issues, [("repo", Some("o/a")), ("state", Some("open"))]),
        5 => CacheKey::new::<&str, _>(Operation::RateLimit, []),
        6 => CacheKey::new(Operation::WorkflowRuns, [("repo", Some("o/a"))]),
        _ => CacheKey::new(Operation::Api, [("path", Some("/x&y=1"))]),
    }
}

/// Prefixes for `invalidate_prefix`: an operation, a key that prefixes
/// another, everything, several operations at once, and nothing.
pub const PREFIXES: [&str; 7] = ["runners:", "repo:", "repo:repo=o/a", "", "r", "zzz", "api:path=/x%26"];

/// How the cache under test is configured.
#[derive(Clone, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct CacheSetup {
    /// Entry bound: 1 + this % 8.
    pub max_entries: u8,
    /// Byte bound: 16 + this % 512.
    pub max_bytes: u16,
    /// Base TTL in ms (this % 5000); operations get 1x, 2x or 3x of it.
    pub ttl_ms: u16,
    /// Stale grace in ms (this % 5000).
    pub grace_ms: u16,
    /// 0: one shard (exact eviction order checked). Else 1 + this % 4 shards with
    /// bounds too large to evict, so routing and summing are checked.
    pub shards: u8,
}

/// One operation on the cache.
#[derive(Clone, Debug)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum CacheOp {
    /// `lookup(key)`.
    Lookup { key: u8 },
    /// `insert(key, entry)` of a body of `len` bytes of `fill`, fetched
    /// `age_ms` ago, with the policy TTL (`ttl_ms: None`) or its own.
    Insert {
        key: u8,
        len: u8,
        fill: u8,
        etag: Option<u8>,
        origin: u8,
        age_ms: u16,
        ttl_ms: Option<u16>,
    },
    /// `invalidate(key)`.
    Invalidate { key: u8 },
    /// `invalidate_prefix(PREFIXES[prefix])`.
    InvalidatePrefix { prefix: u8 },
    /// `clear()`.
    Clear,
    /// Moves the manual clock forward.
    Advance { ms: u16 },
    /// `record(key, event)`.
    Record { key: u8, event: u8 },
    /// `stats()` (also checked after every operation).
    Stats,
}

/// What an operation answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Lookup(Lookup),
    Stored(bool),
    Removed(bool),
    Count(usize),
    Nothing,
}

/// The counters, as the documentation defines them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub lookups: u64,
    pub hits: u64,
    pub stale_hits: u64,
    pub misses: u64,
    pub coalesced: u64,
    pub peer_hits: u64,
    pub expirations: u64,
    pub evictions: u64,
    pub revalidations: u64,
    pub api_calls_rest: u64,
    pub api_calls_graphql: u64,
    pub stale_served: u64,
    pub fetch_errors: u64,
    pub abandoned_flights: u64,
    pub inserts: u64,
    pub rejected_inserts: u64,
    pub invalidations: u64,
}

/// A fetch in flight, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFlight {
    pub id: u64,
}

/// An entry as the model holds it.
#[derive(Clone, Debug)]
pub struct Held {
    pub key: CacheKey,
    pub entry: Entry,
    /// Reads counted (0 to 3).
    pub freq: u8,
}

/// The sequential model.
#[derive(Clone, Debug)]
pub struct CacheModel {
    /// Clock reading, ms.
    pub now: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub shards: usize,
    pub grace_ms: u64,
    pub base_ttl_ms: u64,
    /// New keys on probation, newest first.
    pub small: Vec<Held>,
    /// Keys read while in small or let back in by the ghost, newest first.
    pub main: Vec<Held>,
    /// Keys evicted unread from small, oldest first; `false` once consumed
    /// by a re-insert.
    pub ghost: Vec<(CacheKey, bool)>,
    /// The key written last (never its own insert's victim).
    pub newest: Option<CacheKey>,
    pub counts: Counts,
    /// The current fetch of each key being fetched.
    pub flights: BTreeMap<CacheKey, ModelFlight>,
    /// Fetches revoked by an invalidation whose leaders have not finished.
    pub revoked: BTreeSet<u64>,
    /// The answer of the last operation (for proptest-state-machine, whose
    /// reference state is all the system under test gets to see).
    pub last: Option<Answer>,
}

impl CacheSetup {
    /// The model's reading of the setup.
    pub fn model(&self) -> CacheModel {
        let shards = if self.shards == 0 {
            1
        } else {
            1 + usize::from(self.shards % 4)
        };
        let (max_entries, max_bytes) = if shards == 1 {
            (
                1 + usize::from(self.max_entries % 8),
                16 + usize::from(self.max_bytes % 512),
            )
        } else {
            (1000, 1 << 20)
        };
        CacheModel {
            now: 0,
            max_entries,
            max_bytes,
            shards,
            grace_ms: u64::from(self.grace_ms % 5000),
            base_ttl_ms: u64::from(self.ttl_ms % 5000),
            small: Vec::new(),
            main: Vec::new(),
            ghost: Vec::new(),
            newest: None,
            counts: Counts::default(),
            flights: BTreeMap::new(),
            revoked: BTreeSet::new(),
            last: None,
        }
    }

    /// The real cache's configuration, as the model reads the setup.
    pub fn config(&self) -> CacheConfig {
        let m = self.model();
        let ttl = Operation::ALL.into_iter().fold(TtlPolicy::default(), |p, op| {
            p.with(op, Duration::from_millis(m.ttl_ms(op)))
        });
        CacheConfig {
            max_entries: m.max_entries,
            max_bytes: m.max_bytes,
            shards: m.shards,
            ttl,
            stale_grace: Duration::from_millis(m.grace_ms),
        }
    }

    /// A cache and its clock, configured per the setup.
    pub fn cache(&self) -> (Cache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (Cache::new(self.config(), clock.clone()), clock)
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

impl CacheModel {
    /// TTL of `op`'s entries: 1x, 2x or 3x the base.
    pub fn ttl_ms(&self, op: Operation) -> u64 {
        self.base_ttl_ms * (1 + (op as u64 % 3))
    }

    /// Weight per the documentation of `Entry::weight`.
    pub fn weight(key: &CacheKey, entry: &Entry) -> usize {
        key.as_str().len() + entry.body.len() + entry.etag.as_ref().map_or(0, |t| t.as_str().len())
    }

    pub fn bytes(&self) -> usize {
        self.small
            .iter()
            .chain(&self.main)
            .map(|h| Self::weight(&h.key, &h.entry))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.small.len() + self.main.len()
    }

    /// Where `key` is held: (in main?, index).
    fn position(&self, key: &CacheKey) -> Option<(bool, usize)> {
        let at = |list: &Vec<Held>| list.iter().position(|h| h.key == *key);
        at(&self.small)
            .map(|i| (false, i))
            .or_else(|| at(&self.main).map(|i| (true, i)))
    }

    fn held_mut(&mut self, (main, i): (bool, usize)) -> &mut Held {
        if main {
            &mut self.main[i]
        } else {
            &mut self.small[i]
        }
    }

    /// Removes and returns what is held at `at` (not remembered by the ghost).
    fn take(&mut self, (main, i): (bool, usize)) -> Held {
        let held = if main {
            self.main.remove(i)
        } else {
            self.small.remove(i)
        };
        if self.newest.as_ref() == Some(&held.key) {
            self.newest = None;
        }
        held
    }

    /// Every entry in eviction-policy order: small then main, each newest
    /// first, as `(key, in main?, read counter)`.
    pub fn policy_state(&self) -> Vec<(CacheKey, bool, u8)> {
        let small = self.small.iter().map(|h| (h.key.clone(), false, h.freq));
        small
            .chain(self.main.iter().map(|h| (h.key.clone(), true, h.freq)))
            .collect()
    }

    /// The entry an `Insert` op describes, at the model's clock.
    pub fn entry_for(&self, op: &CacheOp) -> Option<(CacheKey, Entry)> {
        let CacheOp::Insert {
            key: k,
            len,
            fill,
            etag,
            origin,
            age_ms,
            ttl_ms,
        } = op
        else {
            return None;
        };
        let key = key(*k);
        let body = vec![b'a' + fill % 26; usize::from(*len)];
        let etag = etag.and_then(|t| ETag::new(&format!("W/\"{t}\"")));
        let origin = [Origin::Upstream, Origin::Peer, Origin::Disk][usize::from(origin % 3)];
        let fetched = Timestamp::from_millis(self.now.saturating_sub(u64::from(*age_ms)));
        let ttl = Duration::from_millis(ttl_ms.map_or(self.ttl_ms(key.operation()), u64::from));
        Some((key, Entry::new(body, etag, fetched, ttl, origin)))
    }

    /// Lookup, with counting and expiry.
    pub fn lookup(&mut self, key: &CacheKey) -> Lookup {
        self.counts.lookups += 1;
        let Some(at) = self.position(key) else {
            self.counts.misses += 1;
            return Lookup::Miss;
        };
        let held = self.held_mut(at);
        held.freq = (held.freq + 1).min(7);
        let found = held.entry.clone();
        let age = u128::from(self.now.saturating_sub(found.fetched_at.as_millis()));
        let ttl = millis(found.ttl);
        if age < ttl {
            self.counts.hits += 1;
            Lookup::Fresh(Arc::new(found))
        } else if age < ttl + u128::from(self.grace_ms) {
            self.counts.stale_hits += 1;
            Lookup::Stale(Arc::new(found))
        } else {
            self.take(at);
            self.counts.expirations += 1;
            self.counts.misses += 1;
            Lookup::Miss
        }
    }

    /// The shard-level insert (no peer-hit counting), with eviction.
    pub fn store(&mut self, key: &CacheKey, entry: Entry) -> bool {
        let shard_bytes = self.max_bytes / self.shards;
        if Self::weight(key, &entry) > shard_bytes {
            let old = self.position(key).map(|at| self.take(at));
            self.counts.evictions += u64::from(old.is_some());
            self.counts.rejected_inserts += 1;
            return false;
        }
        self.counts.inserts += 1;
        self.newest = Some(key.clone());
        if let Some(at) = self.position(key) {
            let held = self.held_mut(at);
            held.entry = entry;
            held.freq = (held.freq + 1).min(7);
        } else {
            let held = Held {
                key: key.clone(),
                entry,
                freq: 0,
            };
            match self.ghost.iter_mut().find(|(k, live)| *live && k == key) {
                Some(remembered) => {
                    remembered.1 = false;
                    self.main.insert(0, held);
                }
                None => self.small.insert(0, held),
            }
        }
        while self.len() > self.max_entries || self.bytes() > self.max_bytes {
            self.evict_one();
        }
        true
    }

    /// One step of S3-FIFO's eviction loop (see the module docs).
    fn evict_one(&mut self) {
        let only_newest = |list: &Vec<Held>| list.len() == 1 && Some(&list[0].key) == self.newest.as_ref();
        let small_ok = !self.small.is_empty() && !only_newest(&self.small);
        let main_ok = !self.main.is_empty() && !only_newest(&self.main);
        let small_bytes: usize = self.small.iter().map(|h| Self::weight(&h.key, &h.entry)).sum();
        let small_over = self.small.len() * 100 > self.max_entries * 2 || small_bytes * 100 > self.max_bytes * 2;
        if small_ok && (small_over || !main_ok) {
            let mut oldest = self.small.pop().expect("small_ok");
            if oldest.freq > 0 {
                oldest.freq = 0;
                self.main.insert(0, oldest);
            } else {
                self.counts.evictions += 1;
                if self.newest.as_ref() == Some(&oldest.key) {
                    self.newest = None;
                }
                self.ghost.push((oldest.key, true));
                let cap = (self.len() * 40 / 100).max(1);
                while self.ghost.len() > cap {
                    self.ghost.remove(0);
                }
            }
        } else {
            assert!(main_ok, "over a bound with only the newest entry");
            let mut oldest = self.main.pop().expect("main_ok");
            let is_newest = self.newest.as_ref() == Some(&oldest.key);
            if !is_newest && oldest.freq == 0 {
                self.counts.evictions += 1;
            } else {
                oldest.freq -= u8::from(!is_newest);
                self.main.insert(0, oldest);
            }
        }
    }

    /// `Cache::insert`: counts a peer hit for a peer entry, then stores.
    pub fn insert(&mut self, key: &CacheKey, entry: Entry) -> bool {
        self.counts.peer_hits += u64::from(entry.origin == Origin::Peer);
        self.store(key, entry)
    }

    fn remove_where(&mut self, doomed: impl Fn(&CacheKey) -> bool) -> usize {
        let revoked: Vec<CacheKey> = self.flights.keys().filter(|k| doomed(k)).cloned().collect();
        for k in revoked {
            let flight = self.flights.remove(&k).expect("listed above");
            self.revoked.insert(flight.id);
        }
        let before = self.len();
        self.small.retain(|h| !doomed(&h.key));
        self.main.retain(|h| !doomed(&h.key));
        if self.newest.as_ref().is_some_and(&doomed) {
            self.newest = None;
        }
        let removed = before - self.len();
        self.counts.invalidations += removed as u64;
        removed
    }

    pub fn record(&mut self, event: Event) {
        let c = &mut self.counts;
        match event {
            Event::ApiCall(Api::Rest) => c.api_calls_rest += 1,
            Event::ApiCall(Api::GraphQl) => c.api_calls_graphql += 1,
            Event::Revalidated => c.revalidations += 1,
            Event::PeerHit => c.peer_hits += 1,
            Event::StaleServed => c.stale_served += 1,
            Event::FetchError => c.fetch_errors += 1,
        }
    }

    /// Applies `op` to the model; returns (and remembers) the answer the
    /// cache must give.
    pub fn apply(&mut self, op: &CacheOp) -> Answer {
        let answer = match op {
            CacheOp::Lookup { key: k } => Answer::Lookup(self.lookup(&key(*k))),
            CacheOp::Insert { .. } => {
                let (k, e) = self.entry_for(op).expect("an insert");
                Answer::Stored(self.insert(&k, e))
            }
            CacheOp::Invalidate { key: k } => {
                let k = key(*k);
                Answer::Removed(self.remove_where(|x| *x == k) == 1)
            }
            CacheOp::InvalidatePrefix { prefix } => {
                let p = PREFIXES[usize::from(*prefix) % PREFIXES.len()];
                Answer::Count(self.remove_where(|k| k.as_str().starts_with(p)))
            }
            CacheOp::Clear => {
                self.ghost.clear();
                Answer::Count(self.remove_where(|_| true))
            }
            CacheOp::Advance { ms } => {
                self.now += u64::from(*ms);
                Answer::Nothing
            }
            CacheOp::Record { event, .. } => {
                self.record(event_of(*event));
                Answer::Nothing
            }
            CacheOp::Stats => Answer::Nothing,
        };
        self.last = Some(answer.clone());
        answer
    }

    /// The snapshot the cache must report (with the given P2P status).
    pub fn expected_stats(&self, p2p: P2pStatus) -> StatsSnapshot {
        let c = &self.counts;
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
            in_flight: (self.flights.len() + self.revoked.len()) as u64,
            entries: self.len() as u64,
            bytes: self.bytes() as u64,
            max_entries: self.max_entries as u64,
            max_bytes: self.max_bytes as u64,
            p2p,
        }
    }
}

/// The event a `Record` op names.
pub fn event_of(n: u8) -> Event {
    [
        Event::ApiCall(Api::Rest),
        Event::ApiCall(Api::GraphQl),
        Event::Revalidated,
        Event::PeerHit,
        Event::StaleServed,
        Event::FetchError,
    ][usize::from(n % 6)]
}

/// The P2P status of a local-only cache.
pub fn disabled_p2p() -> P2pStatus {
    P2pStatus {
        phase: P2pPhase::Disabled,
        peer_id: None,
        failures: 0,
        last_error: None,
        retry_at: None,
        shutdown_requested: false,
    }
}

/// Applies `op` to the real cache (the model, already advanced past `op`,
/// supplies the entry to insert and checks the policy TTL); returns its
/// answer.
pub fn apply_real(cache: &Cache, clock: &ManualClock, model_before: &CacheModel, op: &CacheOp) -> Answer {
    match op {
        CacheOp::Lookup { key: k } => Answer::Lookup(cache.lookup(&key(*k))),
        CacheOp::Insert { age_ms, ttl_ms, .. } => {
            let (k, e) = model_before.entry_for(op).expect("an insert");
            if *age_ms == 0 && ttl_ms.is_none() {
                // The cache's own TTL policy and clock must build the same entry.
                assert_eq!(
                    cache.new_entry(&k, e.body.clone(), e.etag.clone(), e.origin),
                    e,
                    "new_entry"
                );
            }
            Answer::Stored(cache.insert(&k, e))
        }
        CacheOp::Invalidate { key: k } => Answer::Removed(cache.invalidate(&key(*k))),
        CacheOp::InvalidatePrefix { prefix } => {
            Answer::Count(cache.invalidate_prefix(PREFIXES[usize::from(*prefix) % PREFIXES.len()]))
        }
        CacheOp::Clear => Answer::Count(cache.clear()),
        CacheOp::Advance { ms } => {
            clock.advance(Duration::from_millis(u64::from(*ms)));
            Answer::Nothing
        }
        CacheOp::Record { key: k, event } => {
            cache.record(&key(*k), event_of(*event));
            Answer::Nothing
        }
        CacheOp::Stats => {
            cache.stats().check_consistency().unwrap();
            Answer::Nothing
        }
    }
}

/// Checks everything observable about `cache` against `model`: clock,
/// stats (field by field, then the snapshot's own invariants) and every
/// entry's queue and read counter (in eviction order when there is one
/// shard, which makes the model an oracle of exactly which key goes next).
pub fn check(cache: &Cache, clock: &ManualClock, model: &CacheModel, p2p: P2pStatus) {
    assert_eq!(clock.now().as_millis(), model.now, "clock");
    let stats = cache.stats();
    assert_eq!(stats, model.expected_stats(p2p), "stats differ from the model");
    stats.check_consistency().unwrap();
    let mut real: Vec<(CacheKey, bool, u8)> = cache
        .policy_state()
        .into_iter()
        .map(|(k, q, f)| (k, q == Queue::Main, f))
        .collect();
    let mut want = model.policy_state();
    if model.shards > 1 {
        real.sort();
        want.sort();
    }
    assert_eq!(
        real, want,
        "entries: (key, in main?, reads), small then main, newest first"
    );
}

/// A cache, its clock and its model, stepped together.
pub struct CacheHarness {
    pub cache: Cache,
    pub clock: Arc<ManualClock>,
    pub model: CacheModel,
}

impl CacheHarness {
    pub fn new(setup: &CacheSetup) -> CacheHarness {
        let (cache, clock) = setup.cache();
        let model = setup.model();
        check(&cache, &clock, &model, disabled_p2p());
        CacheHarness { cache, clock, model }
    }

    /// Applies `op` to both, compares the answers, then everything else.
    pub fn step(&mut self, op: &CacheOp) {
        let got = apply_real(&self.cache, &self.clock, &self.model, op);
        let want = self.model.apply(op);
        assert_eq!(got, want, "answer to {op:?}");
        check(&self.cache, &self.clock, &self.model, disabled_p2p());
    }
}

/// The whole `cache_ops` check: every op applied to both, compared after each.
pub fn run(setup: &CacheSetup, ops: &[CacheOp]) {
    let mut h = CacheHarness::new(setup);
    for op in ops {
        h.step(op);
    }
}
