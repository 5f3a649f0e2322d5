//! The security suite: nothing reaches anyone it should not, and every
//! limit answers with its exact refusal while normal clients keep being
//! served.
//!
//! - A **hostile upstream** (GitHub's stand-in, rooted at `/api/v3`) sends
//!   `next` links and redirects in every off-origin form; a **recording
//!   listener** (what a link or redirect would reach) must see no
//!   connection at all, and the upstream's own `/admin/*` (outside the API
//!   root) no request.
//! - **Path tricks** through `/github/` (sent as raw bytes, so no client
//!   library normalises them first) and through every tool that takes a
//!   path part.
//! - **Rebinding `Host`**, slowloris and idle connections, connection,
//!   session and batch floods, the per-request upstream budget.
//! - **Start-up refusals and secrets**: beyond loopback without a token,
//!   the token from a file (not in argv), data files 0600 in 0700.
#![cfg(feature = "daemon")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{test_config, Daemon, FakeGithub, KillOnDrop};
use ghcache::daemon::config::Config;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A listener that counts every connection made to it (it must stay 0).
struct Recorder {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]")
                    .await;
            }
        });
        Recorder { addr, connections }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// GitHub's hostile stand-in, serving the API under `/api/v3`.
struct Hostile {
    addr: SocketAddr,
    /// Requests per path, as received.
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

#[derive(Clone)]
struct HostileState {
    me: SocketAddr,
    evil: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl Hostile {
    async fn start(evil: SocketAddr) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let state = HostileState {
            me,
            evil,
            hits: hits.clone(),
        };
        let app = Router::new().fallback(hostile).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hostile { addr: me, hits }
    }

    fn base(&self) -> String {
        format!("http://{}/api/v3", self.addr)
    }

    fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests that reached anything outside `/api/v3`.
    fn escaped(&self) -> Vec<String> {
        let hits = self.hits.lock().unwrap();
        hits.keys().filter(|p| !p.starts_with("/api/v3/")).cloned().collect()
    }
}

/// The off-origin URLs a link or a redirect may carry: each would reach the
/// recorder (`evil`) or the upstream outside its API root if followed.
fn off_origin_forms(me: SocketAddr, evil: SocketAddr) -> Vec<String> {
    vec![
        format!("http://{evil}/api/v3/x"),
        format!("http://{me}@{evil}/api/v3/x"),
        format!("http://user:pw@{me}/api/v3/x"),
        format!("//{evil}/api/v3/x"),
        format!("http://localhost:{}/api/v3/x", evil.port()),
        format!("http://{me}/api/v3/../../admin/secrets"),
        format!("http://{me}/api/v3/%2e%2e/%2e%2e/admin/secrets"),
        format!("http://{me}/api/v3/..%2f..%2fadmin/secrets"),
        format!("http://{me}/admin/secrets"),
        format!("http://{me}/api/v30/x"),
        format!("https://{me}/api/v3/x"),
    ]
}

async fn hostile(State(s): State<HostileState>, headers: HeaderMap, req: Request) -> Response {
    let path = req.uri().path().to_string();
    *s.hits.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
    let forms = off_origin_forms(s.me, s.evil);
    let json = |body: String| -> Response {
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    let rest = path.strip_prefix("/api/v3").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    match parts[..] {
        // A list whose `next` link leaves the root: /repos/o/link<N>/issues.
        ["", "repos", "o", name, "issues"] if name.starts_with("link") => {
            let n: usize = name[4..].parse().unwrap_or(0);
            let items: Vec<Value> = (0..100).map(|i| json!({"number": i})).collect();
            let mut r = json(Value::Array(items).to_string());
            let link = format!("<{}>; rel=\"next\"", forms[n % forms.len()]);
            r.headers_mut().insert("link", HeaderValue::from_str(&link).unwrap());
            r
        }
        // A redirect off the root: /redir/<N>.
        ["", "redir", n] => {
            let n: usize = n.parse().unwrap_or(0);
            let mut r = (StatusCode::FOUND, "{\"message\":\"moved\"}").into_response();
            r.headers_mut()
                .insert("location", HeaderValue::from_str(&forms[n % forms.len()]).unwrap());
            r
        }
        // A redirect under the root: followed.
        ["", "repos", "old", "r"] => {
            let mut r = (StatusCode::MOVED_PERMANENTLY, "").into_response();
            let to = format!("http://{}/api/v3/repos/new/r", s.me);
            r.headers_mut().insert("location", HeaderValue::from_str(&to).unwrap());
            r
        }
        ["", "html"] => {
            let mut r = (StatusCode::OK, "<script>alert(1)</script>").into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/html"));
            r
        }
        ["", "big-header"] => {
            let mut r = json("{}".into());
            r.headers_mut()
                .insert("x-junk", HeaderValue::from_str(&"a".repeat(512 * 1024)).unwrap());
            r
        }
        ["", "binary-header"] => {
            let mut r = json("{\"ok\":true}".into());
            r.headers_mut()
                .insert("link", HeaderValue::from_bytes(b"<\xff\xfe>; rel=\"next\"").unwrap());
            r
        }
        // Who the request came as.
        ["", "whoami"] => {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            json(json!({"authorization": auth}).to_string())
        }
        _ => json(json!({"path": path}).to_string()),
    }
}

fn hostile_config(base: String) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        github_api_url: base,
        github_token: ghcache::daemon::config::Secret(Some("test-token".into())),
        store: false,
        upstream_retries: 0,
        upstream_timeout: Duration::from_secs(3),
        max_body_bytes: 64 * 1024,
        ..Config::default()
    }
}

/// Sends `request` as raw bytes and returns the answer's status (0: the
/// connection closed without one) and the whole text.
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn get(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn next_links_off_the_api_root_are_never_followed() {
    let evil = Recorder::start().await;
    let up = Hostile::start(evil.addr).await;
    let d = Daemon::start(hostile_config(up.base())).await;
    let forms = off_origin_forms(up.addr, evil.addr);
    for (n, form) in forms.iter().enumerate() {
        let v = d
            .call("gh_list_issues", json!({"repo": format!("o/link{n}"), "limit": 200}))
            .await;
        let error = &v["error"];
        assert_eq!(error["code"], -32000, "form {n} ({form}): {v}");
        assert!(
            error["message"].as_str().unwrap().contains("next link"),
            "form {n}: {v}"
        );
        // Nothing cached: asking again asks again.
        d.call("gh_list_issues", json!({"repo": format!("o/link{n}"), "limit": 200}))
            .await;
        assert_eq!(up.hits(&format!("/api/v3/repos/o/link{n}/issues")), 2, "form {n}");
    }
    assert_eq!(evil.connections(), 0, "a link reached another listener");
    assert!(
        up.escaped().is_empty(),
        "requests outside the API root: {:?}",
        up.escaped()
    );
}

#[tokio::test]
async fn redirects_off_the_api_root_go_back_unchanged_and_uncached() {
    let evil = Recorder::start().await;
    let up = Hostile::start(evil.addr).await;
    let d = Daemon::start(hostile_config(up.base())).await;
    let forms = off_origin_forms(up.addr, evil.addr);
    for (n, form) in forms.iter().enumerate() {
        for round in 1..=2 {
            let (status, text) = raw(d.running.addr, &get(&format!("/github/redir/{n}"), "localhost")).await;
            assert_eq!(status, 302, "form {n}: {text}");
            let location = text
                .lines()
                .find_map(|l| l.strip_prefix("location: "))
                .unwrap_or_else(|| panic!("no location: {text}"));
            assert_eq!(location, form);
            assert_eq!(up.hits(&format!("/api/v3/redir/{n}")), round, "form {n}: cached?");
        }
    }
    // Under the root, a redirect is followed.
    let r = d.client.get(d.url("/github/repos/old/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits("/api/v3/repos/new/r"), 1);
    assert_eq!(evil.connections(), 0, "a redirect reached another listener");
    assert!(up.escaped().is_empty(), "{:?}", up.escaped());
}

#[tokio::test]
async fn path_tricks_never_leave_the_api_root() {
    let evil = Recorder::start().await;
    let up = Hostile::start(evil.addr).await;
    let d = Daemon::start(hostile_config(up.base())).await;
    let tricks = [
        "/github/%2e%2e/%2e%2e/admin/secrets",
        "/github/%2E%2E/%2e%2E/admin/secrets",
        "/github/..%2f..%2fadmin/secrets",
        "/github/repos/%2e%2e%2f%2e%2e%2fadmin",
        "/github/%252e%252e/%252e%252e/admin/secrets",
        "/github/%c0%ae%c0%ae/%c0%ae%c0%ae/admin/secrets",
        "/github/a%5c..%5c..%5cadmin",
        "/github/a\\..\\..\\admin",
        "/github/../../admin/secrets",
        "/github/./x",
        "/github//admin/secrets",
        "/github/x%0d%0aHost:%20evil",
        "/github/x%00",
    ];
    for trick in tricks {
        let (status, text) = raw(d.running.addr, &get(trick, "localhost")).await;
        assert!(
            status == 400 || status == 404,
            "{trick}: expected a refusal, got {status}: {text}"
        );
    }
    // A 100 KB path: refused, not forwarded.
    let long = format!("/github/{}", "a".repeat(100 * 1024));
    let (status, _) = raw(d.running.addr, &get(&long, "localhost")).await;
    assert!(status == 400 || status == 414 || status == 431, "{status}");
    // Every tool that takes a path or a path part.
    let calls = [
        ("gh_api", json!({"path": "/%2e%2e/%2e%2e/admin/secrets"})),
        ("gh_api", json!({"path": "/repos/..%2F..%2Fadmin"})),
        ("gh_api", json!({"path": "/a\\..\\admin"})),
        ("gh_api", json!({"path": "/%252e%252e/admin"})),
        ("gh_api", json!({"path": "//evil.example/x"})),
        ("gh_api", json!({"path": "http://evil.example/x"})),
        ("gh_get_repo", json!({"repo": "../admin"})),
        ("gh_get_repo", json!({"repo": "%2e%2e/admin"})),
        ("gh_list_issues", json!({"repo": "o/..", "limit": 5})),
        ("gh_list_runners", json!({"org": "..%2fadmin"})),
        ("gh_get_workflow_run", json!({"repo": "o/r", "run_id": "../../admin"})),
        ("gh_list_repos", json!({"owner": "../admin"})),
    ];
    for (tool, args) in calls {
        let v = d.call(tool, args.clone()).await;
        assert_eq!(v["error"]["code"], -32602, "{tool} {args}: {v}");
    }
    assert_eq!(evil.connections(), 0);
    assert!(
        up.escaped().is_empty(),
        "requests outside the API root: {:?}",
        up.escaped()
    );
    assert_eq!(
        up.hits.lock().unwrap().len(),
        0,
        "nothing should have been asked upstream"
    );
}

#[tokio::test]
async fn hostile_answers_are_refused_not_cached() {
    let evil = Recorder::start().await;
    let up = Hostile::start(evil.addr).await;
    let d = Daemon::start(hostile_config(up.base())).await;
    // HTML where JSON was asked: 502, not cached, never served as JSON.
    for round in 1..=2 {
        let r = d.client.get(d.url("/github/html")).send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(!r.text().await.unwrap().contains("<script>"));
        assert_eq!(up.hits("/api/v3/html"), round);
    }
    // An oversized header and a header that is not text: not GitHub's,
    // refused (502) and not cached; the daemon keeps serving.
    for path in ["big-header", "binary-header"] {
        for round in 1..=2 {
            let r = d.client.get(d.url(&format!("/github/{path}"))).send().await.unwrap();
            assert_eq!(r.status(), 502, "{path}");
            assert!(
                r.text().await.unwrap().contains("GitHub"),
                "{path}: a message naming the cause"
            );
            assert_eq!(up.hits(&format!("/api/v3/{path}")), round, "{path}");
        }
    }
    let r = d.client.get(d.url("/github/repos/o/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/healthz", "/metrics", "/github/repos/o/r"] {
        let r = d.client.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    assert_eq!(evil.connections(), 0);
}

#[tokio::test]
async fn hostile_client_headers_are_refused_before_github() {
    let evil = Recorder::start().await;
    let up = Hostile::start(evil.addr).await;
    let d = Daemon::start(hostile_config(up.base())).await;
    let whoami = d.url("/github/whoami");
    let long_version = "9".repeat(10_000);
    let long_accept = format!("application/vnd.github.{}+json", "x".repeat(300));
    let mut refused = vec![
        ("x-github-api-version", "../../admin".to_string()),
        ("x-github-api-version", "2022-11-28; drop".to_string()),
        ("x-github-api-version", long_version),
        ("accept", long_accept),
        ("authorization", "Digest username=x".to_string()),
        ("authorization", "Basic !!!not-base64".to_string()),
        ("authorization", "tokenwithoutscheme".to_string()),
    ];
    // One distinct hostile version per request must not mint one key each.
    refused.extend((0..50).map(|i| ("x-github-api-version", format!("v{i}"))));
    for (name, value) in &refused {
        let r = d.client.get(&whoami).header(*name, value).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        let expected = if *name == "authorization" { 401 } else { 400 };
        assert_eq!(status, expected, "{name}: {value:.40} → {body}");
        assert!(body.contains("message"), "a clear error: {body}");
    }
    assert_eq!(up.hits("/api/v3/whoami"), 0, "nothing refused reached GitHub");
    assert_eq!(d.stats().await["entries"], 0, "and nothing was keyed");
    // A Basic credential is the client's own token, not "no token".
    let r: Value = d
        .client
        .get(&whoami)
        .basic_auth("octocat", Some("ghp_mine"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r["authorization"], "Bearer ghp_mine");
    assert_eq!(evil.connections(), 0);
}

#[tokio::test]
async fn rebinding_hosts_are_refused_on_every_route() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let port = d.running.addr.port();
    let ping = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
    let post = |path: &str, host: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ping}",
            ping.len()
        )
        .into_bytes()
    };
    for host in [
        format!("evil.com:{port}"),
        "evil.com".to_string(),
        format!("localhost.evil.com:{port}"),
        format!("evil.example@127.0.0.1:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/github/user", "/metrics", "/healthz"] {
            let (status, text) = raw(d.running.addr, &get(path, &host)).await;
            assert_eq!(status, 403, "{path} with Host {host}: {text}");
        }
        for path in ["/jsonrpc", "/mcp"] {
            let (status, text) = raw(d.running.addr, &post(path, &host)).await;
            assert_eq!(status, 403, "{path} with Host {host}: {text}");
        }
    }
    // No Host at all (HTTP/1.0).
    let (status, _) = raw(d.running.addr, b"GET /github/user HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 403);
    // This machine's names pass.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, text) = raw(d.running.addr, &get("/github/user", &host)).await;
        assert_eq!(status, 200, "{host}: {text}");
        let (status, _) = raw(d.running.addr, &post("/jsonrpc", &host)).await;
        assert_eq!(status, 200, "{host}");
    }
    assert_eq!(gh.requests(), 1, "refused requests never reach GitHub");
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("ghcache_http_refused_total{reason=\"host\"} 26"),
        "{metrics}"
    );
}

/// Open connections of this process (the daemon runs in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in metrics"))
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_others_still_served() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.limits.idle_timeout = Duration::from_millis(500);
    config.limits.body_timeout = Duration::from_millis(500);
    let d = Daemon::start(config).await;
    let fds_before = open_fds();
    // 40 idle connections and 40 slowloris ones (headers never finished).
    let mut held = Vec::new();
    for i in 0..80 {
        let mut s = TcpStream::connect(d.running.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /github/user HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(s);
    }
    // Served meanwhile.
    let r = d.client.get(d.url("/github/user")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A body that never arrives: 408.
    let mut s = TcpStream::connect(d.running.addr).await.unwrap();
    s.write_all(b"POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
        .await
        .expect("the body timeout answers")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"));
    // Every held connection is closed by the server within the timeout.
    let started = Instant::now();
    for mut s in held {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed by the idle timeout")
            .unwrap_or(0);
        let _ = n;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(open_fds() <= fds_before + 8, "fds {} > {} + 8", open_fds(), fds_before);
    let metrics = d.metrics().await;
    assert!(metric(&metrics, "ghcache_http_refused_total{reason=\"idle_timeout\"}") >= 80);
    assert_eq!(
        metric(&metrics, "ghcache_http_refused_total{reason=\"body_timeout\"}"),
        1
    );
}

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn connection_caps_answer_429_and_503_and_free_up() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.limits.max_connections = 12;
    config.limits.max_connections_per_client = 5;
    let d = Daemon::start(config).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from([127, 0, 0, 2], d.running.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = connect_from([127, 0, 0, 2], d.running.addr).await;
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), over.read_to_string(&mut text)).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("Retry-After: 1"), "{text}");
    // Another client is still served.
    let (status, _) = raw(d.running.addr, &get("/healthz", "localhost")).await;
    assert_eq!(status, 200);
    // That connection (`Connection: close`) gives its place back once the
    // thread serving it has closed it, a moment after the client saw the
    // close; then exactly the 5 held remain.
    let started = Instant::now();
    while d.running.app.metrics.connections.load(Ordering::SeqCst) != 5 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the closed connection's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Fill the global cap from other addresses.
    for i in 0..7u8 {
        held.push(connect_from([127, 0, 1, 10 + i], d.running.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = connect_from([127, 0, 2, 1], d.running.addr).await;
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), over.read_to_string(&mut text)).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    // Closing frees the places.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::new();
    let r = client.get(d.url("/metrics")).send().await.unwrap();
    let metrics = r.text().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "ghcache_http_refused_total{reason=\"connections_per_client\"}"
        ),
        1
    );
    assert_eq!(
        metric(&metrics, "ghcache_http_refused_total{reason=\"connections\"}"),
        1
    );
    assert!(metric(&metrics, "ghcache_http_connections") <= 2);
}

async fn mcp_initialize(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "flood", "version": "0"}}});
    client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn mcp_session_floods_are_capped_and_unused_sessions_expire() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.limits.max_mcp_sessions = 30;
    config.limits.max_mcp_sessions_per_client = 20;
    config.limits.mcp_session_init = Duration::from_secs(1);
    let d = Daemon::start(config).await;
    let client = reqwest::Client::new();
    let url = d.url("/mcp");
    // A concurrent flood from one client: exactly 20 sessions.
    let answers = futures::future::join_all((0..50).map(|_| mcp_initialize(&client, &url))).await;
    let mut ids = Vec::new();
    let mut refused = 0;
    for r in answers {
        match r.status().as_u16() {
            200 => ids.push(r.headers()["mcp-session-id"].to_str().unwrap().to_string()),
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ids.len(), refused), (20, 30));
    // Another client address still gets sessions, up to the global cap.
    let mut from_other = 0;
    for _ in 0..15 {
        let sock = connect_from([127, 0, 0, 3], d.running.addr).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
            .await
            .unwrap();
        tokio::spawn(conn);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "other", "version": "0"}}});
        let req = hyper::Request::post("/mcp")
            .header("host", "localhost")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        match r.status().as_u16() {
            200 => from_other += 1,
            503 => assert!(r.headers().contains_key("retry-after")),
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(from_other, 10, "the global cap is 30");
    // DELETE frees a slot at once.
    let r = client
        .delete(&url)
        .header("mcp-session-id", &ids[0])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(mcp_initialize(&client, &url).await.status(), 200);
    // Sessions never used after initialize expire after mcp_session_init.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let metrics = d.metrics().await;
    assert_eq!(metric(&metrics, "ghcache_mcp_sessions"), 0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "ghcache_http_refused_total{reason=\"mcp_sessions_per_client\"}"
        ),
        30
    );
    assert_eq!(
        metric(&metrics, "ghcache_http_refused_total{reason=\"mcp_sessions\"}"),
        5
    );
    let answers = futures::future::join_all((0..20).map(|_| mcp_initialize(&client, &url))).await;
    assert!(answers.iter().all(|r| r.status() == 200));
}

#[tokio::test]
async fn batches_and_upstream_requests_per_request_are_bounded() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.limits.max_batch = 50;
    config.limits.max_upstream_per_request = 10;
    let d = Daemon::start(config).await;
    let call = |i: usize| {
        json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
               "params": {"name": "gh_api", "arguments": {"path": format!("/repos/o/r{i}")}}})
    };
    let too_big: Vec<Value> = (0..51).map(call).collect();
    let (status, v) = d.post_raw(Value::Array(too_big).to_string(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_batch"));
    assert_eq!(gh.requests(), 0);
    // 50 different reads in one batch: 10 reach GitHub, 40 are refused.
    let batch: Vec<Value> = (0..50).map(call).collect();
    let (_, v) = d.post_raw(Value::Array(batch).to_string(), &[]).await;
    let answers = v.as_array().unwrap();
    let ok = answers.iter().filter(|a| a.get("result").is_some()).count();
    let over: Vec<&Value> = answers
        .iter()
        .filter(|a| {
            a["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_upstream_per_request"))
        })
        .collect();
    assert_eq!((ok, over.len()), (10, 40), "{v}");
    assert_eq!(gh.requests(), 10);
    // A cached read costs no budget: the same 10 again, plus 10 new.
    let batch: Vec<Value> = (0..20).map(call).collect();
    let (_, v) = d.post_raw(Value::Array(batch).to_string(), &[]).await;
    let ok = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.get("result").is_some())
        .count();
    assert_eq!(ok, 20);
    assert_eq!(gh.requests(), 20);
    // A list of 1000 items may need 10 pages: the whole budget, charged
    // before it starts, so the call after it in the batch is refused.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
         "params": {"name": "gh_list_issues", "arguments": {"repo": "o/r", "limit": 1000}}},
        call(99),
    ]);
    let (_, v) = d.post_raw(batch.to_string(), &[]).await;
    assert_eq!(v[0]["result"]["data"].as_array().map(Vec::len), Some(250), "{v}");
    assert!(
        v[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_upstream_per_request"),
        "{v}"
    );
    assert_eq!(gh.requests(), 23, "3 pages of 100");
    let metrics = d.metrics().await;
    assert_eq!(metric(&metrics, "ghcache_http_refused_total{reason=\"batch_size\"}"), 1);
    assert_eq!(
        metric(&metrics, "ghcache_http_refused_total{reason=\"upstream_budget\"}"),
        41
    );
}

#[tokio::test]
async fn metrics_can_require_the_token() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.mcp_token.0 = Some("sekrit".into());
    config.metrics_require_token = true;
    let d = Daemon::start(config).await;
    let r = d.client.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d
        .client
        .get(d.url("/metrics"))
        .bearer_auth("sekrit")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = d.client.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn data_files_are_private() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    let dir = std::env::temp_dir().join(format!("ghcache-security-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    config.data_dir = dir.join("state");
    config.store = true;
    let d = Daemon::start(config).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("state")), 0o700);
    assert_eq!(mode(&dir.join("state/cache.redb")), 0o600);
    d.running.shutdown(Duration::from_secs(2)).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

fn daemon_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ghcache"));
    cmd.arg("daemon")
        .args(["--no-p2p", "--no-store"])
        .args(args)
        .env_remove("GHCACHE_MCP_TOKEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("GITHUB_TOKEN", "test-token")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    cmd
}

#[test]
fn listening_beyond_loopback_without_a_token_is_refused() {
    let out = daemon_command(&["--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("beyond loopback") && err.contains("--allow-no-token"),
        "{err}"
    );
    // Explicitly allowed: it starts (stopped at once).
    let mut child = daemon_command(&["--listen", "0.0.0.0:0", "--allow-no-token"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _stop = KillOnDrop(child);
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find(|l| l.contains("listening"));
    assert!(line.is_some());
}

#[tokio::test]
async fn the_token_can_come_from_a_file_and_stays_out_of_argv() {
    let dir = std::env::temp_dir().join(format!("ghcache-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mcp-token");
    std::fs::write(&file, "file-secret\n").unwrap();
    let mut child = daemon_command(&["--listen", "127.0.0.1:0", "--mcp-token-file", file.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    let _stop = KillOnDrop(child);
    let addr = tokio::task::spawn_blocking(move || {
        std::io::BufRead::lines(std::io::BufReader::new(stderr))
            .map_while(Result::ok)
            .find_map(|l| {
                let at = l.find("addr=")?;
                l[at + 5..].split_whitespace().next().map(str::to_string)
            })
    })
    .await
    .unwrap()
    .expect("a listening line");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("file-secret"));
    let client = reqwest::Client::new();
    let ping = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
    let url = format!("http://{addr}/jsonrpc");
    let r = client.post(&url).body(ping).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth("file-secret")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test]
async fn floods_leave_a_daemon_process_bounded_and_serving() {
    let mut child = daemon_command(&[
        "--listen",
        "127.0.0.1:0",
        "--max-mcp-sessions-per-client",
        "50",
        "--max-connections-per-client",
        "64",
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let _stop = KillOnDrop(child);
    let addr: SocketAddr = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let addr = lines.by_ref().map_while(Result::ok).find_map(|l| {
            let at = l.find("addr=")?;
            l[at + 5..].split_whitespace().next().map(str::to_string)
        });
        // Keep draining so the daemon never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        addr
    })
    .await
    .unwrap()
    .expect("a listening line")
    .parse()
    .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/mcp");
    let _ = mcp_initialize(&client, &url).await;
    let rss_before = rss_kib(pid);
    // 3,000 initialize calls, 25 at a time: 50 sessions, the rest 429.
    let mut statuses = HashMap::new();
    for _ in 0..120 {
        let answers = futures::future::join_all((0..25).map(|_| mcp_initialize(&client, &url))).await;
        for r in answers {
            *statuses.entry(r.status().as_u16()).or_insert(0u32) += 1;
        }
    }
    assert_eq!(statuses.get(&200), Some(&49), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&2951), "{statuses:?}");
    // 200 idle connections at once from another address: 64 admitted,
    // the rest refused.
    let fds_before = fd_count(pid);
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(connect_from([127, 0, 0, 7], addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_during = fd_count(pid);
    assert!(
        fds_during <= fds_before + 64 + 4,
        "fds {fds_during} with 64 admitted (before {fds_before})"
    );
    drop(held);
    // Still serving normal clients.
    let r = client.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
