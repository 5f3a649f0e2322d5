//! The daemon's own counters and latency histograms, and the OpenMetrics
//! text of `GET /metrics`.
//!
//! Cache counters are not kept here: they come from one
//! [`StatsSnapshot`](crate::core::StatsSnapshot) per scrape, so they are
//! consistent with each other. What the core cannot see (upstream HTTP
//! statuses, how answers were served, the store, the process) lives in
//! plain atomics: no lock at all. Latencies go into prometheus-client
//! histograms (each observation takes the histogram's own short lock,
//! never held across anything else).
//!
//! A scrape gathers every value into one [`Exposition`] (this module's,
//! then other components' such as the P2P node's), which prometheus-client
//! encodes: names get the `ghcache_` prefix, counters the `_total` suffix,
//! and the text ends with `# EOF` (OpenMetrics 1.0, which Prometheus reads).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::sync::{AtomicU64, Ordering};

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

/// The routes whose latency is measured apart: the `route` label of
/// `ghcache_http_request_duration_seconds`.
pub const ROUTES: [&str; 7] = ["mcp", "jsonrpc", "github", "webhook", "dashboard", "metrics", "other"];

/// The `route` label of a request path.
pub fn route_of(path: &str) -> &'static str {
    match path {
        "/" | "/api/dashboard" => return "dashboard",
        _ => {}
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    match first {
        "mcp" => "mcp",
        "jsonrpc" => "jsonrpc",
        "github" => "github",
        "webhook" => "webhook",
        "metrics" => "metrics",
        _ => "other",
    }
}

/// Buckets from 100 µs to about 26 s (×2 each): a cached answer takes well
/// under a millisecond, a slow GitHub several seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Daemon-side counters (see the module docs).
#[derive(Debug)]
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
    /// Time to each HTTP answer's headers, per [`ROUTES`] entry.
    http_latency: [Histogram; 7],
    /// Time from sending a GitHub request to its answer's headers.
    upstream_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            served: Default::default(),
            served_errors: AtomicU64::new(0),
            upstream: Default::default(),
            upstream_skipped: AtomicU64::new(0),
            refused: Default::default(),
            webhook: Default::default(),
            quota_exhausted: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            mcp_sessions: AtomicU64::new(0),
            http_latency: std::array::from_fn(|_| latency_histogram()),
            upstream_latency: latency_histogram(),
        }
    }
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

    /// An HTTP request to `route` (see [`route_of`]) answered after `seconds`.
    pub fn http_answered(&self, route: &str, seconds: f64) {
        let i = ROUTES.iter().position(|r| *r == route).unwrap_or(ROUTES.len() - 1);
        self.http_latency[i].observe(seconds);
    }

    /// A GitHub request answered (headers received) after `seconds`.
    pub fn upstream_answered(&self, seconds: f64) {
        self.upstream_latency.observe(seconds);
    }

    /// Upstream exchanges so far, all statuses.
    pub fn upstream_total(&self) -> u64 {
        self.upstream.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Answers served in `mode` so far.
    pub fn served_count(&self, mode: CacheMode) -> u64 {
        self.served[mode_index(mode)].load(Ordering::Relaxed)
    }

    /// Adds this scrape's values to `out`.
    pub fn expose(
        &self,
        out: &mut Exposition,
        stats: &StatsSnapshot,
        rate: &RateLimitSnapshot,
        store: Option<&StoreStatsSnapshot>,
    ) {
        let mut counter = |name, help, value| out.counter(name, help, value);
        counter("lookups", "Cache lookups.", stats.lookups);
        counter("hits", "Lookups answered fresh from the cache.", stats.hits);
        counter("stale_hits", "Lookups that found a stale entry.", stats.stale_hits);
        counter("misses", "Lookups that found nothing usable.", stats.misses);
        counter(
            "coalesced",
            "Callers that waited for another caller's fetch.",
            stats.coalesced,
        );
        counter("peer_hits", "Entries obtained from peers.", stats.peer_hits);
        counter("expirations", "Entries dropped past TTL plus grace.", stats.expirations);
        counter("evictions", "Entries dropped to stay within bounds.", stats.evictions);
        counter(
            "revalidations",
            "Conditional requests answered 304 (free).",
            stats.revalidations,
        );
        counter("api_calls", "Upstream calls that cost quota.", stats.api_calls);
        counter(
            "api_calls_saved",
            "Reads answered without spending quota.",
            stats.api_calls_saved,
        );
        counter(
            "stale_served",
            "Stale entries served because GitHub could not be asked.",
            stats.stale_served,
        );
        counter("fetch_errors", "Fetches that failed.", stats.fetch_errors);
        counter(
            "abandoned_flights",
            "Fetches whose leader vanished.",
            stats.abandoned_flights,
        );
        counter("inserts", "Entries stored.", stats.inserts);
        counter("rejected_inserts", "Entries refused for size.", stats.rejected_inserts);
        counter("invalidations", "Entries removed by invalidation.", stats.invalidations);
        counter(
            "upstream_skipped",
            "Upstream requests not sent because the rate limit was exhausted.",
            self.upstream_skipped.load(Ordering::Relaxed),
        );
        counter(
            "ratelimit_exhausted",
            "Rate-limit windows in which the daemon's GitHub quota was spent.",
            self.quota_exhausted.load(Ordering::Relaxed),
        );
        counter(
            "served_errors",
            "Reads that ended in an error.",
            self.served_errors.load(Ordering::Relaxed),
        );
        if let Some(s) = store {
            counter("store_writes", "Entries written to the store.", s.written);
            counter(
                "store_dropped",
                "Writes dropped because the store queue was full.",
                s.dropped,
            );
            counter("store_corrupt", "Corrupt store records skipped.", s.corrupt);
            counter("store_loaded", "Entries loaded from the store at start.", s.loaded);
            counter(
                "store_errors",
                "Store batches not committed (commit failed or store unavailable).",
                s.errors,
            );
        }
        let mut gauge = |name, help, value| out.gauge(name, help, value);
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
        gauge(
            "p2p_running",
            "1 when the P2P host runs.",
            u64::from(stats.p2p.peer_id.is_some()),
        );
        out.counters(
            "served",
            "Answers served, by cache mode.",
            "mode",
            MODES.iter().map(|m| (m.as_str(), self.served_count(*m))),
        );
        out.counters(
            "upstream_requests",
            "GitHub HTTP exchanges, by status.",
            "status",
            STATUS_LABELS
                .iter()
                .zip(&self.upstream)
                .map(|(label, v)| (*label, v.load(Ordering::Relaxed))),
        );
        out.counters(
            "http_refused",
            "Requests and connections refused or cut by a limit or check, by reason.",
            "reason",
            Refusal::ALL
                .iter()
                .zip(&self.refused)
                .map(|(why, v)| (why.as_str(), v.load(Ordering::Relaxed))),
        );
        out.counters(
            "webhook_deliveries",
            "GitHub webhook deliveries, by result.",
            "result",
            WebhookOutcome::ALL
                .iter()
                .zip(&self.webhook)
                .map(|(outcome, v)| (outcome.as_str(), v.load(Ordering::Relaxed))),
        );
        out.histograms(
            "http_request_duration",
            "Time to each HTTP answer's headers, by route.",
            "route",
            ROUTES.iter().copied().zip(self.http_latency.iter().cloned()),
        );
        out.histograms(
            "upstream_request_duration",
            "Time from sending a GitHub request to its answer's headers.",
            "kind",
            [("rest", self.upstream_latency.clone())],
        );
    }
}

/// A label of one sample: `(name, value)`, or none.
type Label = Option<(&'static str, &'static str)>;

/// The samples of one metric family.
#[derive(Debug)]
enum Samples {
    Counter(Vec<(Label, u64)>),
    Gauge(Vec<(Label, u64)>),
    Histogram(Vec<((&'static str, &'static str), Histogram)>),
}

#[derive(Debug)]
struct Family {
    /// Without the `ghcache_` prefix and, for counters, the `_total` suffix.
    name: &'static str,
    help: &'static str,
    samples: Samples,
}

/// One scrape's metric families (module docs). Components add their
/// values; [`Exposition::encode`] turns them into OpenMetrics text.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// A counter `ghcache_<name>_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.push(name, help, Samples::Counter(vec![(None, value)]));
    }

    /// A counter `ghcache_<name>_total` with one sample per value of `label`.
    pub fn counters(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        samples: impl IntoIterator<Item = (&'static str, u64)>,
    ) {
        let samples = samples.into_iter().map(|(v, n)| (Some((label, v)), n)).collect();
        self.push(name, help, Samples::Counter(samples));
    }

    /// A gauge `ghcache_<name>`.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.push(name, help, Samples::Gauge(vec![(None, value)]));
    }

    /// A histogram `ghcache_<name>_seconds`, one per value of `label`.
    pub fn histograms(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        samples: impl IntoIterator<Item = (&'static str, Histogram)>,
    ) {
        let samples = samples.into_iter().map(|(v, h)| ((label, v), h)).collect();
        self.push(name, help, Samples::Histogram(samples));
    }

    fn push(&mut self, name: &'static str, help: &'static str, samples: Samples) {
        debug_assert!(!name.ends_with("_total"), "{name}: the encoder adds _total");
        self.families.push(Family { name, help, samples });
    }

    /// The OpenMetrics text of every family added.
    pub fn encode(self) -> String {
        let mut registry = Registry::with_prefix("ghcache");
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for family in &self.families {
            match &family.samples {
                Samples::Counter(samples) => {
                    let mut metric = encoder.encode_descriptor(family.name, family.help, None, MetricType::Counter)?;
                    for (label, value) in samples {
                        match label {
                            None => metric.encode_counter::<NoLabelSet, _, u64>(value, None)?,
                            Some(l) => metric
                                .encode_family(&[*l])?
                                .encode_counter::<NoLabelSet, _, u64>(value, None)?,
                        }
                    }
                }
                Samples::Gauge(samples) => {
                    let mut metric = encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
                    for (label, value) in samples {
                        match label {
                            None => metric.encode_gauge(value)?,
                            Some(l) => metric.encode_family(&[*l])?.encode_gauge(value)?,
                        }
                    }
                }
                Samples::Histogram(samples) => {
                    let mut metric = encoder.encode_descriptor(
                        family.name,
                        family.help,
                        Some(&Unit::Seconds),
                        MetricType::Histogram,
                    )?;
                    for (label, histogram) in samples {
                        histogram.encode(metric.encode_family(&[*label])?)?;
                    }
                }
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Cache, CacheConfig, ManualClock};
    use crate::sync::StdArc;

    #[test]
    fn the_exposition_is_openmetrics_with_the_names_kept() {
        let metrics = Metrics::default();
        metrics.served(CacheMode::Hit);
        metrics.refused(Refusal::Host);
        metrics.http_answered("github", 0.0005);
        metrics.http_answered("no-such-route", 3.0);
        metrics.upstream_answered(0.2);
        let mut out = Exposition::default();
        let mut stats = Cache::new(CacheConfig::default(), StdArc::new(ManualClock::new())).stats();
        (stats.hits, stats.entries) = (7, 3);
        let rate = RateLimitSnapshot {
            limit: Some(5000),
            remaining: Some(4999),
            used: None,
            reset: None,
            exhausted: false,
            resource: None,
        };
        metrics.expose(&mut out, &stats, &rate, None);
        let text = out.encode();
        for line in [
            "# TYPE ghcache_hits counter",
            "ghcache_hits_total 7",
            "# TYPE ghcache_entries gauge",
            "ghcache_entries 3",
            "ghcache_served_total{mode=\"hit\"} 1",
            "ghcache_served_total{mode=\"miss\"} 0",
            "ghcache_http_refused_total{reason=\"host\"} 1",
            "# TYPE ghcache_http_request_duration_seconds histogram",
            "# UNIT ghcache_http_request_duration_seconds seconds",
            "ghcache_http_request_duration_seconds_count{route=\"github\"} 1",
            "ghcache_http_request_duration_seconds_bucket{le=\"0.0008\",route=\"github\"} 1",
            "ghcache_http_request_duration_seconds_count{route=\"other\"} 1",
            "ghcache_upstream_request_duration_seconds_sum{kind=\"rest\"} 0.2",
            "ghcache_ratelimit_remaining 4999",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One HELP/TYPE per family, however many samples.
        assert_eq!(text.matches("# TYPE ghcache_served counter").count(), 1);
    }

    #[test]
    fn routes_are_named_by_their_first_segment() {
        assert_eq!(route_of("/github/repos/o/r"), "github");
        assert_eq!(route_of("/mcp"), "mcp");
        assert_eq!(route_of("/jsonrpc"), "jsonrpc");
        assert_eq!(route_of("/metrics"), "metrics");
        assert_eq!(route_of("/"), "dashboard");
        assert_eq!(route_of("/api/dashboard"), "dashboard");
        assert_eq!(route_of("/webhook"), "webhook");
        assert_eq!(route_of("/favicon.ico"), "other");
        assert_eq!(route_of("/githubx"), "other");
    }
}
