//! A replayed day of GitHub events: what webhooks save and what they fix.
//!
//! Ignored by default (it prints figures, it asserts only what must hold);
//! `ci/webhook-replay` runs it. One seeded synthetic day for 20
//! repositories: agents read the runs, runners, issues, pull requests and
//! repository object of a random repository every 10 s (8,640 reads), and
//! GitHub changes under them (per repository: 8 pushes, each followed by a
//! workflow run of 3 jobs going queued → in progress → completed; 16 issue
//! events; 6 pull-request events: 2,320 events in all). The same day is
//! replayed against the in-process daemon four ways: default TTLs or 1 h
//! TTLs, with or without the events also sent to `POST /webhook`. The
//! daemon's clock is advanced to each action's time, so no real day passes.
//!
//! The fake GitHub here keeps a version per path (bumped when an event
//! changes what that path answers), so each answer can be judged: **stale**
//! when the version served is older than GitHub's at the time of the read.
//! It counts every request it gets, and the 304s among them (conditional
//! requests that cost no quota).
#![cfg(feature = "daemon")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::Daemon;
use ghcache::daemon::config::{Config, Secret};
use serde_json::{json, Value};

const REPOS: usize = 20;
const DAY_SECS: u64 = 24 * 3600;
const READ_EVERY_SECS: u64 = 10;
const SECRET: &str = "replay-secret";

#[derive(Default)]
struct World {
    versions: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
    not_modified: AtomicU64,
}

impl World {
    fn version(&self, path: &str) -> u64 {
        *self.versions.lock().unwrap().get(path).unwrap_or(&0)
    }

    fn bump(&self, path: &str) {
        *self.versions.lock().unwrap().entry(path.to_string()).or_default() += 1;
    }
}

async fn serve(State(world): State<Arc<World>>, req: Request) -> Response {
    world.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let v = world.version(&path);
    let etag = format!("\"{v}\"");
    if req.headers().get("if-none-match").and_then(|h| h.to_str().ok()) == Some(etag.as_str()) {
        world.not_modified.fetch_add(1, Ordering::SeqCst);
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
        return r;
    }
    let item = json!({"id": 1, "v": v});
    let body = if path.ends_with("/actions/runs") {
        json!({"total_count": 1, "workflow_runs": [item]})
    } else if path.ends_with("/actions/runners") {
        json!({"total_count": 1, "runners": [item]})
    } else if path.ends_with("/issues") || path.ends_with("/pulls") {
        json!([item])
    } else {
        item
    };
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert("etag", HeaderValue::from_str(&etag).unwrap());
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("5000"));
    r
}

/// What GitHub does at a moment: a change (the event, the paths whose
/// answers it changes) or an agent's read.
#[derive(Clone, Debug)]
enum Action {
    Event {
        name: &'static str,
        payload: Value,
        changes: Vec<String>,
    },
    Read {
        tool: &'static str,
        args: Value,
        path: String,
    },
}

fn repo(i: usize) -> String {
    format!("acme/repo-{i}")
}

/// The seeded day: (second, action), in time order.
fn day() -> Vec<(u64, Action)> {
    let mut rng = fastrand::Rng::with_seed(15);
    let mut actions = Vec::new();
    for i in 0..REPOS {
        let r = repo(i);
        let repository = json!({"full_name": r, "owner": {"login": "acme"}});
        let paths = |areas: &[&str]| -> Vec<String> {
            areas
                .iter()
                .map(|a| {
                    if a.is_empty() {
                        format!("/repos/{r}")
                    } else {
                        format!("/repos/{r}/{a}")
                    }
                })
                .collect()
        };
        for _ in 0..8 {
            let at = rng.u64(0..DAY_SECS - 900);
            actions.push((
                at,
                Action::Event {
                    name: "push",
                    payload: json!({"ref": "refs/heads/main", "repository": repository}),
                    changes: paths(&[""]),
                },
            ));
            actions.push((
                at + 5,
                Action::Event {
                    name: "workflow_run",
                    payload: json!({"action": "requested", "repository": repository, "workflow_run": {"id": at}}),
                    changes: paths(&["actions/runs"]),
                },
            ));
            for job in 0..3u64 {
                for (step, action) in ["queued", "in_progress", "completed"].iter().enumerate() {
                    actions.push((
                        at + 10 + job * 60 + step as u64 * 120,
                        Action::Event {
                            name: "workflow_job",
                            payload: json!({"action": action, "repository": repository, "workflow_job": {"id": job}}),
                            changes: paths(&["actions/runs", "actions/runners"]),
                        },
                    ));
                }
            }
            actions.push((
                at + 600,
                Action::Event {
                    name: "workflow_run",
                    payload: json!({"action": "completed", "repository": repository, "workflow_run": {"id": at}}),
                    changes: paths(&["actions/runs"]),
                },
            ));
        }
        for _ in 0..16 {
            actions.push((
                rng.u64(0..DAY_SECS),
                Action::Event {
                    name: "issues",
                    payload: json!({"action": "opened", "repository": repository, "issue": {"number": 1}}),
                    changes: paths(&["issues", ""]),
                },
            ));
        }
        for _ in 0..6 {
            actions.push((
                rng.u64(0..DAY_SECS),
                Action::Event {
                    name: "pull_request",
                    payload: json!({"action": "opened", "repository": repository, "number": 1}),
                    changes: paths(&["pulls", "issues", ""]),
                },
            ));
        }
    }
    let reads: [(&str, &str); 5] = [
        ("gh_list_workflow_runs", "actions/runs"),
        ("gh_list_runners", "actions/runners"),
        ("gh_list_issues", "issues"),
        ("gh_list_pull_requests", "pulls"),
        ("gh_get_repo", ""),
    ];
    for t in (0..DAY_SECS).step_by(READ_EVERY_SECS as usize) {
        let r = repo(rng.usize(0..REPOS));
        let (tool, area) = reads[rng.usize(0..reads.len())];
        let path = if area.is_empty() {
            format!("/repos/{r}")
        } else {
            format!("/repos/{r}/{area}")
        };
        actions.push((
            t,
            Action::Read {
                tool,
                args: json!({"repo": r}),
                path,
            },
        ));
    }
    // Reads at the same second as an event come after it.
    actions.sort_by_key(|(t, a)| (*t, matches!(a, Action::Read { .. })));
    actions
}

/// The highest `"v"` anywhere in a tool's answer.
fn served_version(v: &Value) -> u64 {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                if k == "v" {
                    x.as_u64().unwrap_or(0)
                } else {
                    served_version(x)
                }
            })
            .max()
            .unwrap_or(0),
        Value::Array(a) => a.iter().map(served_version).max().unwrap_or(0),
        _ => 0,
    }
}

struct Figures {
    reads: u64,
    upstream: u64,
    not_modified: u64,
    stale: u64,
}

async fn replay(actions: &[(u64, Action)], long_ttl: bool, webhooks: bool) -> Figures {
    let world = Arc::new(World::default());
    let app = Router::new().fallback(serve).with_state(world.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        github_api_url: format!("http://{addr}"),
        github_token: Secret(Some("replay-token".into())),
        store: false,
        webhook_secret: Secret(webhooks.then(|| SECRET.to_string())),
        ..Config::default()
    };
    // The day runs in about a real minute: lift the per-client bound.
    config.limits.client_upstream_per_minute = 1_000_000;
    if long_ttl {
        let ttls: String = [
            "runners",
            "workflow_runs",
            "workflow_run",
            "repos",
            "repo",
            "issues",
            "pull_requests",
            "api",
        ]
        .iter()
        .map(|op| format!("{op} = 3600\n"))
        .collect();
        config.apply_toml(&format!("[ttl_secs]\n{ttls}")).unwrap();
    }
    let d = Daemon::start(config).await;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut now = 0;
    let mut figures = Figures {
        reads: 0,
        upstream: 0,
        not_modified: 0,
        stale: 0,
    };
    for (n, (t, action)) in actions.iter().enumerate() {
        d.clock.advance(Duration::from_secs(t - now));
        now = *t;
        match action {
            Action::Event { name, payload, changes } => {
                for path in changes {
                    world.bump(path);
                }
                if webhooks {
                    let body = payload.to_string();
                    let tag = ring::hmac::sign(&key, body.as_bytes());
                    let sig: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                    let r = d
                        .client
                        .post(d.url("/webhook"))
                        .header("x-github-event", *name)
                        .header("x-github-delivery", format!("d-{n}"))
                        .header("x-hub-signature-256", format!("sha256={sig}"))
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200, "{name}");
                }
            }
            Action::Read { tool, args, path } => {
                let v = d.call(tool, args.clone()).await;
                let result = &v["result"];
                assert!(result.get("data").is_some(), "{tool} {args}: {v}");
                figures.reads += 1;
                if served_version(&result["data"]) < world.version(path) {
                    figures.stale += 1;
                }
            }
        }
    }
    figures.upstream = world.requests.load(Ordering::SeqCst);
    figures.not_modified = world.not_modified.load(Ordering::SeqCst);
    figures
}

#[tokio::test]
#[ignore = "prints figures; run by ci/webhook-replay"]
async fn a_replayed_day_of_events() {
    let actions = day();
    let events = actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Event { .. }))
        .count();
    println!(
        "one day, {REPOS} repositories: {} reads (one per {READ_EVERY_SECS} s), {events} events",
        actions.len() - events
    );
    println!(
        "{:<34} {:>8} {:>10} {:>12} {:>10} {:>8}",
        "run", "reads", "upstream", "of them 304", "full 200", "stale"
    );
    let mut rows = Vec::new();
    for (label, long_ttl, webhooks) in [
        ("default TTLs, no webhooks", false, false),
        ("default TTLs + webhooks", false, true),
        ("1 h TTLs, no webhooks", true, false),
        ("1 h TTLs + webhooks", true, true),
    ] {
        let f = replay(&actions, long_ttl, webhooks).await;
        println!(
            "{label:<34} {:>8} {:>10} {:>12} {:>10} {:>7.2}%",
            f.reads,
            f.upstream,
            f.not_modified,
            f.upstream - f.not_modified,
            100.0 * f.stale as f64 / f.reads as f64
        );
        rows.push(f);
    }
    let (base, hooked) = (&rows[0], &rows[3]);
    println!(
        "1 h TTLs + webhooks vs default TTLs without: {} fewer upstream requests ({:.0}% saved), stale answers {} -> {}",
        base.upstream - hooked.upstream,
        100.0 * (base.upstream - hooked.upstream) as f64 / base.upstream as f64,
        base.stale,
        hooked.stale
    );
    // What must hold: with webhooks no answer is stale (every change in
    // this day has an event whose scopes cover it), and the long TTLs save
    // requests.
    assert_eq!((rows[1].stale, rows[3].stale), (0, 0));
    assert!(hooked.upstream < base.upstream);
}
