//! Shared fixtures for the loom models in `tests/`.
//!
//! Every model runs the real core (`ghcache` built with `--cfg loom`, so its
//! locks, condition variables and atomics are loom's) under
//! [`loom::model`], which explores every interleaving of the model's threads
//! up to `LOOM_MAX_PREEMPTIONS` preemptions (the gate uses 2 and 3). A
//! deadlock anywhere, including a thread waiting forever, fails the model.
//!
//! Keep models small: two or three threads, one or two shards, a frozen
//! clock (reading it is not a scheduling point).
#![cfg(loom)]

use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::Arc as StdArc;

use ghcache::core::{
    Api, Cache, CacheConfig, CacheKey, Clock, ETag, Entry, FetchFailed, Fetched, LifecycleConfig, Node, Operation,
    Origin, P2pHost, StartError, Timestamp, Via,
};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// Preemption bound when `LOOM_MAX_PREEMPTIONS` is not set. Unbounded
/// exploration of the three-thread models takes hours; 2 catches the
/// check-then-act and lost-wake-up classes (the known-bad variants prove it).
pub const DEFAULT_MAX_PREEMPTIONS: usize = 2;

/// Runs `f` under loom (like [`loom::model`]) with the bound from
/// `LOOM_MAX_PREEMPTIONS` or [`DEFAULT_MAX_PREEMPTIONS`]. When
/// `LOOM_REPORT` names a file, appends `<test> <executions> <bound>` to it
/// for the gate's table (`ci/loom`).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(DEFAULT_MAX_PREEMPTIONS);
    let executions = StdArc::new(StdAtomicUsize::new(0));
    let counter = executions.clone();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    if let Ok(path) = std::env::var("LOOM_REPORT") {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        let line = format!(
            "{test} {} {bound}\n",
            executions.load(std::sync::atomic::Ordering::Relaxed)
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("LOOM_REPORT is writable");
        file.write_all(line.as_bytes()).expect("LOOM_REPORT is writable");
    }
}

/// A clock that never moves: freshness is decided by TTL alone and reading
/// it adds no interleavings.
pub struct FrozenClock;

impl Clock for FrozenClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_000)
    }
}

/// A small local-only cache with `shards` shards and room for `max_entries`.
pub fn cache(shards: usize, max_entries: usize) -> Cache {
    Cache::new(config(shards, max_entries), StdArc::new(FrozenClock))
}

fn config(shards: usize, max_entries: usize) -> CacheConfig {
    CacheConfig {
        shards,
        max_entries,
        max_bytes: 1 << 20,
        ..CacheConfig::default()
    }
}

/// This execution's process node (loom resets statics per execution), P2P
/// enabled, failing starts backing off for 1 s.
pub fn node() -> Arc<Node> {
    let p2p = LifecycleConfig {
        max_start_failures: 2,
        ..LifecycleConfig::default()
    };
    Node::init(config(1, 8), p2p, StdArc::new(FrozenClock)).expect("first init in this execution")
}

/// The `n`th test key.
pub fn key(n: u32) -> CacheKey {
    CacheKey::new(Operation::Repo, [("repo", Some(format!("o/r{n}")))])
}

/// A fresh entry with `body`.
pub fn entry(cache: &Cache, key: &CacheKey, body: &'static str) -> Entry {
    cache.new_entry(key, body, ETag::new("\"e\""), Origin::Upstream)
}

/// A successful upstream fetch result.
pub fn fetched(cache: &Cache, key: &CacheKey, body: &'static str) -> Result<Fetched, FetchFailed> {
    Ok(Fetched {
        entry: entry(cache, key, body),
        via: Via::Upstream(Api::Rest),
    })
}

/// Counts hosts: started, stopped, and running now.
#[derive(Default)]
pub struct HostLedger {
    /// Starter calls.
    pub starts: AtomicUsize,
    /// `stop()` calls.
    pub stops: AtomicUsize,
}

impl HostLedger {
    /// Hosts started and not yet stopped.
    pub fn running(&self) -> usize {
        self.starts.load(Ordering::SeqCst) - self.stops.load(Ordering::SeqCst)
    }
}

/// A host that records itself in a [`HostLedger`].
pub struct LedgerHost(pub Arc<HostLedger>);

impl P2pHost for LedgerHost {
    fn peer_id(&self) -> String {
        "12D3KooWloom".to_owned()
    }
    fn stop(&self) {
        self.0.stops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A starter that starts a [`LedgerHost`].
pub fn start_host(ledger: &Arc<HostLedger>) -> Result<Box<dyn P2pHost>, StartError> {
    ledger.starts.fetch_add(1, Ordering::SeqCst);
    assert!(ledger.running() <= 1, "two P2P hosts running at once");
    Ok(Box::new(LedgerHost(ledger.clone())))
}
