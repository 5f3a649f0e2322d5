//! The GitHub REST client: GET only, conditional, rate-limit aware, bounded.
//!
//! One call of [`Upstream::fetch`] is what a single-flight leader runs (see
//! [`App::read`](super::App::read)); it never touches the cache itself.
//!
//! - **Revalidation**: a stale entry's ETag goes out as `If-None-Match`; a
//!   304 gives back the stale entry made fresh ([`Via::NotModified`], free).
//! - **Rate limit**: the `x-ratelimit-*` headers of every answer are kept in
//!   atomics; while `remaining == 0` and the reset time has not passed, no
//!   request is sent at all ([`ErrorKind::RateLimited`], the caller then
//!   serves stale).
//! - **Retries**: 5xx answers, timeouts and connection errors are retried
//!   with jittered exponential backoff, `retries` times.
//! - **Bounds**: a per-request timeout and a semaphore on requests in flight
//!   (a permit is held for one HTTP exchange, never across a retry sleep);
//!   a body above `max_upstream_body_bytes` is refused (by its
//!   `Content-Length` before reading, else as soon as the bytes read pass
//!   the limit), so a hostile or broken upstream cannot exhaust memory.
//! - **Checked bodies**: a 2xx answer that claims JSON (or names no type)
//!   must parse as JSON; garbage is [`ErrorKind::Invalid`], never cached.
//!   Invalid answers are not retried (the same request would cost quota
//!   for the same garbage); a stale entry is served instead when there is
//!   one.
//! - **Pagination**: list reads follow `Link: <..>; rel="next"` until the
//!   requested number of items is collected; a multi-page answer is stored
//!   without an ETag (one page's tag does not vouch for the others).
//!
//! - **Confinement**: every URL is made or checked by
//!   [`ApiBase`](super::api_base::ApiBase): the paths clients give, the
//!   `next` links GitHub gives, and redirects (followed only when they stay
//!   under the configured root; otherwise the 3xx is the answer, with its
//!   `Location`, and nothing is cached).
//! - **Checked bodies**, again: a 2xx answer that is not JSON (GitHub was
//!   asked for `application/vnd.github+json`) is [`ErrorKind::Invalid`].
//!
//! The token goes into the `Authorization` header and nowhere else: it is
//! never logged, never sent to a URL that failed the checks above, and
//! errors carry the URL path but no headers.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::api_base::{ApiBase, ApiPath};
use super::config::Config;
use super::metrics::Metrics;
use super::response::Response;
use crate::core::{Api, Cache, CacheKey, ETag, Entry, FetchFailed, Fetched, Origin, Via};
use crate::sync::StdArc as Arc;

/// How list pages merge into one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// One object; no pagination.
    #[default]
    Single,
    /// GitHub's whole answer, kept as a [`Response`] envelope (status,
    /// kept headers, body bytes): plain GETs (`/github/`, `gh_api`).
    Response,
    /// A JSON array per page.
    Array,
    /// An object per page whose named field is the array (`workflow_runs`).
    Field(&'static str),
}

/// One GitHub read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Path below the API root, starting with `/`.
    pub path: String,
    /// Query pairs (already validated; encoded on the way out).
    pub query: Vec<(String, String)>,
    /// How pages merge.
    pub shape: Shape,
    /// Most items wanted (lists only).
    pub limit: Option<usize>,
    /// The media type asked for (`None`: [`DEFAULT_ACCEPT`]).
    pub accept: Option<String>,
    /// `X-GitHub-Api-Version` (`None`: [`DEFAULT_API_VERSION`]).
    pub api_version: Option<String>,
    /// The client's own GitHub token (`None`: the daemon's).
    pub token: Option<ClientToken>,
}

/// The media type asked for when the client names none.
pub const DEFAULT_ACCEPT: &str = "application/vnd.github+json";
/// The REST API version asked for when the client names none.
pub const DEFAULT_API_VERSION: &str = "2022-11-28";

/// A GitHub token a proxy client sent, and the name of its partition (a
/// keyed hash of it); the token is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// The token.
    pub secret: String,
    /// Its partition's name.
    pub partition: String,
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientToken(..)")
    }
}

impl Request {
    /// A single-object read.
    pub fn single(path: impl Into<String>) -> Request {
        Request {
            path: path.into(),
            ..Request::default()
        }
    }

    /// Was GitHub's default JSON asked for (so a 2xx that is not JSON is a
    /// broken answer)? Other media types are GitHub's to shape (`.raw+json`
    /// is the file's bytes).
    fn wants_json(&self) -> bool {
        self.accept.is_none()
    }
}

/// Why a fetch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The quota is spent: nothing was sent. Unix seconds of the reset.
    RateLimited {
        /// When GitHub resets the quota (unix seconds).
        reset: u64,
    },
    /// GitHub answered with this status (not cacheable, e.g. 401, 5xx).
    Status(u16),
    /// Timeout, connection refused or reset, a body cut short.
    Transport,
    /// GitHub answered, but unusably: a body above the limit, or a 2xx
    /// answer that is not JSON. Not retried.
    Invalid,
    /// The URL would leave the API root (a client's path, GitHub's `next`
    /// link): nothing was sent.
    Refused,
    /// The HTTP request that asked has spent its upstream budget
    /// (`max_upstream_per_request`): nothing was sent.
    OverBudget,
}

/// A failed GitHub read: what went wrong, and GitHub's own answer if any.
#[derive(Clone, Debug)]
pub struct UpstreamError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// GitHub's body, when it answered.
    pub body: Bytes,
    /// Human-readable summary (no headers, no token).
    pub message: String,
    /// GitHub's headers worth passing back to a proxy client: the
    /// [`KEPT_HEADERS`](super::response::KEPT_HEADERS) of its answer (the
    /// `Location` of a redirect that was not followed, …) and `Retry-After`.
    pub headers: Vec<(String, Bytes)>,
}

impl UpstreamError {
    /// Could GitHub not be asked (quota, outage)? Then a stale entry may be
    /// served instead.
    pub fn stale_ok(&self) -> bool {
        match self.kind {
            ErrorKind::RateLimited { .. } | ErrorKind::Transport | ErrorKind::Invalid => true,
            ErrorKind::Status(s) => s >= 500 || s == 429,
            ErrorKind::Refused => false,
            ErrorKind::OverBudget => true,
        }
    }

    /// The HTTP status to answer a proxy client with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::RateLimited { .. } => 403,
            ErrorKind::Status(s) => s,
            ErrorKind::Transport | ErrorKind::Invalid => 502,
            ErrorKind::Refused => 400,
            ErrorKind::OverBudget => 429,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpstreamError {}

/// The last rate-limit state GitHub reported (`u64::MAX`: not seen yet).
#[derive(Debug)]
pub struct RateLimit {
    limit: AtomicU64,
    remaining: AtomicU64,
    used: AtomicU64,
    reset: AtomicU64,
    /// A secondary limit's `retry-after`, as a Unix time (0: none).
    pause_until: AtomicU64,
    /// The reset of the last window whose exhaustion was reported.
    reported_reset: AtomicU64,
    /// `x-ratelimit-resource`, as an index into [`RESOURCES`] (`u64::MAX`:
    /// not seen).
    resource: AtomicU64,
}

/// The rate-limit resources GitHub names in `x-ratelimit-resource`.
pub const RESOURCES: [&str; 10] = [
    "core",
    "search",
    "graphql",
    "integration_manifest",
    "source_import",
    "code_scanning_upload",
    "actions_runner_registration",
    "scim",
    "dependency_snapshots",
    "code_search",
];

/// A copy of [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitSnapshot {
    /// Requests per window, if known.
    pub limit: Option<u64>,
    /// Requests left, if known.
    pub remaining: Option<u64>,
    /// Requests used, if known.
    pub used: Option<u64>,
    /// Reset time (unix seconds), if known.
    pub reset: Option<u64>,
    /// True while no upstream call is made (quota spent, reset ahead).
    pub exhausted: bool,
    /// The resource these figures are for (`core`, `search`, …), if known.
    pub resource: Option<&'static str>,
}

impl RateLimit {
    fn new() -> RateLimit {
        RateLimit {
            limit: AtomicU64::new(u64::MAX),
            remaining: AtomicU64::new(u64::MAX),
            used: AtomicU64::new(u64::MAX),
            reset: AtomicU64::new(u64::MAX),
            pause_until: AtomicU64::new(0),
            reported_reset: AtomicU64::new(u64::MAX),
            resource: AtomicU64::new(u64::MAX),
        }
    }

    /// The reset time of a window whose quota has just been seen spent for
    /// the first time (once per window).
    fn newly_exhausted(&self) -> Option<u64> {
        let reset = self.reset.load(Ordering::SeqCst);
        let spent = self.remaining.load(Ordering::SeqCst) == 0 && reset != u64::MAX;
        (spent && self.reported_reset.swap(reset, Ordering::SeqCst) != reset).then_some(reset)
    }

    fn observe(&self, status: u16, headers: &reqwest::header::HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // Reset first: a reader that sees remaining == 0 then sees a reset
        // at least this new.
        if let Some(v) = num("x-ratelimit-reset") {
            self.reset.store(v, Ordering::SeqCst);
        }
        if let Some(v) = num("x-ratelimit-limit") {
            self.limit.store(v, Ordering::SeqCst);
        }
        if let Some(v) = num("x-ratelimit-used") {
            self.used.store(v, Ordering::SeqCst);
        }
        if let Some(v) = num("x-ratelimit-remaining") {
            self.remaining.store(v, Ordering::SeqCst);
        }
        let resource = headers.get("x-ratelimit-resource").and_then(|v| v.to_str().ok());
        if let Some(i) = resource.and_then(|r| RESOURCES.iter().position(|k| *k == r.trim())) {
            self.resource.store(i as u64, Ordering::SeqCst);
        }
        // Secondary rate limits: 403/429 with retry-after (seconds).
        if status == 403 || status == 429 {
            if let Some(secs) = num("retry-after") {
                self.pause_until
                    .fetch_max(unix_now() + secs.min(3600), Ordering::SeqCst);
            }
        }
    }

    /// When requests may be sent again, while they may not: the quota is
    /// spent and its reset is ahead, or a secondary limit's pause runs.
    fn blocked_until(&self, now_unix: u64) -> Option<u64> {
        let remaining = self.remaining.load(Ordering::SeqCst);
        let reset = self.reset.load(Ordering::SeqCst);
        let pause = self.pause_until.load(Ordering::SeqCst);
        let quota = (remaining == 0 && reset != u64::MAX && now_unix < reset).then_some(reset);
        let paused = (now_unix < pause).then_some(pause);
        quota.max(paused)
    }

    /// A copy, for tools and metrics.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        let opt = |a: &AtomicU64| Some(a.load(Ordering::SeqCst)).filter(|v| *v != u64::MAX);
        RateLimitSnapshot {
            limit: opt(&self.limit),
            remaining: opt(&self.remaining),
            used: opt(&self.used),
            reset: opt(&self.reset),
            exhausted: self.blocked_until(unix_now()).is_some(),
            resource: RESOURCES.get(self.resource.load(Ordering::SeqCst) as usize).copied(),
        }
    }
}

/// Most client partitions whose rate-limit figures are kept.
const MAX_CLIENT_RATES: usize = 4096;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The GitHub client (see the module docs).
pub struct Upstream {
    client: reqwest::Client,
    base: ApiBase,
    token: Option<String>,
    permits: Semaphore,
    retries: u32,
    retry_base: Duration,
    max_body: usize,
    rate: RateLimit,
    /// Rate-limit figures of clients' own tokens, by partition (a leaf
    /// lock, held to find or add one entry).
    client_rates: crate::sync::Mutex<std::collections::HashMap<String, Arc<RateLimit>>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("authenticated", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// One HTTP exchange's result.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn etag(&self) -> Option<ETag> {
        self.header("etag").and_then(ETag::new)
    }

    fn next(&self) -> Option<String> {
        self.header("link").and_then(next_link)
    }

    /// The headers an error passes back (see [`UpstreamError::headers`]).
    fn error_headers(&self) -> Vec<(String, Bytes)> {
        let mut kept = Response::from_parts(self.status, &self.headers, Bytes::new()).headers;
        if let Some(v) = self.headers.get("retry-after") {
            kept.push(("retry-after".into(), Bytes::copy_from_slice(v.as_bytes())));
        }
        kept
    }
}

impl Upstream {
    /// A client for `config.github_api_url`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        // reqwest is built without a default crypto provider (no aws-lc):
        // use ring. Installing twice is harmless (the first one wins).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = ApiBase::parse(&config.github_api_url).map_err(|e| format!("invalid github_api_url: {e}"))?;
        // Redirects are followed only under the API root (at most 3 hops);
        // any other stops, and the 3xx itself is the answer.
        let root = base.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() < 3 && root.check_parsed(attempt.url()).is_ok() {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("ghcache/", env!("CARGO_PKG_VERSION")))
            .timeout(config.upstream_timeout)
            .connect_timeout(config.upstream_timeout.min(Duration::from_secs(5)))
            .redirect(redirects)
            .build()
            .map_err(|e| format!("cannot build the GitHub client: {e}"))?;
        Ok(Upstream {
            client,
            base,
            token: config.github_token.0.clone(),
            permits: Semaphore::new(config.max_concurrent_upstream),
            retries: config.upstream_retries,
            retry_base: config.retry_base,
            max_body: config.max_upstream_body_bytes,
            rate: RateLimit::new(),
            client_rates: crate::sync::Mutex::new(std::collections::HashMap::new()),
            metrics,
        })
    }

    /// The API root.
    pub fn base(&self) -> &ApiBase {
        &self.base
    }

    /// How many upstream requests a fetch of `req` may make (one per page;
    /// retries aside), for the per-request budget.
    pub fn requests_needed(req: &Request) -> u32 {
        match (req.shape, req.limit) {
            (Shape::Single | Shape::Response, _) | (_, None) => 1,
            (_, Some(limit)) => limit.div_ceil(limit.clamp(1, 100)).max(1) as u32,
        }
    }

    /// Is a token configured?
    pub fn authenticated(&self) -> bool {
        self.token.is_some()
    }

    /// The last rate-limit state seen.
    pub fn rate_limit(&self) -> RateLimitSnapshot {
        self.rate.snapshot()
    }

    /// The last rate-limit state seen for a client's own token (by its
    /// partition), or the daemon's when `partition` is `None`.
    pub fn rate_limit_of(&self, partition: Option<&str>) -> RateLimitSnapshot {
        match partition {
            None => self.rate.snapshot(),
            Some(p) => self.client_rate(p).snapshot(),
        }
    }

    /// The rate-limit figures of a client partition (kept for at most
    /// [`MAX_CLIENT_RATES`] partitions; past that the table starts over).
    fn client_rate(&self, partition: &str) -> Arc<RateLimit> {
        let mut rates = crate::sync::lock(&self.client_rates);
        if rates.len() >= MAX_CLIENT_RATES && !rates.contains_key(partition) {
            rates.clear();
        }
        rates
            .entry(partition.to_string())
            .or_insert_with(|| Arc::new(RateLimit::new()))
            .clone()
    }

    /// The fetch a single-flight leader runs for `key` (module docs).
    pub async fn fetch(
        &self,
        cache: &Cache,
        key: &CacheKey,
        req: &Request,
        stale: Option<&Entry>,
    ) -> Result<Fetched, FetchFailed> {
        let per_page = match (req.shape, req.limit) {
            (Shape::Single | Shape::Response, _) | (_, None) => None,
            (_, Some(limit)) => Some(limit.clamp(1, 100)),
        };
        let mut query = req.query.clone();
        if let Some(n) = per_page {
            query.push(("per_page".into(), n.to_string()));
        }
        let url = ApiPath::parse(&req.path)
            .and_then(|path| self.base.url_for(&path, &query))
            .map_err(|e| FetchFailed::new(refused(e.to_string())))?;
        let multi_page = matches!(req.limit, Some(limit) if per_page.is_some_and(|p| limit > p));
        let etag = if multi_page {
            None
        } else {
            stale.and_then(|e| e.etag.clone())
        };

        let first = self.send(url, etag.as_ref(), req).await.map_err(FetchFailed::new)?;
        if first.status == 304 {
            if let Some(stale) = stale {
                return Ok(Fetched {
                    entry: stale.revalidated(cache.now(), cache.ttl(key.operation())),
                    via: Via::NotModified,
                });
            }
        }
        let via = Via::Upstream(Api::Rest);
        if req.shape == Shape::Response {
            let etag = first.etag();
            let body = Response::from_parts(first.status, &first.headers, first.body).encode();
            return Ok(Fetched {
                entry: self.entry(cache, key, first.status, body, etag),
                via,
            });
        }
        if !multi_page || !(200..300).contains(&first.status) {
            let etag = first.etag();
            let body = match (req.shape, req.limit) {
                (Shape::Single | Shape::Response, _) | (_, None) => first.body,
                (_, Some(limit)) if (200..300).contains(&first.status) => truncate(req.shape, first.body, limit),
                _ => first.body,
            };
            return Ok(Fetched {
                entry: self.entry(cache, key, first.status, body, etag),
                via,
            });
        }
        // Several pages: follow `next` until `limit` items.
        let limit = req.limit.unwrap_or(usize::MAX);
        let mut items = items_of(req.shape, &first.body).map_err(|m| FetchFailed::new(transport(m)))?;
        let mut envelope = envelope_of(req.shape, &first.body);
        let mut next = first.next();
        while items.len() < limit {
            let Some(page_url) = next.take() else { break };
            // Never follow a link off the API root: the token would go with it.
            let page_url = self
                .base
                .check(&page_url)
                .map_err(|e| FetchFailed::new(refused(format!("GitHub's next link for {} refused: {e}", req.path))))?;
            let page = self.send(page_url, None, req).await.map_err(FetchFailed::new)?;
            if !(200..300).contains(&page.status) {
                return Err(FetchFailed::new(UpstreamError {
                    kind: ErrorKind::Status(page.status),
                    message: format!("GitHub answered {} on a later page of {}", page.status, req.path),
                    body: page.body,
                    headers: Vec::new(),
                }));
            }
            items.extend(items_of(req.shape, &page.body).map_err(|m| FetchFailed::new(transport(m)))?);
            next = page.next();
        }
        items.truncate(limit);
        let merged = match (&mut envelope, req.shape) {
            (Some(serde_json::Value::Object(obj)), Shape::Field(field)) => {
                obj.insert(field.to_string(), serde_json::Value::Array(items));
                serde_json::to_vec(&envelope).unwrap_or_default()
            }
            _ => serde_json::to_vec(&items).unwrap_or_default(),
        };
        Ok(Fetched {
            entry: self.entry(cache, key, 200, Bytes::from(merged), None),
            via,
        })
    }

    fn entry(&self, cache: &Cache, key: &CacheKey, status: u16, body: Bytes, etag: Option<ETag>) -> Entry {
        let mut entry = cache.new_entry(key, body, etag, Origin::Upstream);
        entry.status = status;
        entry
    }

    /// One GET with retries. Answers with a cacheable status (2xx, 304,
    /// 404, 410, other 4xx except auth and rate-limit ones) or fails.
    async fn send(&self, url: url::Url, etag: Option<&ETag>, req: &Request) -> Result<Answer, UpstreamError> {
        let path = self.base.relative(&url).to_string();
        let mut attempt = 0;
        // Asking for the rate limit itself costs no quota: never gated.
        let free = path.starts_with("/rate_limit");
        loop {
            if let Some(reset) = self.rate.blocked_until(unix_now()).filter(|_| !free) {
                self.metrics.upstream_skipped_rate_limited();
                return Err(UpstreamError {
                    kind: ErrorKind::RateLimited { reset },
                    body: Bytes::new(),
                    message: format!("GitHub rate limit exhausted until {reset} (unix); no request sent for {path}"),
                    headers: Vec::new(),
                });
            }
            let result = self.send_once(url.clone(), etag, req).await;
            let retryable = match &result {
                Ok(a) => a.status >= 500,
                Err(e) => e.kind == ErrorKind::Transport,
            };
            if !retryable || attempt >= self.retries {
                return match result {
                    // A 403/429 that spent the quota (or asked for a pause)
                    // is a rate limit: the caller may serve stale.
                    Ok(a) if a.status == 403 || a.status == 429 => {
                        let kind = match self.rate.blocked_until(unix_now()) {
                            Some(reset) => ErrorKind::RateLimited { reset },
                            None => ErrorKind::Status(a.status),
                        };
                        let message = match kind {
                            ErrorKind::RateLimited { reset } => format!(
                                "GitHub rate limit hit ({}) for {path}; no request until {reset} (unix)",
                                a.status
                            ),
                            _ => format!("GitHub answered {} for {path}", a.status),
                        };
                        Err(UpstreamError {
                            kind,
                            message,
                            headers: a.error_headers(),
                            body: a.body,
                        })
                    }
                    Ok(a) if a.status >= 500 || a.status == 401 => Err(UpstreamError {
                        kind: ErrorKind::Status(a.status),
                        message: format!("GitHub answered {} for {path}", a.status),
                        headers: a.error_headers(),
                        body: a.body,
                    }),
                    // A redirect the client policy did not follow (it leaves
                    // the API root): the answer as it is, never cached.
                    Ok(a) if (300..400).contains(&a.status) && a.status != 304 => Err(UpstreamError {
                        kind: ErrorKind::Status(a.status),
                        message: format!("GitHub redirected {path} outside the API root; not followed"),
                        headers: a.error_headers(),
                        body: a.body,
                    }),
                    other => other,
                };
            }
            let delay = backoff(self.retry_base, attempt);
            tracing::debug!(%path, attempt, ?delay, "retrying GitHub request");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, url: url::Url, etag: Option<&ETag>, req: &Request) -> Result<Answer, UpstreamError> {
        let path = self.base.relative(&url).to_string();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| transport("upstream closed".into()))?;
        let mut request = self
            .client
            .get(url)
            .header("accept", req.accept.as_deref().unwrap_or(DEFAULT_ACCEPT))
            .header(
                "x-github-api-version",
                req.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION),
            );
        if let Some(tag) = etag {
            request = request.header("if-none-match", tag.as_str());
        }
        let response = self.exchange(request, req.token.as_ref()).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if let Err(why) = check_headers(&headers) {
            self.metrics.upstream_response(None);
            return Err(UpstreamError {
                kind: ErrorKind::Invalid,
                body: Bytes::new(),
                message: format!("GitHub's answer for {path} refused: {why}"),
                headers: Vec::new(),
            });
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match read_body(response, self.max_body, &path).await {
            Ok(b) => b,
            Err(e) => {
                self.metrics.upstream_response(None);
                return Err(e);
            }
        };
        self.metrics.upstream_response(Some(status));
        if (200..300).contains(&status) && !(status == 204 && body.is_empty()) {
            let invalid = |message: String| UpstreamError {
                kind: ErrorKind::Invalid,
                body: Bytes::new(),
                message,
                headers: Vec::new(),
            };
            if req.wants_json() && !claims_json(content_type.as_deref()) {
                return Err(invalid(format!(
                    "GitHub answered {path} with {}, not JSON (status {status})",
                    content_type
                        .as_deref()
                        .unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect::<String>()
                )));
            }
            if req.wants_json() && claims_json(content_type.as_deref()) {
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    return Err(invalid(format!(
                        "GitHub sent invalid JSON for {path} (status {status}): {e}"
                    )));
                }
            }
        }
        Ok(Answer { status, headers, body })
    }
}

impl Upstream {
    /// Sends `request` with `token`'s credentials, else the daemon's;
    /// counts a failed exchange; keeps the daemon's quota state from the
    /// answer (only when it was asked with the daemon's own token).
    async fn exchange(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&ClientToken>,
    ) -> Result<reqwest::Response, UpstreamError> {
        if let Some(secret) = token.map(|t| &t.secret).or(self.token.as_ref()) {
            request = request.header("authorization", format!("Bearer {secret}"));
        }
        let started = std::time::Instant::now();
        let sent = request.send().await;
        self.metrics.upstream_answered(started.elapsed().as_secs_f64());
        match sent {
            Ok(response) => {
                if let Some(client) = token {
                    self.client_rate(&client.partition)
                        .observe(response.status().as_u16(), response.headers());
                } else {
                    self.rate.observe(response.status().as_u16(), response.headers());
                    if let Some(reset) = self.rate.newly_exhausted() {
                        self.metrics.quota_exhausted();
                        tracing::warn!(
                            reset,
                            "GitHub quota of the daemon's token spent; no request until the reset (unix), \
                             answers come from the cache (stale where needed)"
                        );
                    }
                }
                Ok(response)
            }
            Err(e) => {
                self.metrics.upstream_response(None);
                Err(transport(describe(&e)))
            }
        }
    }
}

/// A write's answer, as GitHub gave it.
#[derive(Debug)]
pub struct Forwarded {
    /// HTTP status.
    pub status: u16,
    /// All of GitHub's response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body (at most `max_upstream_body_bytes`).
    pub body: Bytes,
}

impl Upstream {
    /// Passes a write (any method but GET and HEAD) to GitHub once, as it
    /// came: no retry (a write is not idempotent), no cache. `headers` are
    /// the client's headers to pass (the caller chooses them); the
    /// credentials are `token`'s, else the daemon's.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path: &ApiPath,
        query: &[(String, String)],
        headers: reqwest::header::HeaderMap,
        token: Option<&ClientToken>,
        body: Bytes,
    ) -> Result<Forwarded, UpstreamError> {
        let url = self.base.url_for(path, query).map_err(|e| refused(e.to_string()))?;
        let shown = self.base.relative(&url).to_string();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| transport("upstream closed".into()))?;
        let request = self.client.request(method, url).headers(headers).body(body);
        let response = self.exchange(request, token).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_body(response, self.max_body, &shown).await;
        self.metrics.upstream_response(body.as_ref().ok().map(|_| status));
        Ok(Forwarded {
            status,
            headers,
            body: body?,
        })
    }
}

/// Reads a response body of at most `limit` bytes (see the module docs).
async fn read_body(mut response: reqwest::Response, limit: usize, path: &str) -> Result<Bytes, UpstreamError> {
    let too_large = |size: String| UpstreamError {
        kind: ErrorKind::Invalid,
        headers: Vec::new(),
        body: Bytes::new(),
        message: format!(
            "GitHub's answer for {path} is too large ({size} bytes; the limit is {limit}, max_upstream_body_bytes)"
        ),
    };
    let declared = response.content_length();
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return Err(too_large(n.to_string()));
    }
    let mut body = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large(format!("more than {}", body.len() + chunk.len())));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => return Err(transport(describe(&e))),
        }
    }
}

/// GitHub's headers are short visible ASCII; an answer with a header over
/// [`MAX_HEADER_VALUE`](super::response::MAX_HEADER_VALUE) bytes or with
/// bytes that are not text is not GitHub's, and is neither cached nor
/// passed on.
fn check_headers(headers: &reqwest::header::HeaderMap) -> Result<(), String> {
    for (name, value) in headers {
        if value.len() > super::response::MAX_HEADER_VALUE {
            return Err(format!("header {name} is {} bytes long", value.len()));
        }
        if value.to_str().is_err() {
            return Err(format!("header {name} is not text"));
        }
    }
    Ok(())
}

/// Does this `Content-Type` promise JSON? (None: GitHub always names
/// one, so an answer without it is checked too.)
fn claims_json(content_type: Option<&str>) -> bool {
    content_type.is_none_or(is_json_type)
}

/// Is this `Content-Type` value a JSON media type (`…/json`, `…+json`)?
pub fn is_json_type(content_type: &str) -> bool {
    let t = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    t.ends_with("/json") || t.ends_with("+json")
}

fn transport(message: String) -> UpstreamError {
    UpstreamError {
        kind: ErrorKind::Transport,
        body: Bytes::new(),
        message,
        headers: Vec::new(),
    }
}

impl UpstreamError {
    /// The error of a read refused by its client's per-minute budget.
    pub fn over_client_rate(per_minute: u32, wait: Duration) -> UpstreamError {
        let secs = wait.as_secs().max(1);
        UpstreamError {
            kind: ErrorKind::OverBudget,
            body: Bytes::new(),
            message: format!(
                "this client may cause {per_minute} GitHub requests a minute (client_upstream_per_minute); \
                 retry in {secs} s, or use your own token"
            ),
            headers: vec![("retry-after".into(), Bytes::from(secs.to_string()))],
        }
    }

    /// The error of a read refused by the per-request budget.
    pub fn over_budget(needed: u32, left: u32, max: u32) -> UpstreamError {
        UpstreamError {
            kind: ErrorKind::OverBudget,
            body: Bytes::new(),
            message: format!(
                "this request may cause at most {max} GitHub requests (max_upstream_per_request); \
                 this read needs {needed} and {left} are left: split the request"
            ),
            headers: Vec::new(),
        }
    }
}

/// A URL that failed [`ApiBase`]'s checks: nothing was sent.
fn refused(message: String) -> UpstreamError {
    UpstreamError {
        kind: ErrorKind::Refused,
        body: Bytes::new(),
        message,
        headers: Vec::new(),
    }
}

/// reqwest's error text without the URL's query (which never holds the
/// token anyway; the token is only ever in a header).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    match e.url() {
        Some(url) => format!("GitHub {what}: {}", url.path()),
        None => format!("GitHub {what}"),
    }
}

/// `base * 2^attempt`, capped at 10 s, with ±50 % jitter.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(10));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos()) as u64;
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33; // 0..2^31
    let factor = 0.5 + (mixed as f64 / (1u64 << 31) as f64); // 0.5..1.5
    exp.mul_f64(factor)
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_string())
    })
}

fn items_of(shape: Shape, body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("GitHub sent invalid JSON: {e}"))?;
    let array = match (shape, value) {
        (Shape::Field(field), serde_json::Value::Object(mut obj)) => obj.remove(field),
        (_, v @ serde_json::Value::Array(_)) => Some(v),
        _ => None,
    };
    match array {
        Some(serde_json::Value::Array(items)) => Ok(items),
        _ => Err("GitHub sent an unexpected list shape".into()),
    }
}

fn envelope_of(shape: Shape, body: &[u8]) -> Option<serde_json::Value> {
    match shape {
        Shape::Field(_) => serde_json::from_slice(body).ok(),
        _ => None,
    }
}

/// A one-page list cut to `limit` items (GitHub may send more than asked).
fn truncate(shape: Shape, body: Bytes, limit: usize) -> Bytes {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    let array = match (shape, &mut value) {
        (Shape::Field(f), serde_json::Value::Object(obj)) => obj.get_mut(f),
        (_, v @ serde_json::Value::Array(_)) => Some(v),
        _ => None,
    };
    match array {
        Some(serde_json::Value::Array(items)) if items.len() > limit => {
            items.truncate(limit);
            Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
        }
        _ => body,
    }
}

/// Percent-encodes query pairs (RFC 3986 unreserved characters kept).
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes one query component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query component (`+` is a space); `None` when
/// the result is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(next_link(h).as_deref(), Some("https://api.github.com/x?page=2"));
        assert_eq!(next_link(r#"<https://a/x?page=1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn query_encoding_round_trips() {
        let q = vec![("branch".to_string(), "feat/a b&c".to_string())];
        assert_eq!(encode_query(&q), "branch=feat%2Fa%20b%26c");
        assert_eq!(decode("feat%2Fa%20b%26c").as_deref(), Some("feat/a b&c"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), Some("%4".to_string()));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 0..5 {
            let d = backoff(base, attempt);
            let exp = base * (1 << attempt);
            assert!(d >= exp / 2 && d <= exp * 3 / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(base, 30) <= Duration::from_secs(15));
    }

    #[test]
    fn truncates_one_page() {
        let b = truncate(Shape::Array, Bytes::from_static(b"[1,2,3]"), 2);
        assert_eq!(&b[..], b"[1,2]");
        let b = truncate(
            Shape::Field("runners"),
            Bytes::from_static(br#"{"total_count":3,"runners":[1,2,3]}"#),
            1,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, serde_json::json!({"total_count": 3, "runners": [1]}));
    }
}
