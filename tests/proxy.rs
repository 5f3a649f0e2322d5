//! `/github/` as an HTTP cache of GitHub: GitHub's headers replayed, URLs
//! rewritten to the proxy, media types and API versions in the key, client
//! tokens in their own partitions, client cache control, writes passed
//! through and invalidating their repository.
#![cfg(feature = "daemon")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::Daemon;
use ghcache::daemon::config::{Config, Secret};
use serde_json::{json, Value};

/// What the fake saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    authorization: Option<String>,
    accept: Option<String>,
}

#[derive(Clone, Default)]
struct Fake {
    base: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    version: Arc<Mutex<u64>>,
}

impl Fake {
    fn gets(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == Method::GET)
            .count()
    }
}

/// A GitHub-like fake: absolute URLs in bodies and `Link`, media types,
/// GitHub's descriptive headers, ETags, writes.
async fn github(State(fake): State<Fake>, req: Request) -> Response {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let seen = Seen {
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        authorization: header("authorization"),
        accept: header("accept"),
    };
    fake.seen.lock().unwrap().push(seen.clone());
    let base = fake.base.lock().unwrap().clone();
    // The path below the API root, as GitHub would name it in URLs.
    let api_path = seen.path.strip_prefix("/api/v3").unwrap_or(&seen.path).to_string();
    let version = *fake.version.lock().unwrap();
    let etag = format!(
        "\"{}-{version}-{}\"",
        seen.path.len(),
        seen.accept.as_deref().unwrap_or("").len()
    );
    if req.method() == Method::POST {
        *fake.version.lock().unwrap() += 1;
        let body = json!({"number": 7, "url": format!("{base}/repos/o/r/issues/7")});
        let mut r = (StatusCode::CREATED, body.to_string()).into_response();
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        r.headers_mut().insert(
            "location",
            HeaderValue::from_str(&format!("{base}/repos/o/r/issues/7")).unwrap(),
        );
        return r;
    }
    if req.headers().get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
        return r;
    }
    let (content_type, media, body): (&str, &str, Bytes) = match seen.accept.as_deref() {
        Some("application/vnd.github.diff") => (
            "application/vnd.github.diff; charset=utf-8",
            "github.v3; format=diff",
            Bytes::from(format!("diff --git a/x b/x\n+{version}\n")),
        ),
        _ => (
            "application/json; charset=utf-8",
            "github.v3; format=json",
            Bytes::from(
                json!({"path": api_path, "version": version, "url": format!("{base}{api_path}"),
                       "comments_url": format!("{base}{api_path}/comments"),
                       "who": seen.authorization})
                .to_string(),
            ),
        ),
    };
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_str(content_type).unwrap());
    h.insert("x-github-media-type", HeaderValue::from_str(media).unwrap());
    h.insert("etag", HeaderValue::from_str(&etag).unwrap());
    h.insert(
        "last-modified",
        HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT"),
    );
    h.insert("x-oauth-scopes", HeaderValue::from_static("repo, read:org"));
    h.insert("x-ratelimit-limit", HeaderValue::from(5000));
    h.insert("x-ratelimit-remaining", HeaderValue::from(4990));
    h.insert("x-ratelimit-used", HeaderValue::from(10));
    h.insert("x-ratelimit-reset", HeaderValue::from(4_000_000_000u64));
    h.insert("x-github-request-id", HeaderValue::from_static("ABCD:1234"));
    let link = format!(
        "<{base}{p}?page=2>; rel=\"next\", <{base}{p}?page=5>; rel=\"last\", <{base}{p}?page=1>; rel=\"first\"",
        p = api_path
    );
    h.insert("link", HeaderValue::from_str(&link).unwrap());
    r
}

/// The fake with its API root at `root` (e.g. `/api/v3`), and a daemon in
/// front of it, requiring `mcp_token` when given.
async fn start_with(root: &str, mcp_token: Option<&str>) -> (Fake, Daemon) {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    *fake.base.lock().unwrap() = format!("http://{addr}{root}");
    let app = Router::new().fallback(github).with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        github_api_url: format!("http://{addr}{root}"),
        github_token: Secret(Some("daemon-token".into())),
        mcp_token: Secret(mcp_token.map(str::to_string)),
        store: false,
        upstream_retries: 0,
        ..Config::default()
    };
    (fake, Daemon::start(config).await)
}

async fn start() -> (Fake, Daemon) {
    start_with("/api/v3", None).await
}

#[tokio::test]
async fn githubs_headers_are_replayed_and_urls_point_at_the_proxy() {
    let (fake, d) = start().await;
    let proxy = d.url("/github");
    for round in ["miss", "hit"] {
        let r = d.client.get(d.url("/github/repos/o/r")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["x-cache-mode"], round);
        assert_eq!(h["content-type"], "application/json; charset=utf-8");
        assert_eq!(h["x-github-media-type"], "github.v3; format=json");
        assert_eq!(h["x-oauth-scopes"], "repo, read:org");
        assert_eq!(h["last-modified"], "Tue, 01 Dec 2026 10:00:00 GMT");
        assert_eq!(h["x-ratelimit-remaining"], "4990", "the daemon's current view");
        assert!(
            h.get("x-github-request-id").is_none(),
            "per-exchange headers are not replayed"
        );
        let link = h["link"].to_str().unwrap();
        assert_eq!(
            link,
            format!("<{proxy}/repos/o/r?page=2>; rel=\"next\", <{proxy}/repos/o/r?page=5>; rel=\"last\", <{proxy}/repos/o/r?page=1>; rel=\"first\"")
        );
        let body: Value = r.text().await.unwrap().parse().unwrap();
        assert_eq!(body["url"], format!("{proxy}/repos/o/r"));
        assert_eq!(body["comments_url"], format!("{proxy}/repos/o/r/comments"));
    }
    assert_eq!(fake.gets(), 1);
    // The same entry reached under another Host name gets its own base.
    let r = d
        .client
        .get(d.url("/github/repos/o/r"))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    let body: Value = r.text().await.unwrap().parse().unwrap();
    assert_eq!(body["url"], "http://localhost/github/repos/o/r");
    // HEAD: headers, no body.
    let r = d.client.head(d.url("/github/repos/o/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("link"));
    assert_eq!(fake.gets(), 1);
}

#[tokio::test]
async fn media_types_are_part_of_the_key_and_served_as_github_sent_them() {
    let (fake, d) = start().await;
    let get = |accept: &'static str| {
        d.client
            .get(d.url("/github/repos/o/r/pulls/1"))
            .header("accept", accept)
            .send()
    };
    let r = get("application/vnd.github.diff").await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.github.diff; charset=utf-8"
    );
    assert_eq!(r.headers()["x-github-media-type"], "github.v3; format=diff");
    assert!(r.text().await.unwrap().starts_with("diff --git"));
    let r = get("application/vnd.github+json").await.unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "miss");
    assert_eq!(r.headers()["content-type"], "application/json; charset=utf-8");
    let r = get("application/vnd.github.diff").await.unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "hit");
    let r = get("application/vnd.github.v3+json").await.unwrap();
    assert_eq!(
        r.headers()["x-cache-mode"],
        "hit",
        "default media types share one entry"
    );
    assert_eq!(fake.gets(), 2);
    let accepts: Vec<Option<String>> = fake.seen.lock().unwrap().iter().map(|s| s.accept.clone()).collect();
    assert_eq!(
        accepts,
        vec![
            Some("application/vnd.github.diff".to_string()),
            Some("application/vnd.github+json".to_string())
        ]
    );
}

#[tokio::test]
async fn client_tokens_read_in_their_own_partition() {
    let (fake, d) = start().await;
    let get = |token: Option<&'static str>| {
        let mut r = d.client.get(d.url("/github/user/repos"));
        if let Some(t) = token {
            r = r.header("authorization", t);
        }
        r.send()
    };
    let alice: Value = get(Some("token alice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(alice["who"], "Bearer alice");
    let bob = get(Some("Bearer bob")).await.unwrap();
    assert_eq!(
        bob.headers()["x-cache-mode"],
        "miss",
        "never served another token's answer"
    );
    assert_eq!(bob.text().await.unwrap().parse::<Value>().unwrap()["who"], "Bearer bob");
    let daemon: Value = get(None).await.unwrap().text().await.unwrap().parse().unwrap();
    assert_eq!(daemon["who"], "Bearer daemon-token");
    let again = get(Some("token alice")).await.unwrap();
    assert_eq!(again.headers()["x-cache-mode"], "hit");
    assert_eq!(
        again.text().await.unwrap().parse::<Value>().unwrap()["who"],
        "Bearer alice"
    );
    assert_eq!(fake.gets(), 3);
    // No token in the keys: stats and metrics never show it.
    let stats = d.stats().await.to_string();
    assert!(!stats.contains("alice") && !stats.contains("bob"));
}

#[tokio::test]
async fn with_an_mcp_token_a_client_presents_both() {
    let (_fake, d) = start_with("", Some("door")).await;
    let url = d.url("/github/user");
    let r = d
        .client
        .get(&url)
        .header("authorization", "token mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the mcp token is still required");
    let r = d.client.get(&url).bearer_auth("door").send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap().parse::<Value>().unwrap()["who"],
        "Bearer daemon-token"
    );
    let r = d
        .client
        .get(&url)
        .header("authorization", "token mine")
        .header("proxy-authorization", "Bearer door")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().parse::<Value>().unwrap()["who"], "Bearer mine");
}

#[tokio::test]
async fn no_cache_revalidates_and_if_none_match_gets_304() {
    let (fake, d) = start().await;
    let url = d.url("/github/repos/o/r/branches");
    let r = d.client.get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].clone();
    let r = d
        .client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(fake.gets(), 1);
    let r = d
        .client
        .get(&url)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "revalidated");
    assert_eq!(r.status(), 200);
    assert_eq!(fake.gets(), 2);
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let r = d
        .client
        .get(&url)
        .header("cache-control", "max-age=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "revalidated");
    let r = d.client.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "hit");
    assert_eq!(fake.gets(), 3);
}

#[tokio::test]
async fn writes_pass_through_and_drop_the_repositorys_entries() {
    let (fake, d) = start().await;
    let proxy = d.url("/github");
    for path in ["/github/repos/o/r", "/github/repos/o/r/issues", "/github/repos/o/r2"] {
        d.client.get(d.url(path)).send().await.unwrap();
    }
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(fake.gets(), 4);
    let r = d
        .client
        .post(d.url("/github/repos/o/r/issues"))
        .header("content-type", "application/json")
        .header("authorization", "token writer")
        .body(r#"{"title":"t"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-cache-mode"], "pass");
    assert_eq!(r.headers()["location"], format!("{proxy}/repos/o/r/issues/7"));
    let body: Value = r.text().await.unwrap().parse().unwrap();
    assert_eq!(body["url"], format!("{proxy}/repos/o/r/issues/7"));
    let post = fake.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (post.method, post.authorization.as_deref()),
        (Method::POST, Some("Bearer writer"))
    );
    // Every entry of o/r is gone, o/r2's stays.
    for (path, mode) in [
        ("/github/repos/o/r", "miss"),
        ("/github/repos/o/r/issues", "miss"),
        ("/github/repos/o/r2", "hit"),
    ] {
        let r = d.client.get(d.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["x-cache-mode"], mode, "{path}");
    }
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    // A write GitHub refuses changes nothing.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn one_runaway_client_cannot_drain_the_shared_quota() {
    let gh = common::FakeGithub::start().await;
    let mut config = common::test_config(&gh);
    config.limits.client_upstream_per_minute = 5;
    let d = Daemon::start(config).await;
    let mut refused = None;
    for i in 0..8 {
        let r = d
            .client
            .get(d.url(&format!("/github/repos/o/r{i}")))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = refused.expect("the sixth miss is refused");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&wait), "{wait}");
    assert!(r.text().await.unwrap().contains("client_upstream_per_minute"));
    assert_eq!(gh.requests(), 5);
    // Cached reads cost nothing, and a client's own token spends its own quota.
    let r = d.client.get(d.url("/github/repos/o/r0")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "hit");
    let r = d
        .client
        .get(d.url("/github/repos/o/mine"))
        .header("authorization", "token own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("ghcache_http_refused_total{reason=\"client_rate\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_spent_quota_is_counted_once_per_window() {
    let gh = common::FakeGithub::start().await;
    let d = Daemon::start(common::test_config(&gh)).await;
    gh.state.remaining.store(0, std::sync::atomic::Ordering::SeqCst);
    let r = d.client.get(d.url("/github/repos/o/a")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().contains_key("retry-after"));
    let r = d.client.get(d.url("/github/repos/o/b")).send().await.unwrap();
    assert_eq!(r.status(), 403, "no request while the quota is spent");
    assert_eq!(gh.requests(), 1);
    let metrics = d.metrics().await;
    assert!(metrics.contains("ghcache_ratelimit_exhausted_total 1"), "{metrics}");
}

/// Status, headers but `date`, and body of an answer.
async fn seen(r: reqwest::Response) -> (u16, Vec<(String, String)>, Bytes) {
    let status = r.status().as_u16();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() != "date")
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    headers.sort();
    (status, headers, r.bytes().await.unwrap())
}

/// A GET or HEAD without a body skips the router (the accept loop answers
/// it directly); with a body it goes through the router's layers. Both
/// must answer the same, refusals included.
#[tokio::test]
async fn reads_answer_the_same_with_or_without_the_router() {
    for mcp_token in [None, Some("mcp-secret")] {
        let (_fake, d) = start_with("/api/v3", mcp_token).await;
        let url = d.url("/github/repos/o/r");
        let mut warm = d.client.get(&url);
        if let Some(token) = mcp_token {
            warm = warm.bearer_auth(token);
        }
        let warm = warm.send().await.unwrap();
        assert_eq!(warm.status(), 200);
        let etag = warm.headers()["etag"].to_str().unwrap().to_string();
        let etag = etag.as_str();
        let variants: Vec<(Method, Vec<(&str, &str)>)> = vec![
            (Method::GET, vec![]),
            (Method::HEAD, vec![]),
            (Method::GET, vec![("origin", "https://evil.example")]),
            (Method::GET, vec![("origin", "http://localhost:3000")]),
            (Method::GET, vec![("host", "evil.example")]),
            (Method::HEAD, vec![("host", "evil.example")]),
            (Method::GET, vec![("host", "localhost")]),
            (Method::GET, vec![("if-none-match", etag)]),
            (Method::GET, vec![("accept", "application/vnd.github.diff")]),
            (Method::GET, vec![("x-github-api-version", "yesterday")]),
            (Method::GET, vec![("authorization", "token client-token")]),
            (Method::GET, vec![("authorization", "Bearer mcp-secret")]),
            (
                Method::GET,
                vec![("authorization", "Bearer mcp-secret"), ("host", "localhost")],
            ),
            (Method::GET, vec![("authorization", "Digest x")]),
        ];
        for (method, headers) in variants {
            let mut answers = Vec::new();
            // The first fills the variant's entry; the two after it are compared.
            for with_body in [false, false, true] {
                let mut r = d.client.request(method.clone(), &url);
                for (name, value) in &headers {
                    r = r.header(*name, *value);
                }
                if with_body {
                    r = r.body("{}");
                }
                answers.push(seen(r.send().await.unwrap()).await);
            }
            assert_eq!(answers[1], answers[2], "{method} {headers:?}, mcp token {mcp_token:?}");
            assert!(
                answers[1]
                    .1
                    .contains(&("x-content-type-options".into(), "nosniff".into())),
                "{method} {headers:?}"
            );
        }
    }
}
