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
//!   [`FlightLeader::complete`](crate::core::FlightLeader::complete),
//!   [`Cache::stats`], ...); every read goes through the core's single
//!   flight, so concurrent identical reads make one upstream request.
//! - **No lock held across `.await`.** The daemon's own shared state is
//!   atomics (metrics, rate limit) and channels (store).
//! - **No fetch that outlives its caller holding the flight.** The leader's
//!   guard abandons the flight when its task is dropped; followers retry.
//!
//! # Modules
//! - [`config`]: flags, TOML, environment.
//! - [`upstream`]: the GitHub client.
//! - [`tools`]: the tools, shared by [`mcp`] and [`jsonrpc`].
//! - [`http`]: the axum router: `/mcp`, `/jsonrpc`, `/github/*`, `/metrics`,
//!   `/healthz`, with Origin, token and body-size checks.
//! - [`store`]: the redb store, write-behind.
//! - [`metrics`]: counters and Prometheus text.
//! - [`shutdown`]: signals and sd_notify.

pub mod config;
pub mod http;
pub mod jsonrpc;
pub mod mcp;
pub mod metrics;
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
    Begin, Cache, CacheKey, CacheMode, Clock, Entry, Event, FetchFailed, FlightOutcome, Origin, Served, Timestamp,
};
use crate::sync::StdArc as Arc;
use config::Config;
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
        (self.start_unix_ms + t.as_millis()).saturating_sub(Self::OFFSET_MS)
    }

    /// The reading of a wall-clock time (Unix ms), saturating at the origin.
    pub fn from_unix_ms(&self, unix_ms: u64) -> Timestamp {
        Timestamp::from_millis((unix_ms + Self::OFFSET_MS).saturating_sub(self.start_unix_ms))
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
            let (store, loaded) = Store::open(&config.store_path(), bounds, &keep).map_err(|e| e.to_string())?;
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
            tracing::info!(path = %config.store_path().display(), records = n, loaded = kept, corrupt = store.stats().corrupt, "store opened");
            Some(store)
        } else {
            None
        };
        Ok(App {
            cache,
            clock,
            upstream,
            store,
            metrics,
            config,
            started: Instant::now(),
        })
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
    pub async fn read(&self, key: &CacheKey, req: &Request) -> Result<Served, FetchFailed> {
        let result = self.read_inner(key, req).await;
        match &result {
            Ok(served) => self.metrics.served(served.mode),
            Err(_) => self.metrics.served_error(),
        }
        result
    }

    async fn read_inner(&self, key: &CacheKey, req: &Request) -> Result<Served, FetchFailed> {
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
                    let stale = leader.stale().cloned();
                    let fetched = self.upstream.fetch(&self.cache, key, req, stale.as_deref()).await;
                    return match leader.complete(fetched) {
                        Ok(served) => {
                            self.persist(key, &served.entry);
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

    /// The JSON answer of a read tool.
    fn read_result(&self, served: &Served) -> Value {
        let data = serde_json::from_slice::<Value>(&served.entry.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&served.entry.body).into_owned()));
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
            ToolCall::Stats => Ok(self.stats_json()),
            ToolCall::Invalidate(what) => {
                let removed = match &what {
                    Invalidate::All => self.cache.clear(),
                    Invalidate::Prefix(p) => self.cache.invalidate_prefix(p),
                };
                let prefix = match &what {
                    Invalidate::All => String::new(),
                    Invalidate::Prefix(p) => p.clone(),
                };
                if let Some(store) = &self.store {
                    store.delete_prefix(&prefix);
                }
                Ok(json!({"invalidated": removed, "pattern": if prefix.is_empty() { "*".to_string() } else { prefix }}))
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
                let mut v = self.read_result(&served);
                v["authenticated"] = json!(served.entry.status == 200);
                v["token_source"] = json!(source);
                v["login"] = v["data"]["login"].clone();
                Ok(v)
            }
            ToolCall::Read(key, req) => {
                let served = self.read(&key, &req).await.map_err(|e| self.read_error(&e))?;
                let mut v = self.read_result(&served);
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
        v["store"] = json!(self.store.as_ref().map(Store::stats));
        v["uptime_secs"] = json!(self.started.elapsed().as_secs());
        v["upstream_requests"] = json!(self.metrics.upstream_total());
        v
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let stats = self.cache.stats();
        let store = self.store.as_ref().map(Store::stats);
        self.metrics.render(&stats, &self.upstream.rate_limit(), store.as_ref())
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

/// Binds `app.config.listen` and serves. Returns once listening.
pub async fn spawn(app: App) -> Result<Running, String> {
    let listener = tokio::net::TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Arc::new(app);
    let mcp_cancel = CancellationToken::new();
    let router = http::router(app.clone(), mcp_cancel.clone());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
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
