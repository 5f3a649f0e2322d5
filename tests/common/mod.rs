//! Test helpers: a fake GitHub (on 127.0.0.1 or another address), an
//! in-process daemon, daemon processes (`node.rs`) and network namespaces
//! (`netns.rs`).
//!
//! The fake serves JSON for any path with a per-path ETag (`"v<version>"`),
//! answers 304 to a matching `If-None-Match`, sends `x-ratelimit-*`
//! headers, paginates `/repos/o/r/issues` (250 items, `Link` headers),
//! lists one runner for any `…/actions/runners` and two workflow runs for
//! any `…/actions/runs`, and counts every request (in all and per path).
//! Knobs: `down` (503 for everything), `remaining` (the quota it reports;
//! 0 makes it answer 403 like GitHub), `reset_in_secs`,
//! `retry_after`, `delay_ms`, `version` (bump it: every ETag changes; a
//! request answers with the version current when it arrived), `hold`
//! (requests that arrive wait, counted in `in_flight`, until it is cleared).
//! Repository Actions variables (the P2P registry) behave as GitHub's:
//! see [`variables`].
#![allow(dead_code)]

pub mod dns_server;
pub mod netns;
pub mod node;
pub mod variables;

/// The runtime a synchronous test body runs its daemons' clients on (a
/// test re-run in a namespace by [`netns::isolated`] builds its own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use ghcache::core::Cache;
use ghcache::daemon::config::{Config, Secret};
use ghcache::daemon::{spawn, App, DaemonClock, Running};

#[derive(Default)]
pub struct Fake {
    pub requests: AtomicU64,
    /// Requests per path.
    pub per_path: Mutex<HashMap<String, u64>>,
    pub not_modified: AtomicU64,
    pub with_etag: AtomicU64,
    pub down: AtomicBool,
    /// Reported quota left; negative: 5000.
    pub remaining: AtomicI64,
    pub delay_ms: AtomicU64,
    pub version: AtomicU64,
    /// While set, requests wait before answering.
    pub hold: AtomicBool,
    pub saw_token: AtomicBool,
    /// When non-zero: answer 403 with this `retry-after` (secondary limit).
    pub retry_after: AtomicU64,
    /// When non-zero: the quota resets this many seconds from now (else in
    /// an hour).
    pub reset_in_secs: AtomicU64,
    /// Requests being answered now, and the most at once.
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Repository Actions variables (`…/actions/variables`).
    pub variables: variables::Variables,
}

pub struct FakeGithub {
    pub addr: SocketAddr,
    pub state: Arc<Fake>,
}

impl FakeGithub {
    pub async fn start() -> FakeGithub {
        FakeGithub::start_on([127, 0, 0, 1].into()).await
    }

    /// A fake listening on `ip` (`0.0.0.0`: every address of this network
    /// namespace; call it through [`FakeGithub::url_via`]).
    pub async fn start_on(ip: IpAddr) -> FakeGithub {
        let state = Arc::new(Fake::default());
        state.remaining.store(-1, Ordering::SeqCst);
        let app = Router::new().fallback(serve).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGithub { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL through `ip`, one of this namespace's addresses (for a
    /// fake started on `0.0.0.0`).
    pub fn url_via(&self, ip: IpAddr) -> String {
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Requests for `path` so far.
    pub fn requests_for(&self, path: &str) -> u64 {
        self.state.per_path.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn reset_in(secs: u64) -> u64 {
    let secs = if secs == 0 { 3600 } else { secs };
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs
}

async fn serve(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    *fake
        .per_path
        .lock()
        .unwrap()
        .entry(req.uri().path().to_string())
        .or_default() += 1;
    let version = fake.version.load(Ordering::SeqCst);
    let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = fake.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    while fake.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.in_flight.fetch_sub(1, Ordering::SeqCst);
    let headers = req.headers().clone();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer test-token") {
        fake.saw_token.store(true, Ordering::SeqCst);
    }
    let remaining = fake.remaining.load(Ordering::SeqCst);
    let mut rate = HeaderMap::new();
    let left = if remaining < 0 { 5000 } else { remaining };
    rate.insert("x-ratelimit-limit", HeaderValue::from(5000));
    rate.insert("x-ratelimit-remaining", HeaderValue::from(left));
    rate.insert("x-ratelimit-used", HeaderValue::from(5000 - left));
    rate.insert(
        "x-ratelimit-reset",
        HeaderValue::from(reset_in(fake.reset_in_secs.load(Ordering::SeqCst))),
    );
    if fake.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, rate, "{\"message\":\"down\"}").into_response();
    }
    let retry_after = fake.retry_after.load(Ordering::SeqCst);
    if retry_after > 0 {
        let mut r = (
            StatusCode::FORBIDDEN,
            rate,
            "{\"message\":\"You have exceeded a secondary rate limit\"}",
        )
            .into_response();
        r.headers_mut().insert("retry-after", HeaderValue::from(retry_after));
        return r;
    }
    if remaining == 0 {
        return (StatusCode::FORBIDDEN, rate, "{\"message\":\"API rate limit exceeded\"}").into_response();
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path.contains("/actions/variables") {
        let method = req.method().clone();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
        if let Some(mut r) = fake.variables.serve(&method, &path, &query, &headers, &body) {
            r.headers_mut().extend(rate);
            if !matches!(r.status(), StatusCode::NOT_MODIFIED | StatusCode::NO_CONTENT) {
                r.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("application/json; charset=utf-8"),
                );
            }
            return r;
        }
        return (StatusCode::NOT_FOUND, rate, "{\"message\":\"Not Found\"}").into_response();
    }
    let etag = format!("\"v{version}-{}\"", path.len());
    if let Some(inm) = headers.get("if-none-match") {
        fake.with_etag.fetch_add(1, Ordering::SeqCst);
        if inm.to_str().ok() == Some(etag.as_str()) {
            fake.not_modified.fetch_add(1, Ordering::SeqCst);
            let mut r = (StatusCode::NOT_MODIFIED, rate).into_response();
            r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
            return r;
        }
    }
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut extra = HeaderMap::new();
    let body: Value = if path == "/repos/o/r/issues" {
        let per_page = param("per_page").unwrap_or(30);
        let page = param("page").unwrap_or(1);
        let total = 250;
        let start = (page - 1) * per_page;
        let items: Vec<Value> = (start..(start + per_page).min(total))
            .map(|i| json!({"number": i + 1}))
            .collect();
        if start + per_page < total {
            let next = format!(
                "<http://{}{}?per_page={per_page}&page={}>; rel=\"next\"",
                headers.get("host").unwrap().to_str().unwrap(),
                path,
                page + 1
            );
            extra.insert("link", HeaderValue::from_str(&next).unwrap());
        }
        Value::Array(items)
    } else if path.ends_with("/actions/runners") {
        json!({"total_count": 1, "runners": [{"id": 1, "name": "r1", "status": "online"}]})
    } else if path.ends_with("/actions/runs") {
        let run = |id: u64, conclusion: &str, title: &str| {
            json!({"id": id, "name": "CI", "display_title": title, "run_number": id, "event": "push",
                   "status": "completed", "conclusion": conclusion, "head_branch": "main",
                   "actor": {"login": "tester"}, "html_url": format!("https://github.com{path}/{id}")})
        };
        json!({"total_count": 2, "workflow_runs": [run(2, "success", "fix the build"), run(1, "failure", "break the build")]})
    } else if path == "/missing" {
        return (StatusCode::NOT_FOUND, rate, "{\"message\":\"Not Found\"}").into_response();
    } else if path == "/user" {
        json!({"login": "tester"})
    } else {
        json!({"path": path, "query": query, "version": version})
    };
    let mut r = (StatusCode::OK, rate, extra, body.to_string()).into_response();
    r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// A listener on 127.0.0.1 at a port outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), for tests about a fixed
/// port: once it is dropped, no outgoing connection and no port-0 bind can
/// take the port. Starts at a random port below the range (concurrent
/// test runs on one machine) and takes the first free one.
pub fn fixed_port_listener() -> std::net::TcpListener {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    assert!(low > 12_000, "the ephemeral range starts at {low}: no room below it");
    let span = 10_000;
    let start = fastrand::u16(0..span);
    (0..span)
        .map(|i| low - span + (start + i) % span)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .expect("a free port below the ephemeral range")
}

pub struct Daemon {
    pub running: Running,
    pub clock: Arc<DaemonClock>,
    pub client: reqwest::Client,
}

pub fn test_config(github: &FakeGithub) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        github_api_url: github.url(),
        github_token: Secret(Some("test-token".into())),
        store: false,
        upstream_retries: 1,
        retry_base: Duration::from_millis(10),
        upstream_timeout: Duration::from_secs(3),
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }
}

impl Daemon {
    pub async fn start(config: Config) -> Daemon {
        let clock = Arc::new(DaemonClock::new());
        let cache = Cache::new(config.cache.clone(), clock.clone());
        let app_clock = clock.clone();
        let app = tokio::task::spawn_blocking(move || App::new(config, cache, app_clock))
            .await
            .unwrap()
            .unwrap();
        let running = spawn(app).await.unwrap();
        Daemon {
            running,
            clock,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// POSTs raw bytes to /jsonrpc; returns status and JSON (Null if none).
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.client.post(self.url("/jsonrpc")).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Calls a tool over /jsonrpc; returns the whole response.
    pub async fn call(&self, name: &str, args: Value) -> Value {
        let body =
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": args}, "id": 1});
        let (status, v) = self.post_raw(body.to_string(), &[]).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Calls a tool and returns `result.cache_mode`.
    pub async fn mode(&self, name: &str, args: Value) -> String {
        let v = self.call(name, args).await;
        v["result"]["cache_mode"]
            .as_str()
            .unwrap_or_else(|| panic!("no cache_mode in {v}"))
            .to_string()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stats(&self) -> Value {
        self.call("gh_get_cache_stats", json!({})).await["result"].clone()
    }
}

/// A daemon process that a failing test does not leave behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
