//! The dashboard's HTTP side, without a browser: the page is fixed bytes
//! anyone on an allowed `Host` may load; its data sits behind the same
//! guard as `/jsonrpc`, and says what `gh_get_cache_stats` says.
//! (`ci/dashboard-check` drives the page itself in headless Chromium.)

mod common;

use common::{test_config, Daemon, FakeGithub};
use ghcache::daemon::config::{Config, Secret};
use serde_json::{json, Value};

const TOKEN: &str = "dash-s3cret";

async fn with_token() -> (FakeGithub, Daemon) {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(Config {
        mcp_token: Secret(Some(TOKEN.into())),
        ..test_config(&gh)
    })
    .await;
    (gh, d)
}

async fn get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = d.client.get(d.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn data(d: &Daemon, headers: &[(&str, &str)]) -> Value {
    let r = get(d, "/api/dashboard", headers).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn the_page_is_fixed_bytes_under_a_strict_policy() {
    let (gh, d) = with_token().await;
    // No token needed for the page: it carries no data.
    let r = get(&d, "/", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(html.contains("/dashboard/app.js") && html.contains("/dashboard/app.css"));
    assert!(!html.contains(TOKEN));
    assert!(!html.contains("<script>"), "no inline script (the policy forbids it)");
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = get(&d, path, &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
    }
    // The Host rule covers the page too (DNS rebinding).
    assert_eq!(get(&d, "/", &[("host", "evil.example")]).await.status(), 403);
    // Only the three assets exist (an unknown path meets the guard: 401 here).
    assert_ne!(get(&d, "/dashboard/nope.js", &[]).await.status(), 200);
    // No GitHub request for any of it.
    assert_eq!(gh.requests(), 0);
}

#[tokio::test]
async fn the_data_sits_behind_the_jsonrpc_guard() {
    let (gh, d) = with_token().await;
    let bearer = format!("Bearer {TOKEN}");
    let r = get(&d, "/api/dashboard", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        get(&d, "/api/dashboard", &[("authorization", "Bearer wrong")])
            .await
            .status(),
        401
    );
    let r = get(
        &d,
        "/api/dashboard",
        &[("authorization", &bearer), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status(), 403, "a foreign page may not read it, token or not");
    let r = get(
        &d,
        "/api/dashboard",
        &[("authorization", &bearer), ("host", "evil.example")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let v = data(&d, &[("authorization", &bearer), ("origin", "http://localhost:8080")]).await;
    assert!(v["stats"]["lookups"].is_u64(), "{v}");
    assert!(!v.to_string().contains(TOKEN));
    assert!(d
        .metrics()
        .await
        .contains("ghcache_http_refused_total{reason=\"token\"} 2"));
    assert_eq!(gh.requests(), 0, "no dashboard_repos: nothing asked of GitHub");
}

#[tokio::test]
async fn the_data_says_what_the_stats_tool_says() {
    let gh = FakeGithub::start().await;
    let d = Daemon::start(Config {
        dashboard_repos: vec!["o/r".into()],
        ..test_config(&gh)
    })
    .await;
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "miss");
    assert_eq!(d.mode("gh_get_repo", json!({"repo": "o/r"})).await, "hit");
    for _ in 0..3 {
        d.call("gh_api", json!({"path": "/meta"})).await;
    }
    let v = data(&d, &[]).await;
    let s = d.stats().await;
    for field in [
        "lookups",
        "hits",
        "misses",
        "api_calls",
        "api_calls_saved",
        "entries",
        "bytes",
    ] {
        assert_eq!(
            v["stats"][field], s[field],
            "{field}: dashboard {} vs tool {}",
            v["stats"], s
        );
    }
    assert_eq!(v["stats"]["rate_limit"], s["rate_limit"]);
    assert_eq!(v["stats"]["rate_limit"]["remaining"], 5000, "{}", s["rate_limit"]);
    assert!(v["fleet"].is_null(), "P2P is not running here");

    // The configured repository's runners and runs, read through the cache.
    let repo = &v["repos"][0];
    assert_eq!(repo["repo"], "o/r");
    assert_eq!(repo["runners"]["items"][0]["name"], "r1", "{repo}");
    assert_eq!(repo["runners"]["items"][0]["status"], "online");
    let runs = repo["runs"]["items"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{repo}");
    assert_eq!(
        (&runs[0]["conclusion"], &runs[0]["display_title"]),
        (&json!("success"), &json!("fix the build"))
    );
    assert_eq!(repo["runs"]["cache_mode"], "miss");

    // History: every read so far (2 + 3 + the dashboard's 2), in the open
    // interval; the same count as the core's lookups, the same hits.
    let samples = v["history"]["samples"].as_array().unwrap();
    let sum = |f: &str| samples.iter().map(|x| x[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("reads"), 7);
    assert_eq!(sum("reads"), s["lookups"].as_u64().unwrap());
    assert_eq!(sum("hits"), s["hits"].as_u64().unwrap());
    assert_eq!(v["history"]["interval_secs"], 10.0);
    assert_eq!(v["history"]["capacity"], 360);

    // The hottest key is the one read three times.
    let hot = &v["hot_keys"]["keys"];
    assert_eq!(
        (&hot[0]["key"], &hot[0]["count"]),
        (&json!("api:path=/meta"), &json!(3)),
        "{hot}"
    );

    // An invalidation shows in the activity log.
    assert_eq!(v["activity"], json!([]));
    let r = d.call("gh_invalidate_cache", json!({"repo": "o/r"})).await;
    assert_eq!(r["result"]["invalidated"], 3, "{r}");
    let v2 = data(&d, &[]).await;
    let events = v2["activity"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["kind"], "invalidation");
    assert_eq!(events[0]["detail"], "repository o/r: 3 entries dropped");

    // Within REPOS_EVERY the repos section is the memo: no new lookups,
    // whatever the number of polls.
    for _ in 0..3 {
        data(&d, &[]).await;
    }
    let v3 = data(&d, &[]).await;
    assert_eq!(v3["stats"]["lookups"], s["lookups"], "polling does not read again");
    assert_eq!(v3["repos"], v["repos"]);
}

#[tokio::test]
async fn a_repository_github_refuses_shows_its_error() {
    let gh = FakeGithub::start().await;
    gh.state.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let d = Daemon::start(Config {
        dashboard_repos: vec!["o/r".into()],
        ..test_config(&gh)
    })
    .await;
    let v = data(&d, &[]).await;
    let runners = &v["repos"][0]["runners"];
    assert!(runners["error"].as_str().is_some_and(|e| !e.is_empty()), "{runners}");
    assert_eq!(runners["status"], 503, "{runners}");
}
