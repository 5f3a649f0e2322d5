//! The daemon end to end, in process, against a fake GitHub on 127.0.0.1.
#![cfg(feature = "daemon")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{test_config, Daemon, FakeGithub};
use serde_json::{json, Value};

const REPO_TTL: Duration = Duration::from_secs(301);

#[tokio::test]
async fn second_identical_call_makes_no_upstream_request() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "hit");
    assert_eq!(gh.requests(), 1);
    assert!(gh.state.saw_token.load(Ordering::SeqCst), "token sent as Bearer");
    let v = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(v["result"]["data"]["path"], "/repos/o/r");
    assert_eq!(v["result"]["status"], 200);
    let stats = d.stats().await;
    assert_eq!(stats["hits"], 2);
    assert_eq!(stats["api_calls"], 1);
    assert!(stats.get("peer_id").is_some() && stats["peer_id"].is_null(), "{stats}");
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_304() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    d.clock.advance(REPO_TTL);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "revalidated");
    assert_eq!(gh.state.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "hit");
    // A changed resource: new ETag, full answer.
    gh.state.version.fetch_add(1, Ordering::SeqCst);
    d.clock.advance(REPO_TTL);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    let stats = d.stats().await;
    assert_eq!(
        (stats["revalidations"].as_u64(), stats["api_calls"].as_u64()),
        (Some(1), Some(2))
    );
}

#[tokio::test]
async fn quota_exhausted_serves_stale_without_calling_github() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    gh.state.remaining.store(1, Ordering::SeqCst);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(
        d.mode("gh_get_workflow_run", json!({"repo": "o/r", "run_id": 1})).await,
        "miss"
    );
    // GitHub now answers 403 with the quota spent: the first stale read
    // learns it (one request) and serves stale.
    gh.state.remaining.store(0, Ordering::SeqCst);
    d.clock.advance(REPO_TTL);
    let v = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(v["result"]["cache_mode"], "stale", "{v}");
    assert_eq!(gh.requests(), 3);
    // From now on no upstream call until the reset.
    let v = d.call("gh_get_workflow_run", json!({"repo": "o/r", "run_id": 1})).await;
    assert_eq!(v["result"]["cache_mode"], "stale", "{v}");
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "stale");
    assert_eq!(gh.requests(), 3, "no upstream call while the quota is spent");
    // A read with nothing stale fails, still without calling GitHub.
    let v = d.call("gh_api", json!({"path": "/third"})).await;
    assert_eq!(v["error"]["code"], -32000);
    assert!(v["error"]["message"].as_str().unwrap().contains("rate limit"), "{v}");
    assert_eq!(gh.requests(), 3);
    // The proxy answers like GitHub would.
    let r = d.client.get(d.url("/github/fourth")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(gh.requests(), 3);
    // Asking for the rate limit is free, so it is never gated.
    d.call("gh_get_rate_limit", json!({})).await;
    assert_eq!(gh.requests(), 4);
    let stats = d.stats().await;
    assert_eq!(stats["stale_served"], 3);
    assert_eq!(stats["rate_limit"]["exhausted"], true);
    assert_eq!(stats["rate_limit"]["remaining"], 0);
}

#[tokio::test]
async fn secondary_rate_limit_pauses_requests() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    gh.state.retry_after.store(60, Ordering::SeqCst);
    d.clock.advance(REPO_TTL);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "stale");
    let v = d.call("gh_api", json!({"path": "/x"})).await;
    assert_eq!(v["error"]["code"], -32000);
    assert_eq!(gh.requests(), 2, "paused after the retry-after answer");
}

#[tokio::test]
async fn upstream_down_serves_stale_after_retries() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    gh.state.down.store(true, Ordering::SeqCst);
    d.clock.advance(REPO_TTL);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "stale");
    assert_eq!(gh.requests(), 1 + 2, "one try plus one retry");
    // Nothing stale: the 503 is reported.
    let v = d.call("gh_get_repo", json!({"repo": "o/other"})).await;
    assert_eq!(v["error"]["data"]["status"], 503, "{v}");
    // Back up: fresh again (revalidated: same ETag).
    gh.state.down.store(false, Ordering::SeqCst);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "revalidated");
}

#[tokio::test]
async fn github_unreachable_is_a_502() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    let d1 = Daemon::start(config.clone()).await;
    assert_eq!(d1.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    // A closed port: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.github_api_url = format!("http://{closed}");
    let d = Daemon::start(config).await;
    let v = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(v["error"]["code"], -32000, "{v}");
    assert_eq!(v["error"]["data"]["status"], 502, "{v}");
}

#[tokio::test]
async fn concurrent_identical_calls_make_one_upstream_request() {
    let gh = FakeGithub::start().await;
    let d = std::sync::Arc::new(Daemon::start(test_config(&gh)).await);
    gh.state.delay_ms.store(300, Ordering::SeqCst);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.mode("gh_list_runners", json!({"repo": "o/r"})).await })
        })
        .collect();
    let mut modes = Vec::new();
    for c in calls {
        modes.push(c.await.unwrap());
    }
    assert_eq!(gh.requests(), 1, "{modes:?}");
    assert_eq!(modes.iter().filter(|m| *m == "miss").count(), 1, "{modes:?}");
    assert_eq!(modes.iter().filter(|m| *m == "coalesced").count(), 15, "{modes:?}");
    let stats = d.stats().await;
    assert_eq!(stats["coalesced"], 15);
}

#[tokio::test]
async fn jsonrpc_errors_have_standard_codes() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let (s, v) = d.post_raw("{not json", &[]).await;
    assert_eq!(
        (s, v["error"]["code"].as_i64(), v["id"].clone()),
        (200, Some(-32700), Value::Null)
    );
    let (_, v) = d.post_raw(r#"{"jsonrpc":"2.0","id":1}"#, &[]).await;
    assert_eq!(v["error"]["code"], -32600);
    let (_, v) = d.post_raw("[]", &[]).await;
    assert_eq!(v["error"]["code"], -32600);
    let (_, v) = d.post_raw(r#"{"jsonrpc":"2.0","method":"frob","id":2}"#, &[]).await;
    assert_eq!((v["error"]["code"].as_i64(), v["id"].as_i64()), (Some(-32601), Some(2)));
    let (_, v) = d
        .post_raw(
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"gh_nope"},"id":3}"#,
            &[],
        )
        .await;
    assert_eq!(v["error"]["code"], -32601);
    let (_, v) = d
        .post_raw(
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"gh_get_repo","arguments":{"repo":7}},"id":4}"#,
            &[],
        )
        .await;
    assert_eq!(v["error"]["code"], -32602);
    // A notification gets no body; a batch gets an array.
    let (s, v) = d
        .post_raw(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, &[])
        .await;
    assert_eq!((s, v), (202, Value::Null));
    let (_, v) = d
        .post_raw(
            r#"[{"jsonrpc":"2.0","method":"ping","id":1},{"jsonrpc":"2.0","method":"tools/list","id":2}]"#,
            &[],
        )
        .await;
    assert_eq!(v[1]["result"]["tools"].as_array().unwrap().len(), 13);
    // Oversized body.
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"ping","id":1,"pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let (s, _) = d.post_raw(big, &[]).await;
    assert_eq!(s, 413);
    // Foreign Origin; a local one is fine.
    let ping = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
    let (s, _) = d.post_raw(ping, &[("origin", "https://evil.example")]).await;
    assert_eq!(s, 403);
    let (s, _) = d.post_raw(ping, &[("origin", "http://localhost:5173")]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.mcp_token.0 = Some("sekrit".into());
    let d = Daemon::start(config).await;
    let ping = r#"{"jsonrpc":"2.0","method":"ping","id":1}"#;
    assert_eq!(d.post_raw(ping, &[]).await.0, 401);
    assert_eq!(d.post_raw(ping, &[("authorization", "Bearer wrong")]).await.0, 401);
    assert_eq!(d.post_raw(ping, &[("authorization", "Bearer sekrit")]).await.0, 200);
    let r = d.client.post(d.url("/mcp")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d.client.get(d.url("/github/repos/o/r")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = d.client.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn reverse_proxy_answers_like_github() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let get = |path: &str| d.client.get(d.url(path)).send();
    let r = get("/github/repos/o/r/branches?b=2&a=1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache-mode"], "miss");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["path"], "/repos/o/r/branches");
    // Same read, other query order: same entry.
    let r = get("/github/repos/o/r/branches?a=1&b=2").await.unwrap();
    assert_eq!(r.headers()["x-cache-mode"], "hit");
    // The gh_api tool shares the entry.
    assert_eq!(
        d.mode(
            "gh_api",
            json!({"path": "/repos/o/r/branches", "query": {"a": 1, "b": "2"}})
        )
        .await,
        "hit"
    );
    // Conditional request from the client.
    let r = d
        .client
        .get(d.url("/github/repos/o/r/branches?a=1&b=2"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // GitHub's own errors pass through.
    let r = get("/github/missing").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(gh.requests(), 2);
}

#[tokio::test]
async fn pagination_follows_link_up_to_limit() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let v = d.call("gh_list_issues", json!({"repo": "o/r", "limit": 250})).await;
    let items = v["result"]["data"].as_array().unwrap();
    assert_eq!(items.len(), 250);
    assert_eq!(items[249]["number"], 250);
    assert_eq!(gh.requests(), 3);
    let v = d.call("gh_list_issues", json!({"repo": "o/r", "limit": 5})).await;
    assert_eq!(v["result"]["data"].as_array().unwrap().len(), 5);
    assert_eq!(gh.requests(), 4);
}

#[tokio::test]
async fn tools_cover_the_list() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    for (name, args) in [
        ("gh_list_repos", json!({"owner": "acme", "limit": 10})),
        ("gh_list_repos", json!({})),
        (
            "gh_list_workflow_runs",
            json!({"repo": "o/r", "status": "completed", "branch": "main"}),
        ),
        ("gh_get_workflow_run", json!({"repo": "o/r", "run_id": 42})),
        ("gh_list_runners", json!({"org": "acme"})),
        ("gh_list_pull_requests", json!({"repo": "o/r", "state": "open"})),
        ("gh_get_rate_limit", json!({})),
        ("gh_get_auth_status", json!({})),
    ] {
        let v = d.call(name, args).await;
        assert_eq!(v["result"]["cache_mode"], "miss", "{name}: {v}");
    }
    let v = d.call("gh_get_auth_status", json!({})).await;
    assert_eq!(
        (v["result"]["login"].as_str(), v["result"]["cache_mode"].as_str()),
        (Some("tester"), Some("hit"))
    );
    let v = d
        .call("gh_get_workflow_run", json!({"repo": "o/r", "run_id": "42"}))
        .await;
    assert_eq!(v["result"]["data"]["path"], "/repos/o/r/actions/runs/42");
    let v = d.call("gh_invalidate_cache", json!({"pattern": "repos"})).await;
    assert_eq!(v["result"]["invalidated"], 2, "{v}");
    assert_eq!(d.mode("gh_list_repos", json!({})).await, "miss");
    let v = d.call("gh_invalidate_cache", json!({})).await;
    assert!(v["result"]["invalidated"].as_u64().unwrap() >= 7, "{v}");
}

#[tokio::test]
async fn metrics_and_health() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    d.mode("gh_get_repo", json!({"repo": "o/r"})).await;
    d.mode("gh_get_repo", json!({"repo": "o/r"})).await;
    let text = d.metrics().await;
    for line in [
        "ghcache_hits_total 1",
        "ghcache_api_calls_total 1",
        "ghcache_served_total{mode=\"hit\"} 1",
        "ghcache_served_total{mode=\"miss\"} 1",
        "ghcache_upstream_requests_total{status=\"200\"} 1",
        "ghcache_ratelimit_remaining 5000",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("ghcache_open_fds ") && text.contains("ghcache_threads "));
    let r = d.client.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
}

#[tokio::test]
async fn restart_keeps_the_cache() {
    let gh = FakeGithub::start().await;
    let (config, dir) = with_store(&gh, "restart");
    let d = Daemon::start(config.clone()).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(d.mode("gh_api", json!({"path": "/gone"})).await, "miss");
    d.call("gh_invalidate_cache", json!({"pattern": "api:"})).await;
    d.running.shutdown(Duration::from_secs(2)).await;

    let d = Daemon::start(config).await;
    let v = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(
        (v["result"]["cache_mode"].as_str(), v["result"]["origin"].as_str()),
        (Some("hit"), Some("disk")),
        "{v}"
    );
    assert_eq!(gh.requests(), 2);
    // The invalidated entry stayed gone.
    assert_eq!(d.mode("gh_api", json!({"path": "/gone"})).await, "miss");
    assert_eq!(d.stats().await["store"]["loaded"], 1);
    d.running.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn mcp_endpoint_speaks_streamable_http() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let post = |body: String, origin: Option<&str>| {
        let mut r = d
            .client
            .post(d.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = post(init.to_string(), None).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"ghcache\""), "{text}");
    let r = post(init.to_string(), Some("https://evil.example")).await.unwrap();
    assert_eq!(r.status(), 403);
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let r = post(big, None).await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn a_cancelled_leader_releases_its_followers() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    gh.state.delay_ms.store(400, Ordering::SeqCst);
    let (key, req) = ghcache::daemon::tools::api_read("/slow", vec![], &Default::default()).unwrap();
    let app = d.running.app.clone();
    let (k, r) = (key.clone(), req.clone());
    let leader = tokio::spawn(async move { app.read(&k, &r).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let app = d.running.app.clone();
    let follower = tokio::spawn(async move { app.read(&key, &req).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort(); // a client that went away mid-fetch
    let served = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("follower released")
        .unwrap()
        .unwrap();
    assert_eq!(
        served.mode,
        ghcache::core::CacheMode::Miss,
        "the follower led a new fetch"
    );
    let stats = d.stats().await;
    assert_eq!(stats["abandoned_flights"], 1);
    assert_eq!(stats["in_flight"], 0);
}

#[tokio::test]
async fn upstream_concurrency_is_bounded() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.max_concurrent_upstream = 2;
    let d = std::sync::Arc::new(Daemon::start(config).await);
    gh.state.delay_ms.store(150, Ordering::SeqCst);
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { d.mode("gh_get_repo", json!({"repo": format!("o/r{i}")})).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), "miss");
    }
    assert_eq!(gh.requests(), 6);
    assert_eq!(gh.state.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn slow_github_times_out_and_stale_is_served() {
    let gh = FakeGithub::start().await;
    let mut config = test_config(&gh);
    config.upstream_timeout = Duration::from_millis(200);
    let d = Daemon::start(config).await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    gh.state.delay_ms.store(1_000, Ordering::SeqCst);
    d.clock.advance(REPO_TTL);
    let started = std::time::Instant::now();
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "stale");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}: timeout, one retry, then stale",
        started.elapsed()
    );
    assert_eq!(gh.requests(), 3, "one try plus one retry");
}

#[tokio::test]
async fn proxy_pagination_follows_githubs_links_rewritten_to_the_proxy() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    let mut url = Some(d.url("/github/repos/o/r/issues?per_page=100&state=open"));
    let mut items = 0;
    let mut pages = 0;
    while let Some(u) = url.take() {
        let r = d.client.get(&u).send().await.unwrap();
        assert_eq!(r.status(), 200);
        url = r
            .headers()
            .get("link")
            .map(|l| ghcache::daemon::upstream::next_link(l.to_str().unwrap()).unwrap_or_else(|| panic!("{l:?}")));
        if let Some(next) = &url {
            assert!(next.starts_with(&d.url("/github/")), "{next}");
        }
        let page: Vec<Value> = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        items += page.len();
        pages += 1;
        assert!(pages <= 5);
    }
    assert_eq!((items, pages), (250, 3));
    // Not a list: no link.
    let r = d.client.get(d.url("/github/repos/o/r")).send().await.unwrap();
    assert!(r.headers().get("link").is_none());
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(test_config(&gh)).await;
    gh.state.delay_ms.store(400, Ordering::SeqCst);
    let url = d.url("/github/repos/o/slow");
    let client = d.client.clone();
    let request = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = d.running.addr;
    d.running.shutdown(Duration::from_secs(3)).await;
    assert_eq!(request.await.unwrap().unwrap(), 200, "the in-flight request finished");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// What an owner answers a peer: the entry, through its single flight; a
/// request filed under another read's key, or garbage keys, get an error
/// and cost no GitHub request.
#[tokio::test]
async fn serve_peer_answers_matching_requests_only() {
    use ghcache::daemon::p2p::wire::{Request, Response, WireShape};
    let github = FakeGithub::start().await;
    let d = Daemon::start(test_config(&github)).await;
    let ask = |key: &str, path: &str| Request::Entry {
        key: key.into(),
        path: path.into(),
        query: vec![],
        shape: WireShape::Single,
        limit: None,
    };
    let app = &d.running.app;
    match app.serve_peer(ask("repo:repo=o/r", "/repos/o/r")).await {
        Response::Entry {
            key,
            status,
            etag,
            body,
            ..
        } => {
            assert_eq!((key.as_str(), status), ("repo:repo=o/r", 200));
            assert!(etag.is_some());
            assert!(String::from_utf8(body).unwrap().contains("/repos/o/r"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(github.requests(), 1);
    for (key, path) in [
        ("repo:repo=o/r", "/repos/o/other"),
        ("repo:repo=o/r", "/user"),
        ("not a key", "/repos/o/r"),
        ("repo:repo=o/x", "/repos/o/x/../r"),
    ] {
        let res = app.serve_peer(ask(key, path)).await;
        assert!(matches!(res, Response::Error(_)), "{key} {path}: {res:?}");
    }
    assert_eq!(github.requests(), 1);
    // The asker's check of an answer: key, ETag form.
    let key = ghcache::core::CacheKey::parse("repo:repo=o/r").unwrap();
    let good = Response::Entry {
        key: key.as_str().into(),
        status: 200,
        etag: Some("\"v\"".into()),
        age_ms: 0,
        ttl_ms: 1000,
        body: b"{}".to_vec(),
    };
    assert!(app.entry_from_peer(&key, good).is_ok());
    let wrong_key = Response::Entry {
        key: "repo:repo=o/x".into(),
        status: 200,
        etag: None,
        age_ms: 0,
        ttl_ms: 1000,
        body: vec![],
    };
    assert!(app.entry_from_peer(&key, wrong_key).is_err());
    let bad_etag = Response::Entry {
        key: key.as_str().into(),
        status: 200,
        etag: Some("bad\netag".into()),
        age_ms: 0,
        ttl_ms: 1000,
        body: vec![],
    };
    assert!(app.entry_from_peer(&key, bad_etag).is_err());
    let bad_status = Response::Entry {
        key: key.as_str().into(),
        status: 7,
        etag: None,
        age_ms: 0,
        ttl_ms: 1000,
        body: vec![],
    };
    assert!(app.entry_from_peer(&key, bad_status).is_err());
}

/// A test config with the store on, in a fresh directory named after `name`.
fn with_store(gh: &FakeGithub, name: &str) -> (ghcache::daemon::config::Config, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ghcache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = test_config(gh);
    config.store = true;
    config.data_dir = dir.clone();
    (config, dir)
}

/// Waits (polling) until `ready` holds; fails naming `what` if it never does.
async fn wait_until(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..2000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// The stale-fill race end to end: a read whose GitHub request is in flight
/// when the data changes and is invalidated gets the old data (it asked
/// first), but the next read asks GitHub again rather than joining it, and
/// the old answer is not cached.
#[tokio::test]
async fn an_invalidation_during_a_fill_makes_the_next_read_ask_github_again() {
    let gh = FakeGithub::start().await;
    let d = std::sync::Arc::new(Daemon::start(test_config(&gh)).await);
    let read = |d: &std::sync::Arc<Daemon>| {
        let d = d.clone();
        tokio::spawn(async move { d.call("gh_get_repo", json!({"repo": "o/r"})).await })
    };
    gh.state.hold.store(true, Ordering::SeqCst);
    let early = read(&d);
    wait_until("the first read reached GitHub", || {
        gh.state.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    gh.state.version.fetch_add(1, Ordering::SeqCst);
    let v = d.call("gh_invalidate_cache", json!({"repo": "o/r"})).await;
    assert!(v["result"]["invalidated"].is_u64(), "{v}");
    let late = read(&d);
    wait_until("the read after the invalidation asked GitHub itself", || {
        gh.requests() == 2
    })
    .await;
    gh.state.hold.store(false, Ordering::SeqCst);
    let (early, late) = (early.await.unwrap(), late.await.unwrap());
    assert_eq!(
        (&late["result"]["cache_mode"], &late["result"]["data"]["version"]),
        (&json!("miss"), &json!(1)),
        "the read after the invalidation: {late}"
    );
    assert_eq!(
        (&early["result"]["cache_mode"], &early["result"]["data"]["version"]),
        (&json!("miss"), &json!(0)),
        "the read before it: {early}"
    );
    let next = d.call("gh_get_repo", json!({"repo": "o/r"})).await;
    assert_eq!(
        (&next["result"]["cache_mode"], &next["result"]["data"]["version"]),
        (&json!("hit"), &json!(1)),
        "{next}"
    );
    assert_eq!(gh.requests(), 2);
}

/// A fill that an invalidation overtook is not written to the store either:
/// after a restart the key is read from GitHub, not from disk.
#[tokio::test]
async fn a_fill_overtaken_by_an_invalidation_is_not_persisted() {
    let gh = FakeGithub::start().await;
    let (config, dir) = with_store(&gh, "stale-fill");
    let d = std::sync::Arc::new(Daemon::start(config.clone()).await);
    gh.state.hold.store(true, Ordering::SeqCst);
    let early = {
        let d = d.clone();
        tokio::spawn(async move { d.mode("gh_get_repo", json!({"repo": "o/r"})).await })
    };
    wait_until("the read reached GitHub", || {
        gh.state.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    d.call("gh_invalidate_cache", json!({"repo": "o/r"})).await;
    gh.state.hold.store(false, Ordering::SeqCst);
    assert_eq!(early.await.unwrap(), "miss");
    let d = std::sync::Arc::into_inner(d).expect("the read task has ended");
    d.running.shutdown(Duration::from_secs(2)).await;

    let d = Daemon::start(config).await;
    assert_eq!(d.stats().await["store"]["loaded"], 0);
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(gh.requests(), 2);
    d.running.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
