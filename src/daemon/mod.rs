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
//!   atomics (metrics, rate limit, the open interval of [`history`]),
//!   channels (store), and leaf locks held only to update or copy one small
//!   bounded value (client rates, the history ring, [`activity`],
//!   [`hot_keys`], the dashboard's memo). On the read path, `hot_keys` only
//!   tries its lock and the history ring is locked once per 10 s.
//! - **No fetch that outlives its caller holding the flight.** The leader's
//!   guard abandons the flight when its task is dropped; followers retry.
//!
//! # Modules
//! - this file: [`App`], what it holds, the read path ([`App::read`]:
//!   cache, then the key's owner, then GitHub) and [`App::invalidate`];
//!   `peers.rs`: the fleet side of `App` (asking owners, answering peers,
//!   fleet stats, fleet-wide invalidation); `calls.rs`: running a tool
//!   call, stats and metrics; [`clock`]: the daemon's clock; `run.rs`:
//!   [`spawn`] and [`Running`].
//! - [`config`]: flags, TOML, environment.
//! - [`upstream`]: the GitHub client.
//! - [`tools`]: the tools, shared by [`mcp`] and [`jsonrpc`].
//! - [`http`]: the HTTP surface: `/mcp`, `/jsonrpc`, `/github/*`,
//!   `/webhook`, `/metrics`, `/healthz`, with Host, Origin, token, body,
//!   connection and session bounds.
//! - [`key_path`]: which GitHub path a cache key reads; the path scopes of
//!   [`Invalidate::Paths`].
//! - [`webhook`]: GitHub webhooks: signature, dedupe, the event table.
//! - [`api_base`]: the GitHub API root; every upstream URL is made or
//!   checked there.
//! - [`budget`]: how many GitHub requests one HTTP request may cause.
//! - [`store`]: the redb store, write-behind.
//! - [`metrics`]: counters and Prometheus text.
//! - [`p2p`]: the libp2p node: a key's owner among the peers is asked
//!   before GitHub, in the leader's path only (see [`App::read`]).
//! - [`shutdown`]: signals and sd_notify.
//! - [`history`], [`activity`], [`hot_keys`]: what the dashboard shows
//!   beside the counters (the last hour of reads, recent invalidations and
//!   webhook deliveries, the hottest keys); each bounded.
//! - [`ready`]: the ready file and sd_notify `READY=1`/`STATUS=`, naming
//!   the bound addresses once both listeners are up.

pub mod activity;
pub mod api_base;
pub mod budget;
mod calls;
pub mod clock;
pub mod config;
pub mod flags;
pub mod history;
pub mod hot_keys;
pub mod http;
pub mod jsonrpc;
pub mod key_path;
pub mod mcp;
pub mod metrics;
pub mod p2p;
mod peers;
pub mod private_fs;
pub mod ready;
pub mod response;
mod run;
pub mod shutdown;
pub mod store;
pub mod tools;
pub mod upstream;
pub mod webhook;

use crate::sync::Ordering;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::core::{
    Begin, Cache, CacheKey, CacheMode, Clock, ETag, Entry, Event, FetchFailed, Fetched, FlightOutcome, Origin, Served,
    Via,
};
use crate::sync::StdArc as Arc;
pub use clock::DaemonClock;
use config::Config;
pub use run::{spawn, Running};

use metrics::Metrics;
use store::{Store, StoredEntry};
use tools::{Invalidate, RpcError, ToolCall};
use upstream::{Request, Upstream, UpstreamError};

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
    /// The webhook receiver, when a webhook secret is configured.
    pub webhook: Option<webhook::Webhook>,
    /// Reads over the last hour, for the dashboard's plots.
    pub history: history::History,
    /// Recent invalidations and webhook deliveries.
    pub activity: activity::Activity,
    /// The most read keys.
    pub hot_keys: hot_keys::HotKeys,
    /// The proxy's recent answers, built once per entry and base.
    pub replays: http::replay::Replays,
    /// The key of the credential partitions' hash (random per process, so
    /// a partition name says nothing about its token elsewhere).
    partition_key: ring::hmac::Key,
    /// Whether entries loaded from the store may be served as they are.
    /// True from the start, unless the node is about to join a fleet
    /// ([`App::expect_fleet_epoch`], called by `main` before serving when
    /// it starts a P2P node that is not alone by configuration); then true
    /// once this node has compared its invalidation epoch with the fleet's
    /// (and cleared, if it was behind). Until then an entry of
    /// [`Origin::Disk`] is revalidated with GitHub before it is served (a
    /// 304 costs no quota), so a node restarted from a store that predates
    /// a fleet invalidation never serves what the fleet dropped.
    disk_entries_confirmed: std::sync::atomic::AtomicBool,
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
        let webhook = config.webhook_secret.0.as_deref().map(webhook::Webhook::new);
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
            webhook,
            history: history::History::hour(),
            activity: activity::Activity::default(),
            hot_keys: hot_keys::HotKeys::default(),
            replays: http::replay::Replays::default(),
            client_rates,
            partition_key: {
                let rng = ring::rand::SystemRandom::new();
                ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
                    .map_err(|_| "cannot draw a random key".to_string())?
            },
            disk_entries_confirmed: std::sync::atomic::AtomicBool::new(true),
            started: Instant::now(),
        })
    }

    /// This node is about to join a fleet: until its invalidation epoch
    /// has been compared with the fleet's ([`App::confirm_disk_entries`]),
    /// entries loaded from the store are revalidated before they are
    /// served. Call before serving.
    pub fn expect_fleet_epoch(&self) {
        self.disk_entries_confirmed
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The fleet's invalidation epoch has been compared with this node's
    /// (see the `disk_entries_confirmed` field): entries loaded
    /// from the store are served as they are from now on.
    pub fn confirm_disk_entries(&self) {
        if !self
            .disk_entries_confirmed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::debug!("invalidation epoch compared with the fleet; stored entries are served");
        }
    }

    /// A fresh `entry` loaded from the store before the fleet's epoch was
    /// compared: revalidated, not served.
    fn unconfirmed_disk_entry(&self, entry: &Entry) -> bool {
        entry.origin == Origin::Disk && !self.disk_entries_confirmed.load(std::sync::atomic::Ordering::Acquire)
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
            Invalidate::Paths(scopes) => self
                .cache
                .invalidate_matching(|key| key_path::any_covers_key_text(scopes, key.as_str())),
        };
        if let Some(store) = &self.store {
            match what {
                Invalidate::All => store.delete_prefix(""),
                Invalidate::Prefix(p) => store.delete_prefix(p),
                Invalidate::Repository(r) => store.delete_repository(r),
                Invalidate::Paths(scopes) => store.delete_paths(scopes),
            }
        }
        tracing::debug!(?what, dropped, "invalidated");
        let scope = match what {
            Invalidate::All => "everything".to_string(),
            Invalidate::Prefix(p) => format!("keys starting {p}"),
            Invalidate::Repository(r) => format!("repository {r}"),
            Invalidate::Paths(scopes) => {
                let shown: Vec<String> = scopes
                    .iter()
                    .map(|p| format!("{}{}", p.path, if p.tree { "/…" } else { "" }))
                    .collect();
                format!("paths {}", shown.join(", "))
            }
        };
        self.activity.record(
            activity::Kind::Invalidation,
            format!("{scope}: {dropped} entries dropped"),
        );
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
        let started = Instant::now();
        let result = self.read_inner(key, req, peers, prior).await;
        match &result {
            Ok(served) => self.metrics.served(served.mode),
            Err(_) => self.metrics.served_error(),
        }
        let hit = matches!(&result, Ok(s) if s.mode == CacheMode::Hit);
        let now = Instant::now();
        self.history
            .observe(now, now.saturating_duration_since(started), hit, result.is_err());
        self.hot_keys.note(key);
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
        let mut prior = prior;
        loop {
            match self.cache.begin(key) {
                Begin::Fresh(entry) if self.unconfirmed_disk_entry(&entry) => {
                    // Revalidated as `read_revalidated` does: its ETag is
                    // sent, and it is served stale if GitHub cannot answer.
                    self.cache.invalidate(key);
                    prior = Some(entry);
                }
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
                    // The fetches are boxed: their futures are large, and
                    // inline they would make every read's future (a hit's
                    // too) that large, to be copied as it is moved.
                    let from_peer = if peers {
                        Box::pin(self.ask_owner(key, req)).await
                    } else {
                        None
                    };
                    let fetched = match from_peer {
                        Some(entry) => Ok(Fetched { entry, via: Via::Peer }),
                        None => Box::pin(self.upstream.fetch(&self.cache, key, req, stale.as_deref())).await,
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
}
