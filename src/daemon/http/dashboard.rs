//! The dashboard: `GET /` (a page) and `GET /api/dashboard` (its data).
//!
//! | route | guard | what |
//! | --- | --- | --- |
//! | `GET /`, `/dashboard/app.js`, `/dashboard/app.css` | `Host` | the page: fixed bytes compiled into the binary |
//! | `GET /api/dashboard` | `Host`, `Origin`, token (as `/jsonrpc`) | everything the page shows, as JSON |
//!
//! The page carries no data and no secret, so it needs no token; its
//! script asks `/api/dashboard` every 2 s and, when that answers 401, asks
//! the operator for the token once and keeps it in `sessionStorage`. Every
//! change of state (the invalidate buttons) is a `POST /jsonrpc`
//! `gh_invalidate_cache`, behind the same guard. Nothing on the page is
//! fetched from anywhere but this daemon, and its Content-Security-Policy
//! says so (`default-src 'none'`, scripts and styles from `'self'` only,
//! no frames), so a value shown (a key, a webhook's repository name) can
//! only ever be text.
//!
//! # The data
//! `stats` is [`App::stats_json`], the same object `gh_get_cache_stats`
//! answers (its `aggregate` is `fleet` here). The rest: `history` (reads
//! over the last hour, [`history`](crate::daemon::history)), `activity`
//! ([`activity`](crate::daemon::activity)), `hot_keys`
//! ([`hot_keys`](crate::daemon::hot_keys)), and `repos`: for each of
//! `dashboard_repos`, its runners and latest workflow runs, read through
//! [`App::call`] like `gh_list_runners` and `gh_list_workflow_runs`, so a
//! fresh entry costs no GitHub request.
//!
//! # What the dashboard costs
//! Each read through the cache counts as a lookup, and asking the fleet
//! for its counters is a request to every peer. So the `repos` section is
//! refreshed at most every [`REPOS_EVERY`] and `fleet` at most every
//! [`FLEET_EVERY`], however many pages poll; between refreshes they answer
//! the memo. The memo's locks are leaves, held to copy or replace a value,
//! never across the refresh.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};

use crate::daemon::tools::ToolCall;
use crate::daemon::App;
use crate::sync::{lock, Mutex, StdArc as Arc};

/// The `repos` section is read through the cache at most this often.
pub const REPOS_EVERY: Duration = Duration::from_secs(10);
/// The fleet's counters are asked at most this often.
pub const FLEET_EVERY: Duration = Duration::from_secs(5);
/// Workflow runs shown per repository.
pub const RUNS_SHOWN: usize = 10;
/// Hot keys shown.
pub const HOT_SHOWN: usize = 15;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Scripts and styles from this daemon only, no inline code, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The refreshed-now-and-then sections (module docs).
#[derive(Debug, Default)]
pub struct Memo {
    repos: Mutex<Option<(Instant, Value)>>,
    fleet: Mutex<Option<(Instant, Value)>>,
}

impl Memo {
    /// The memo's value when younger than `every`.
    fn fresh(slot: &Mutex<Option<(Instant, Value)>>, every: Duration) -> Option<Value> {
        lock(slot)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < every)
            .map(|(_, v)| v.clone())
    }

    fn store(slot: &Mutex<Option<(Instant, Value)>>, value: &Value) {
        *lock(slot) = Some((Instant::now(), value.clone()));
    }
}

/// The page's routes; only the outer `Host` check applies to them.
pub fn pages() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// The data route, to be put behind the guard of `/jsonrpc`.
pub fn data() -> Router<Arc<App>> {
    Router::new()
        .route("/api/dashboard", get(dashboard))
        .layer(Extension(Arc::new(Memo::default())))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn dashboard(State(app): State<Arc<App>>, Extension(memo): Extension<Arc<Memo>>) -> Response {
    let body = snapshot(&app, &memo).await;
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The whole `/api/dashboard` answer (module docs). The counters are
/// taken last, so they include the reads this answer made.
pub async fn snapshot(app: &App, memo: &Memo) -> Value {
    let repos = match Memo::fresh(&memo.repos, REPOS_EVERY) {
        Some(v) => v,
        None => {
            let v = repos(app).await;
            Memo::store(&memo.repos, &v);
            v
        }
    };
    let fleet = match Memo::fresh(&memo.fleet, FLEET_EVERY) {
        Some(v) => v,
        None => {
            let v = app.aggregate().await;
            Memo::store(&memo.fleet, &v);
            v
        }
    };
    let (hot, skipped) = app.hot_keys.top(HOT_SHOWN);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_unix_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "repos": repos,
        "fleet": fleet,
        "history": {
            "interval_secs": app.history.interval().as_secs_f64(),
            "capacity": app.history.capacity(),
            "samples": app.history.samples(Instant::now()),
        },
        "activity": app.activity.recent(),
        "hot_keys": {"keys": hot, "skipped": skipped},
        "stats": app.stats_json(),
    })
}

/// Runners and latest runs of every `dashboard_repos` entry, read
/// concurrently through the cache.
async fn repos(app: &App) -> Value {
    let reads = app.config.dashboard_repos.iter().map(|repo| async move {
        let runners = read(app, "gh_list_runners", json!({"repo": repo}), "runners", runner_row).await;
        let runs = read(
            app,
            "gh_list_workflow_runs",
            json!({"repo": repo, "limit": RUNS_SHOWN}),
            "workflow_runs",
            run_row,
        )
        .await;
        json!({"repo": repo, "runners": runners, "runs": runs})
    });
    Value::Array(futures::future::join_all(reads).await)
}

/// One tool read, cut to the fields the page shows: `{cache_mode,
/// age_secs, total_count, items}` or `{error, status}`.
async fn read(app: &App, tool: &str, args: Value, field: &str, row: fn(&Value) -> Value) -> Value {
    let call = match ToolCall::parse(tool, Some(&args)) {
        Ok(call) => call,
        Err(e) => return json!({"error": e.message, "status": null}),
    };
    match app.call(call).await {
        Ok(v) => {
            let items: Vec<Value> = v["data"][field]
                .as_array()
                .map_or_else(Vec::new, |a| a.iter().map(row).collect());
            json!({
                "cache_mode": v["cache_mode"],
                "age_secs": v["age_secs"],
                "total_count": v["data"]["total_count"],
                "items": items,
            })
        }
        Err(e) => {
            let status = e.data.as_ref().map_or(Value::Null, |d| d["status"].clone());
            json!({"error": e.message, "status": status})
        }
    }
}

fn runner_row(r: &Value) -> Value {
    let labels: Vec<&Value> = r["labels"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|l| &l["name"]).collect());
    json!({"id": r["id"], "name": r["name"], "os": r["os"], "status": r["status"], "busy": r["busy"], "labels": labels})
}

fn run_row(r: &Value) -> Value {
    json!({
        "id": r["id"], "name": r["name"], "display_title": r["display_title"], "run_number": r["run_number"],
        "event": r["event"], "status": r["status"], "conclusion": r["conclusion"], "head_branch": r["head_branch"],
        "actor": r["actor"]["login"], "created_at": r["created_at"], "updated_at": r["updated_at"], "html_url": r["html_url"],
    })
}
