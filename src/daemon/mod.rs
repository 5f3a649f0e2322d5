//! The daemon: a thin async adapter around [`crate::core`].
//!
//! ```text
//!  /mcp (rmcp) ─┐
//!  /jsonrpc ────┼─▶ tools::ToolCall ─▶ App::call ─▶ App::read ─▶ Cache::begin ─▶ Upstream::fetch (leader)
//!  /github/* ───┘                                     │                  └─▶ Follower.await (coalesced)
//!  /metrics, /healthz                                 └─▶ Store::put (write-behind, after the core returned)
//! ```
//!
//! # What is absent, on purpose
//! - **No lock of the daemon's own around cache state, and no second
//!   cache.** The daemon only calls the core's API ([`Cache::begin`],
//!   [`FlightLeader::complete_stored`](crate::core::FlightLeader::complete_stored),
//!   [`Cache::stats`], ...); every read goes through the core's single
//!   flight, so concurrent identical reads make one upstream request.
//! - **No fill kept that an invalidation overtook** (one covering its key
//!   that came while it was being fetched), in memory or on disk. GitHub's answers and peers' answers complete through
//!   the core's generation check; the store gets only what the cache kept,
//!   and the key is deleted again if an invalidation overtook the put
//!   (`App::persist_stored`).
//! - **No lock held across `.await`.** The daemon's own shared state is
//!   atomics (metrics, rate limit) and channels (store).
//! - **No fetch that outlives its caller holding the flight.** The leader's
//!   guard abandons the flight when its task is dropped; followers retry.
//!
//! # Modules
//! - [`config`]: flags, TOML, environment.
//! - [`upstream`]: the GitHub client.
//! - [`tools`]: the tools, shared by [`mcp`] and [`jsonrpc`].
//! - [`http`]: the HTTP surface: `/mcp`, `/jsonrpc`, `/github/*`,
//!   `/metrics`, `/healthz`, with Host, Origin, token, body, connection and
//!   session bounds.
//! - [`api_base`]: the GitHub API root; every upstream URL is made or
//!   checked there.
//! - [`budget`]: how many GitHub requests one HTTP request may cause.
//! - [`store`]: the redb store, write-behind.
//! - [`metrics`]: counters and Prometheus text.
//! - [`p2p`]: the libp2p node: a key's owner among the peers is asked
//!   before GitHub, in the leader's path only (see [`App::read`]).
//! - [`shutdown`]: signals and sd_notify.
//! - [`ready`]: the ready file and sd_notify `READY=1`/`STATUS=`, naming
//!   the bound addresses once both listeners are up.

pub mod api_base;
pub mod budget;
pub mod config;
pub mod flags;
pub mod http;
pub mod jsonrpc;
pub mod mcp;
pub mod metrics;
pub mod p2p;
pub mod private_fs;
pub mod ready;
pub mod response;
pub mod shutdown;
pub mod store;
pub mod tools;
pub mod upstream;

use crate::sync::{AtomicU64, Ordering};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::core::{
    Begin, Cache, CacheKey, CacheMode, Clock, ETag, Entry, Event, FetchFailed, Fetched, FlightOutcome, Origin, Served,
    Timestamp, Via,
};
use crate::sync::StdArc as Arc;
use config::Config;

/// How long `gh_get_cache_stats` waits for each peer's counters (asked
/// concurrently). Stats must stay fast even when a peer hangs; on a LAN a
/// peer answers in about a millisecond.
pub const PEER_STATS_TIMEOUT: Duration = Duration::from_millis(250);
use metrics::Metrics;
use store::{Store, StoredEntry};
use tools::{Invalidate, RpcError, ToolCall};
use upstream::{Request, Upstream, UpstreamError};

/// The daemon's clock: monotonic, with its origin set far enough in the past
/// that entries loaded from disk can carry their real (earlier) fetch time,
/// and mapped to wall-clock time for the store. Tests can move it forward.
#[derive(Debug)]
pub struct DaemonClock {
    start: Instant,
    start_unix_ms: u64,
    skew_ms: AtomicU64,
}

impl DaemonClock {
    /// Readings start here (one year in ms), so a loaded entry up to a year
    /// old still maps to a timestamp.
    pub const OFFSET_MS: u64 = 365 * 24 * 3600 * 1000;

    /// A clock starting now.
    pub fn new() -> DaemonClock {
        DaemonClock {
            start: Instant::now(),
            start_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            skew_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock (and its wall-clock mapping) forward: for tests.
    pub fn advance(&self, d: Duration) {
        self.skew_ms.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// The wall-clock time (Unix ms) of a reading.
    pub fn to_unix_ms(&self, t: Timestamp) -> u64 {
        self.start_unix_ms
            .saturating_add(t.as_millis())
            .saturating_sub(Self::OFFSET_MS)
    }

    /// The reading of a wall-clock time (Unix ms), saturating at the origin
    /// and clamped to now: a time in the future (the wall clock went back
    /// between the run that stored it and this one, or a damaged record)
    /// reads as now, so an entry is never fresh for longer than its TTL.
    pub fn from_unix_ms(&self, unix_ms: u64) -> Timestamp {
        let t = Timestamp::from_millis(
            unix_ms
                .saturating_add(Self::OFFSET_MS)
                .saturating_sub(self.start_unix_ms),
        );
        t.min(self.now())
    }
}

impl Default for DaemonClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for DaemonClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.start.elapsed().as_millis() as u64;
        Timestamp::from_millis(Self::OFFSET_MS + elapsed + self.skew_ms.load(Ordering::SeqCst))
    }
}

/// Everything a request handler needs; shared by all of them.
pub struct App {
    /// The core cache (the process's [`Node`](crate::core::Node) cache in
    /// the binary).
    pub cache: Cache,
    /// The clock the cache was built with.
    pub clock: Arc<DaemonClock>,
    /// GitHub.
    pub upstream: Upstream,
    /// Persistence, when enabled.
    pub store: Option<Store>,
    /// Daemon-side counters.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: Config,
    /// The P2P node's client while it runs (set by [`p2p::lifecycle`]).
    pub p2p: tokio::sync::watch::Sender<Option<p2p::Client>>,
    /// P2P counters.
    pub p2p_metrics: Arc<p2p::P2pMetrics>,
    /// Which `Host` names the HTTP surface accepts.
    pub hosts: http::guard::HostPolicy,
    /// The proxy's recent answers, built once per entry and base.
    pub replays: http::replay::Replays,
    /// The key of the credential partitions' hash (random per process, so
    /// a partition name says nothing about its token elsewhere).
    partition_key: ring::hmac::Key,
    /// Each client's GitHub requests per minute.
    client_rates: budget::ClientRates,
    started: Instant,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// A read's failure: GitHub's, or the flight's.
pub fn upstream_error(e: &FetchFailed) -> Option<&UpstreamError> {
    e.downcast_ref::<UpstreamError>()
}

impl App {
    /// Builds the app around `cache` (whose clock must be `clock`), opening
    /// the store and loading it into the cache when enabled. Blocking
    /// (store I/O): call at start-up.
    pub fn new(config: Config, cache: Cache, clock: Arc<DaemonClock>) -> Result<App, String> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Upstream::new(&config, metrics.clone())?;
        let store = if config.store {
            let bounds = store::Bounds {
                max_entries: config.cache.max_entries,
                max_bytes: config.cache.max_bytes as u64,
            };
            // Past TTL + grace: not worth keeping.
            let now_unix_ms = clock.to_unix_ms(clock.now());
            let grace_ms = config.cache.stale_grace.as_millis() as u64;
            let keep = |e: &StoredEntry| {
                e.fetched_unix_ms
                    .saturating_add(e.ttl.as_millis() as u64)
                    .saturating_add(grace_ms)
                    > now_unix_ms
            };
            let path = config.store_path();
            // A store that cannot be opened is not fatal: memory only,
            // degraded, reopened in the background (see `store`).
            let (store, loaded) = match Store::open(&path, bounds, &keep) {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "store unavailable; serving from memory only (degraded; retrying in the background)");
                    (Store::unavailable(&path, bounds, &e), Vec::new())
                }
            };
            let n = loaded.len();
            let mut kept = 0;
            for (key, stored) in loaded {
                let entry = Entry {
                    status: stored.status,
                    body: stored.body,
                    etag: stored.etag,
                    fetched_at: clock.from_unix_ms(stored.fetched_unix_ms),
                    ttl: stored.ttl,
                    origin: Origin::Disk,
                };
                // Past TTL + grace: not worth loading.
                if entry.freshness(clock.now(), config.cache.stale_grace) != crate::core::Freshness::Expired {
                    kept += usize::from(cache.insert(&key, entry));
                }
            }
            if !store.stats().degraded {
                tracing::info!(path = %path.display(), records = n, loaded = kept, corrupt = store.stats().corrupt, "store opened");
            }
            Some(store)
        } else {
            None
        };
        let hosts = http::guard::HostPolicy::new(config.listen.ip().is_loopback(), &config.allowed_hosts);
        let client_rates = budget::ClientRates::new(config.limits.client_upstream_per_minute);
        Ok(App {
            cache,
            clock,
            upstream,
            store,
            metrics,
            config,
            p2p: tokio::sync::watch::Sender::new(None),
            p2p_metrics: Arc::new(p2p::P2pMetrics::default()),
            hosts,
            replays: http::replay::Replays::default(),
            client_rates,
            partition_key: {
                let rng = ring::rand::SystemRandom::new();
                ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
                    .map_err(|_| "cannot draw a random key".to_string())?
            },
            started: Instant::now(),
        })
    }

    /// The partition a client's own GitHub token reads in: a keyed hash
    /// (HMAC-SHA256, 128 bits in hex), never the token.
    pub fn credential_partition(&self, token: &str) -> String {
        let tag = ring::hmac::sign(&self.partition_key, token.as_bytes());
        tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Applies an invalidation to this node's memory and store; every
    /// invalidation (the tool, a write through the proxy) goes through here.
    /// Returns how many in-memory entries were dropped.
    pub fn invalidate(&self, what: &Invalidate) -> usize {
        // Memory first, then the store: `persist_stored` relies on this order.
        let dropped = match what {
            Invalidate::All => self.cache.clear(),
            Invalidate::Prefix(p) => self.cache.invalidate_prefix(p),
            Invalidate::Repository(r) => self.cache.invalidate_repository(r),
        };
        if let Some(store) = &self.store {
            match what {
                Invalidate::All => store.delete_prefix(""),
                Invalidate::Prefix(p) => store.delete_prefix(p),
                Invalidate::Repository(r) => store.delete_repository(r),
            }
        }
        tracing::debug!(?what, dropped, "invalidated");
        dropped
    }

    fn persist(&self, key: &CacheKey, entry: &Entry) {
        if let Some(store) = &self.store {
            store.put(
                key.clone(),
                StoredEntry {
                    status: entry.status,
                    fetched_unix_ms: self.clock.to_unix_ms(entry.fetched_at),
                    ttl: entry.ttl,
                    etag: entry.etag.clone(),
                    body: entry.body.clone(),
                },
            );
        }
    }

    /// Persists an entry the cache stored at `stored_at`, so that the
    /// store never keeps it past an invalidation: one that reached the
    /// key's shard since then may have queued its store deletion before this
    /// put, so the key is deleted again after it. The store applies its
    /// queue in order, and `App::invalidate` drops from memory before it
    /// queues the deletion, so a later invalidation's deletion comes after
    /// this put.
    fn persist_stored(&self, key: &CacheKey, entry: &Entry, stored_at: crate::core::Generation) {
        self.persist(key, entry);
        if let Some(store) = &self.store {
            if !self.cache.unchanged_since(key, stored_at) {
                store.delete(key.clone());
            }
        }
    }

    fn serve_stale(&self, key: &CacheKey, stale: Arc<Entry>) -> Served {
        self.cache.record(key, Event::StaleServed);
        Served {
            entry: stale,
            mode: CacheMode::Stale,
        }
    }

    /// Reads `key` through the core's single flight: fresh from the cache,
    /// or by following another caller's fetch, or by leading the fetch
    /// (module docs). When GitHub cannot be asked (quota, outage) and a
    /// stale entry exists, that entry is served flagged
    /// [`CacheMode::Stale`].
    ///
    /// When the P2P node runs and another peer owns `key`, the leader asks
    /// that owner first and fetches from GitHub itself only when the owner
    /// fails or times out.
    pub async fn read(&self, key: &CacheKey, req: &Request) -> Result<Served, FetchFailed> {
        self.read_with(key, req, true).await
    }

    /// [`App::read`], with asking peers allowed or not (an owner answering a
    /// peer does not ask further peers: no loops).
    pub async fn read_with(&self, key: &CacheKey, req: &Request, peers: bool) -> Result<Served, FetchFailed> {
        self.read_counted(key, req, peers, None).await
    }

    /// [`App::read`] for a client that asked for a revalidated answer
    /// (`Cache-Control: no-cache` or `max-age=0`): a cached entry is
    /// dropped and its ETag sent, so an unchanged answer costs a free 304.
    pub async fn read_revalidated(&self, key: &CacheKey, req: &Request) -> Result<Served, FetchFailed> {
        let prior = match self.cache.lookup(key) {
            crate::core::Lookup::Fresh(e) | crate::core::Lookup::Stale(e) => Some(e),
            crate::core::Lookup::Miss => None,
        };
        if prior.is_some() {
            self.cache.invalidate(key);
        }
        self.read_counted(key, req, true, prior).await
    }

    async fn read_counted(
        &self,
        key: &CacheKey,
        req: &Request,
        peers: bool,
        prior: Option<Arc<Entry>>,
    ) -> Result<Served, FetchFailed> {
        let result = self.read_inner(key, req, peers, prior).await;
        match &result {
            Ok(served) => self.metrics.served(served.mode),
            Err(_) => self.metrics.served_error(),
        }
        result
    }

    async fn read_inner(
        &self,
        key: &CacheKey,
        req: &Request,
        peers: bool,
        prior: Option<Arc<Entry>>,
    ) -> Result<Served, FetchFailed> {
        // Peers share what the daemons' own token reads, as GitHub's JSON.
        let peers = peers && req.token.is_none() && req.accept.is_none() && req.api_version.is_none();
        loop {
            match self.cache.begin(key) {
                Begin::Fresh(entry) => {
                    return Ok(Served {
                        entry,
                        mode: CacheMode::Hit,
                    })
                }
                Begin::Follow(follower) => {
                    let stale = follower.stale().cloned();
                    match follower.await {
                        FlightOutcome::Done(Ok(entry)) => {
                            return Ok(Served {
                                entry,
                                mode: CacheMode::Coalesced,
                            })
                        }
                        FlightOutcome::Done(Err(e)) => {
                            return match stale {
                                Some(stale) if upstream_error(&e).is_some_and(UpstreamError::stale_ok) => {
                                    Ok(self.serve_stale(key, stale))
                                }
                                _ => Err(e),
                            }
                        }
                        FlightOutcome::Abandoned => continue,
                    }
                }
                Begin::Lead(leader) => {
                    let stale = leader.stale().cloned().or_else(|| prior.clone());
                    // The budget is charged before the flight is led, so a
                    // refused read leaves the flight to another caller.
                    if let Err(refused) = self.charge_budgets(req) {
                        drop(leader);
                        return match stale {
                            Some(stale) => Ok(self.serve_stale(key, stale)),
                            None => Err(FetchFailed::new(refused)),
                        };
                    }
                    let from_peer = if peers { self.ask_owner(key, req).await } else { None };
                    let fetched = match from_peer {
                        Some(entry) => Ok(Fetched { entry, via: Via::Peer }),
                        None => self.upstream.fetch(&self.cache, key, req, stale.as_deref()).await,
                    };
                    // GitHub's answer and a peer's both complete here: the
                    // core stores neither if an invalidation of the key came
                    // while it was being fetched (core::flight_table).
                    let (result, stored) = leader.complete_stored(fetched);
                    return match result {
                        Ok(served) => {
                            // A client's own token's answers stay in memory.
                            if let (Some(stored_at), None) = (stored, &req.token) {
                                self.persist_stored(key, &served.entry, stored_at);
                            }
                            Ok(served)
                        }
                        Err(e) => match stale {
                            Some(stale) if upstream_error(&e).is_some_and(UpstreamError::stale_ok) => {
                                tracing::warn!(key = %key.as_str(), error = %e, "GitHub unavailable; serving stale");
                                Ok(self.serve_stale(key, stale))
                            }
                            _ => Err(e),
                        },
                    };
                }
            }
        }
    }

    /// Charges a fetch of `req` to the request's and its client's budgets
    /// ([`budget`]); a client's own token spends its own quota.
    fn charge_budgets(&self, req: &Request) -> Result<(), UpstreamError> {
        let needed = Upstream::requests_needed(req);
        if let Err(left) = budget::charge(needed) {
            self.metrics.refused(metrics::Refusal::UpstreamBudget);
            let max = self.config.limits.max_upstream_per_request;
            return Err(UpstreamError::over_budget(needed, left, max));
        }
        if let (None, Some(client)) = (&req.token, budget::client()) {
            if let Err(wait) = self.client_rates.charge(client, needed, Instant::now()) {
                self.metrics.refused(metrics::Refusal::ClientRate);
                let per_minute = self.config.limits.client_upstream_per_minute;
                return Err(UpstreamError::over_client_rate(per_minute, wait));
            }
        }
        Ok(())
    }

    /// Asks the owner of `key` for it, when the P2P node runs and the owner
    /// is another peer. `None`: fetch it yourself.
    async fn ask_owner(&self, key: &CacheKey, req: &Request) -> Option<Entry> {
        let client = self.p2p.borrow().clone()?;
        let owner = client.owner(key);
        if owner == client.local_peer_id() {
            return None;
        }
        let m = &client.metrics;
        m.asked.fetch_add(1, Ordering::Relaxed);
        let wire_req = p2p::wire::Request::Entry {
            key: key.as_str().to_string(),
            path: req.path.clone(),
            query: req.query.clone(),
            shape: match req.shape {
                upstream::Shape::Single | upstream::Shape::Response => p2p::wire::WireShape::Single,
                upstream::Shape::Array => p2p::wire::WireShape::Array,
                upstream::Shape::Field("runners") => p2p::wire::WireShape::Runners,
                upstream::Shape::Field(_) => p2p::wire::WireShape::WorkflowRuns,
            },
            limit: req.limit.map(|l| l.min(u32::MAX as usize - 1) as u32),
        };
        let result = match client.ask_retrying(owner, wire_req).await {
            Ok(res) => self.entry_from_peer(key, res),
            Err(e) => Err(e),
        };
        match result {
            Ok(entry) => {
                m.received.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            Err(e) => {
                m.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key = %key.as_str(), %owner, error = %e, "owner did not answer; asking GitHub");
                None
            }
        }
    }

    /// Checks a peer's answer: the key it names, the status, the body size
    /// and the ETag's form; the TTL is at most ours.
    pub fn entry_from_peer(&self, key: &CacheKey, res: p2p::wire::Response) -> Result<Entry, String> {
        let p2p::wire::Response::Entry {
            key: k,
            status,
            etag,
            age_ms,
            ttl_ms,
            body,
        } = res
        else {
            return Err(match res {
                p2p::wire::Response::Error(e) => format!("owner failed: {e}"),
                _ => "unexpected answer".into(),
            });
        };
        if k != key.as_str() {
            return Err("answer is for another key".into());
        }
        if !(100..=599).contains(&status) {
            return Err(format!("bad status {status}"));
        }
        if body.len() > self.config.cache.max_bytes {
            return Err("body too large".into());
        }
        let etag = match etag {
            None => None,
            Some(t) => Some(ETag::new(&t).ok_or("malformed ETag")?),
        };
        let ttl = Duration::from_millis(ttl_ms).min(self.cache.ttl(key.operation()));
        let now = self.cache.now();
        Ok(Entry {
            status,
            body: body.into(),
            etag,
            fetched_at: now.saturating_sub(Duration::from_millis(age_ms).min(ttl)),
            ttl,
            origin: Origin::Peer,
        })
    }

    /// Answers a peer's entry request: through the single flight with peers
    /// off, so concurrent demand from the whole fleet makes one upstream
    /// call and an owner never forwards.
    pub async fn serve_peer(&self, req: p2p::wire::Request) -> p2p::wire::Response {
        use p2p::wire::{Response, WireShape};
        let p2p::wire::Request::Entry {
            key,
            path,
            query,
            shape,
            limit,
        } = req
        else {
            return Response::Error("not an entry request".into());
        };
        let key = match CacheKey::parse(&key) {
            Ok(k) => k,
            Err(e) => return Response::Error(format!("bad key: {e}")),
        };
        let mut req = Request {
            path,
            query,
            shape: match shape {
                WireShape::Single => upstream::Shape::Single,
                WireShape::Array => upstream::Shape::Array,
                WireShape::WorkflowRuns => upstream::Shape::Field("workflow_runs"),
                WireShape::Runners => upstream::Shape::Field("runners"),
            },
            limit: limit.map(|l| l as usize),
            ..Request::default()
        };
        // The request must be the one its key names (a peer cannot file
        // one path under another's key); the shape follows the operation.
        match tools::key_of(key.operation(), &req) {
            Some((expected, shape)) if expected.as_str() == key.as_str() => req.shape = shape,
            _ => return Response::Error("the request does not match its key".into()),
        }
        match self.read_with(&key, &req, false).await {
            // A stale answer is not worth spreading: the asker has its own.
            Ok(served) if served.mode == CacheMode::Stale => Response::Error("only a stale entry".into()),
            Ok(served) => Response::Entry {
                key: key.as_str().to_string(),
                status: served.entry.status,
                etag: served.entry.etag.as_ref().map(|t| t.as_str().to_string()),
                age_ms: served.entry.age(self.cache.now()).as_millis() as u64,
                ttl_ms: served.entry.ttl.as_millis() as u64,
                body: served.entry.body.to_vec(),
            },
            Err(e) => Response::Error(e.to_string()),
        }
    }

    /// This node's counters, as peers get them.
    pub fn stats_reply(&self) -> p2p::wire::StatsReply {
        let s = self.cache.stats();
        p2p::wire::StatsReply {
            lookups: s.lookups,
            hits: s.hits,
            misses: s.misses,
            api_calls: s.api_calls,
            api_calls_saved: s.api_calls_saved,
            peer_hits: s.peer_hits,
            entries: s.entries,
            peers: {
                let client = self.p2p.borrow().clone();
                client.map_or(0, |c| c.connected().len() as u64)
            },
        }
    }

    /// The `aggregate` section of the stats: this node plus every connected
    /// peer that answers within [`PEER_STATS_TIMEOUT`]; the others are
    /// listed as unreachable.
    async fn aggregate(&self) -> Value {
        let Some(client) = self.p2p.borrow().clone() else {
            return Value::Null;
        };
        let mine = self.stats_reply();
        let answers = client.fleet_stats(PEER_STATS_TIMEOUT).await;
        let row = |id: String, s: &p2p::wire::StatsReply| {
            json!({"peer_id": id, "api_calls": s.api_calls, "api_calls_saved": s.api_calls_saved, "hits": s.hits,
                   "misses": s.misses, "peer_hits": s.peer_hits, "lookups": s.lookups, "entries": s.entries, "peers": s.peers})
        };
        let mut per_peer = vec![row(client.local_peer_id().to_string(), &mine)];
        let mut total = mine.clone();
        let mut unreachable = Vec::new();
        for (peer, r) in answers {
            match r {
                Ok(s) => {
                    total.api_calls += s.api_calls;
                    total.api_calls_saved += s.api_calls_saved;
                    total.hits += s.hits;
                    total.misses += s.misses;
                    total.peer_hits += s.peer_hits;
                    total.lookups += s.lookups;
                    total.entries += s.entries;
                    per_peer.push(row(peer.to_string(), &s));
                }
                Err(e) => unreachable.push(json!({"peer_id": peer.to_string(), "error": e})),
            }
        }
        json!({
            "nodes": per_peer.len(),
            "peers": client.connected().len(),
            "api_calls": total.api_calls,
            "api_calls_saved": total.api_calls_saved,
            "hits": total.hits,
            "misses": total.misses,
            "peer_hits": total.peer_hits,
            "lookups": total.lookups,
            "per_peer": per_peer,
            "unreachable": unreachable,
        })
    }

    /// The JSON answer of a read tool.
    fn read_result(&self, key: &CacheKey, served: &Served) -> Value {
        let body = if key.operation() == crate::core::Operation::Api {
            response::Response::decode(served.entry.status, &served.entry.body).body
        } else {
            served.entry.body.clone()
        };
        let data = serde_json::from_slice::<Value>(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        json!({
            "cache_mode": served.mode.as_str(),
            "status": served.entry.status,
            "age_secs": served.entry.age(self.cache.now()).as_secs(),
            "etag": served.entry.etag.as_ref().map(|t| t.as_str()),
            "origin": served.entry.origin,
            "data": data,
        })
    }

    /// Runs a validated tool call; errors carry JSON-RPC codes.
    pub async fn call(&self, call: ToolCall) -> Result<Value, RpcError> {
        match call {
            ToolCall::Stats => {
                let mut v = self.stats_json();
                v["aggregate"] = self.aggregate().await;
                Ok(v)
            }
            ToolCall::ListPeers => {
                let client = self.p2p.borrow().clone();
                match client {
                    None => Ok(json!({"running": false, "peer_id": null, "peers": []})),
                    Some(c) => {
                        let peers = c.peers().await;
                        Ok(
                            json!({"running": true, "peer_id": c.local_peer_id().to_string(), "count": peers.len(), "peers": peers}),
                        )
                    }
                }
            }
            ToolCall::Invalidate(what) => {
                let removed = self.invalidate(&what);
                Ok(match what {
                    Invalidate::All => json!({"invalidated": removed, "pattern": "*"}),
                    Invalidate::Prefix(p) => json!({"invalidated": removed, "pattern": p}),
                    Invalidate::Repository(r) => json!({"invalidated": removed, "repo": r}),
                })
            }
            ToolCall::AuthStatus => {
                let source = format!("{:?}", self.config.token_source);
                if !self.upstream.authenticated() {
                    return Ok(json!({"authenticated": false, "token_source": source, "cache_mode": null}));
                }
                let key = CacheKey::new(crate::core::Operation::AuthStatus, [("path", Some("/user"))]);
                let served = self
                    .read(&key, &Request::single("/user"))
                    .await
                    .map_err(|e| self.read_error(&e))?;
                let mut v = self.read_result(&key, &served);
                v["authenticated"] = json!(served.entry.status == 200);
                v["token_source"] = json!(source);
                v["login"] = v["data"]["login"].clone();
                Ok(v)
            }
            ToolCall::Read(key, req) => {
                let served = self.read(&key, &req).await.map_err(|e| self.read_error(&e))?;
                let mut v = self.read_result(&key, &served);
                if key.operation() == crate::core::Operation::RateLimit {
                    v["observed"] = json!(self.upstream.rate_limit());
                }
                if served.entry.status >= 400 {
                    return Err(RpcError {
                        code: -32000,
                        message: format!("GitHub answered {}", served.entry.status),
                        data: Some(v),
                    });
                }
                Ok(v)
            }
        }
    }

    fn read_error(&self, e: &FetchFailed) -> RpcError {
        let (status, body) = match upstream_error(e) {
            Some(u) => (Some(u.http_status()), serde_json::from_slice::<Value>(&u.body).ok()),
            None => (None, None),
        };
        RpcError {
            code: -32000,
            message: e.to_string(),
            data: Some(json!({"status": status, "github": body})),
        }
    }

    /// The `gh_get_cache_stats` result: the core's snapshot, plus top-level
    /// `peer_id` (null while P2P is off), upstream and store state.
    pub fn stats_json(&self) -> Value {
        let stats = self.cache.stats();
        let mut v = serde_json::to_value(&stats).unwrap_or_else(|_| json!({}));
        v["peer_id"] = json!(stats.p2p.peer_id);
        v["p2p_requested"] = json!(self.config.p2p);
        v["rate_limit"] = json!(self.upstream.rate_limit());
        v["store"] = match &self.store {
            Some(store) => {
                let mut s = json!(store.stats());
                s["path"] = json!(self.config.store_path().display().to_string());
                s["error"] = json!(store.last_error());
                s
            }
            None => Value::Null,
        };
        v["uptime_secs"] = json!(self.started.elapsed().as_secs());
        v["upstream_requests"] = json!(self.metrics.upstream_total());
        v
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let stats = self.cache.stats();
        let store = self.store.as_ref().map(Store::stats);
        let mut out = self.metrics.render(&stats, &self.upstream.rate_limit(), store.as_ref());
        self.p2p_metrics.render(&mut out);
        out
    }
}

/// A daemon serving HTTP, as started by [`spawn`].
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The shared state.
    pub app: Arc<App>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    mcp_cancel: CancellationToken,
}

/// Binds `app.config.listen` and serves. Returns once listening;
/// [`Running::addr`] is the address bound (the port the kernel chose when
/// `listen` asks for port 0).
pub async fn spawn(app: App) -> Result<Running, String> {
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(app);
    let mcp_cancel = CancellationToken::new();
    let router = http::router(app.clone(), mcp_cancel.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(http::serve::serve(
        listener,
        router,
        app.clone(),
        app.config.limits.clone(),
        app.metrics.clone(),
        stopped,
    ));
    tracing::info!(%addr, github = %app.config.github_api_url, "ghcache daemon listening");
    Ok(Running {
        addr,
        app,
        stop,
        server,
        mcp_cancel,
    })
}

impl Running {
    /// Graceful stop: stop accepting, let in-flight requests finish within
    /// `drain`, then flush the store (bounded too).
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        self.mcp_cancel.cancel(); // ends MCP sessions and their SSE streams
        if tokio::time::timeout(drain, self.server).await.is_err() {
            tracing::warn!(?drain, "in-flight requests did not finish in time; dropping them");
        }
        if let Some(store) = &self.app.store {
            if tokio::time::timeout(Duration::from_secs(3), store.close())
                .await
                .is_err()
            {
                tracing::warn!("store flush timed out");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Freshness;

    #[test]
    fn wall_times_from_the_future_read_as_now() {
        let clock = DaemonClock::new();
        let now_unix = clock.to_unix_ms(clock.now());
        // Round trip for the past.
        let past = clock.from_unix_ms(now_unix - 10_000);
        assert!(clock.now().since(past) >= Duration::from_secs(10));
        // A record stamped a day ahead (the wall clock went back since):
        // clamped to now, so it is fresh for its TTL and no longer.
        let ahead = clock.from_unix_ms(now_unix + 24 * 3600 * 1000);
        assert!(ahead <= clock.now(), "{ahead} > {}", clock.now());
        let entry = Entry {
            status: 200,
            body: bytes::Bytes::from_static(b"{}"),
            etag: None,
            fetched_at: ahead,
            ttl: Duration::from_secs(60),
            origin: Origin::Disk,
        };
        assert_eq!(entry.freshness(clock.now(), Duration::ZERO), Freshness::Fresh);
        clock.advance(Duration::from_secs(61));
        assert_ne!(entry.freshness(clock.now(), Duration::ZERO), Freshness::Fresh);
        // Extremes neither panic nor overflow.
        assert!(clock.from_unix_ms(u64::MAX) <= clock.now());
        assert_eq!(clock.from_unix_ms(0), Timestamp::ZERO);
        let _ = clock.to_unix_ms(Timestamp::from_millis(u64::MAX));
    }
}
