//! The daemon's own counters and the Prometheus text of `GET /metrics`.
//!
//! Cache counters are not kept here: they come from one
//! [`StatsSnapshot`](crate::core::StatsSnapshot) per scrape, so they are
//! consistent with each other. What the core cannot see (upstream HTTP
//! statuses, how answers were served, the store, the process) lives in
//! plain atomics: no lock at all.

use crate::sync::{AtomicU64, Ordering};
use std::fmt::Write as _;

use crate::core::{CacheMode, StatsSnapshot};

use super::store::StoreStatsSnapshot;
use super::upstream::RateLimitSnapshot;
use super::webhook::Outcome as WebhookOutcome;

const MODES: [CacheMode; 6] = [
    CacheMode::Hit,
    CacheMode::Miss,
    CacheMode::Revalidated,
    CacheMode::Stale,
    CacheMode::Coalesced,
    CacheMode::Peer,
];

/// Status classes of upstream answers, as labels.
const STATUS_LABELS: [&str; 7] = ["200", "2xx", "304", "404", "4xx", "5xx", "error"];

/// Why the HTTP surface refused or cut a request or connection: the
/// `reason` label of `ghcache_http_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached (503).
    Connections,
    /// `max_connections_per_client` reached (429).
    ConnectionsPerClient,
    /// No complete request headers within `http_idle_timeout_ms`
    /// (connection closed).
    IdleTimeout,
    /// The body did not arrive within `http_body_timeout_ms` (408).
    BodyTimeout,
    /// The body is over `max_body_bytes` (413).
    BodyTooLarge,
    /// `Host` not allowed (403).
    Host,
    /// `Origin` not allowed (403).
    Origin,
    /// Missing or wrong bearer token (401).
    Token,
    /// `max_mcp_sessions` reached (503).
    McpSessions,
    /// `max_mcp_sessions_per_client` reached (429).
    McpSessionsPerClient,
    /// A JSON-RPC batch over `max_batch` calls.
    BatchSize,
    /// A read beyond `max_upstream_per_request` GitHub requests.
    UpstreamBudget,
    /// A read beyond the client's `client_upstream_per_minute` (429).
    ClientRate,
}

impl Refusal {
    const ALL: [Refusal; 13] = [
        Refusal::Connections,
        Refusal::ConnectionsPerClient,
        Refusal::IdleTimeout,
        Refusal::BodyTimeout,
        Refusal::BodyTooLarge,
        Refusal::Host,
        Refusal::Origin,
        Refusal::Token,
        Refusal::McpSessions,
        Refusal::McpSessionsPerClient,
        Refusal::BatchSize,
        Refusal::UpstreamBudget,
        Refusal::ClientRate,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::ConnectionsPerClient => "connections_per_client",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Token => "token",
            Refusal::McpSessions => "mcp_sessions",
            Refusal::McpSessionsPerClient => "mcp_sessions_per_client",
            Refusal::BatchSize => "batch_size",
            Refusal::UpstreamBudget => "upstream_budget",
            Refusal::ClientRate => "client_rate",
        }
    }
}

fn mode_index(mode: CacheMode) -> usize {
    MODES.iter().position(|m| *m == mode).unwrap_or(0)
}

/// Daemon-side counters (see the module docs).
#[derive(Debug, Default)]
pub struct Metrics {
    served: [AtomicU64; 6],
    served_errors: AtomicU64,
    upstream: [AtomicU64; 7],
    upstream_skipped: AtomicU64,
    refused: [AtomicU64; 13],
    webhook: [AtomicU64; 7],
    quota_exhausted: AtomicU64,
    /// HTTP connections open now.
    pub connections: AtomicU64,
    /// MCP sessions open now.
    pub mcp_sessions: AtomicU64,
}

impl Metrics {
    /// An answer served in `mode`.
    pub fn served(&self, mode: CacheMode) {
        self.served[mode_index(mode)].fetch_add(1, Ordering::Relaxed);
    }

    /// A read that ended in an error.
    pub fn served_error(&self) {
        self.served_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An upstream exchange ended with `status` (`None`: no answer).
    pub fn upstream_response(&self, status: Option<u16>) {
        let i = match status {
            Some(200) => 0,
            Some(201..=299) => 1,
            Some(304) => 2,
            Some(404) => 3,
            Some(400..=499) => 4,
            Some(500..) => 5,
            _ => 6,
        };
        self.upstream[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A request not sent because the quota is spent.
    pub fn upstream_skipped_rate_limited(&self) {
        self.upstream_skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// The daemon's GitHub quota was seen spent (once per window).
    pub fn quota_exhausted(&self) {
        self.quota_exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// A refusal of the HTTP surface.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook delivery ended with `outcome`.
    pub fn webhook(&self, outcome: WebhookOutcome) {
        let i = WebhookOutcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.webhook[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Upstream exchanges so far, all statuses.
    pub fn upstream_total(&self) -> u64 {
        self.upstream.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Answers served in `mode` so far.
    pub fn served_count(&self, mode: CacheMode) -> u64 {
        self.served[mode_index(mode)].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        stats: &StatsSnapshot,
        rate: &RateLimitSnapshot,
        store: Option<&StoreStatsSnapshot>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, value: u64| metric(&mut out, "counter", name, help, value);
        counter("lookups_total", "Cache lookups.", stats.lookups);
        counter("hits_total", "Lookups answered fresh from the cache.", stats.hits);
        counter(
            "stale_hits_total",
            "Lookups that found a stale entry.",
            stats.stale_hits,
        );
        counter("misses_total", "Lookups that found nothing usable.", stats.misses);
        counter(
            "coalesced_total",
            "Callers that waited for another caller's fetch.",
            stats.coalesced,
        );
        counter("peer_hits_total", "Entries obtained from peers.", stats.peer_hits);
        counter(
            "expirations_total",
            "Entries dropped past TTL plus grace.",
            stats.expirations,
        );
        counter(
            "evictions_total",
            "Entries dropped to stay within bounds.",
            stats.evictions,
        );
        counter(
            "revalidations_total",
            "Conditional requests answered 304 (free).",
            stats.revalidations,
        );
        counter("api_calls_total", "Upstream calls that cost quota.", stats.api_calls);
        counter(
            "api_calls_saved_total",
            "Reads answered without spending quota.",
            stats.api_calls_saved,
        );
        counter(
            "stale_served_total",
            "Stale entries served because GitHub could not be asked.",
            stats.stale_served,
        );
        counter("fetch_errors_total", "Fetches that failed.", stats.fetch_errors);
        counter(
            "abandoned_flights_total",
            "Fetches whose leader vanished.",
            stats.abandoned_flights,
        );
        counter("inserts_total", "Entries stored.", stats.inserts);
        counter(
            "rejected_inserts_total",
            "Entries refused for size.",
            stats.rejected_inserts,
        );
        counter(
            "invalidations_total",
            "Entries removed by invalidation.",
            stats.invalidations,
        );
        counter(
            "upstream_skipped_total",
            "Upstream requests not sent because the rate limit was exhausted.",
            self.upstream_skipped.load(Ordering::Relaxed),
        );
        counter(
            "ratelimit_exhausted_total",
            "Rate-limit windows in which the daemon's GitHub quota was spent.",
            self.quota_exhausted.load(Ordering::Relaxed),
        );
        counter(
            "served_errors_total",
            "Reads that ended in an error.",
            self.served_errors.load(Ordering::Relaxed),
        );
        if let Some(s) = store {
            counter("store_writes_total", "Entries written to the store.", s.written);
            counter(
                "store_dropped_total",
                "Writes dropped because the store queue was full.",
                s.dropped,
            );
            counter("store_corrupt_total", "Corrupt store records skipped.", s.corrupt);
            counter(
                "store_loaded_total",
                "Entries loaded from the store at start.",
                s.loaded,
            );
            counter(
                "store_errors_total",
                "Store batches not committed (commit failed or store unavailable).",
                s.errors,
            );
        }
        let mut gauge = |name: &str, help: &str, value: u64| metric(&mut out, "gauge", name, help, value);
        gauge("entries", "Entries held.", stats.entries);
        gauge("bytes", "Bytes held.", stats.bytes);
        gauge("max_entries", "Entry bound.", stats.max_entries);
        gauge("max_bytes", "Byte bound.", stats.max_bytes);
        gauge("in_flight", "Fetches in progress.", stats.in_flight);
        gauge(
            "http_connections",
            "HTTP connections open.",
            self.connections.load(Ordering::Relaxed),
        );
        gauge(
            "mcp_sessions",
            "MCP sessions open.",
            self.mcp_sessions.load(Ordering::Relaxed),
        );
        if let Some(s) = store {
            gauge(
                "store_degraded",
                "1 while the store cannot be written: serving from memory only.",
                u64::from(s.degraded),
            );
        }
        if let Some(v) = rate.remaining {
            gauge("ratelimit_remaining", "GitHub requests left in this window.", v);
        }
        if let Some(v) = rate.limit {
            gauge("ratelimit_limit", "GitHub requests per window.", v);
        }
        if let Some(v) = rate.reset {
            gauge(
                "ratelimit_reset_seconds",
                "When the GitHub window resets (unix seconds).",
                v,
            );
        }
        if let Some(n) = open_fds() {
            gauge("open_fds", "Open file descriptors.", n);
        }
        if let Some(n) = threads() {
            gauge("threads", "OS threads of the process.", n);
        }
        let _ = writeln!(
            out,
            "# HELP ghcache_p2p_running 1 when the P2P host runs.\n# TYPE ghcache_p2p_running gauge"
        );
        let _ = writeln!(out, "ghcache_p2p_running {}", u8::from(stats.p2p.peer_id.is_some()));

        let _ = writeln!(
            out,
            "# HELP ghcache_served_total Answers served, by cache mode.\n# TYPE ghcache_served_total counter"
        );
        for mode in MODES {
            let _ = writeln!(
                out,
                "ghcache_served_total{{mode=\"{}\"}} {}",
                mode.as_str(),
                self.served_count(mode)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ghcache_upstream_requests_total GitHub HTTP exchanges, by status.\n# TYPE ghcache_upstream_requests_total counter"
        );
        for (label, value) in STATUS_LABELS.iter().zip(&self.upstream) {
            let _ = writeln!(
                out,
                "ghcache_upstream_requests_total{{status=\"{label}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ghcache_http_refused_total Requests and connections refused or cut by a limit or check, by reason.\n# TYPE ghcache_http_refused_total counter"
        );
        for (why, value) in Refusal::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "ghcache_http_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ghcache_webhook_deliveries_total GitHub webhook deliveries, by result.\n# TYPE ghcache_webhook_deliveries_total counter"
        );
        for (outcome, value) in WebhookOutcome::ALL.iter().zip(&self.webhook) {
            let _ = writeln!(
                out,
                "ghcache_webhook_deliveries_total{{result=\"{}\"}} {}",
                outcome.as_str(),
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Appends one Prometheus metric of `kind` (`counter` or `gauge`) with its
/// HELP and TYPE lines.
fn metric(out: &mut String, kind: &str, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP ghcache_{name} {help}\n# TYPE ghcache_{name} {kind}\nghcache_{name} {value}"
    );
}

/// Open file descriptors (Linux: entries of `/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64)
}

/// OS threads (Linux: `Threads:` of `/proc/self/status`).
pub fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}
