//! The HTTP surface (axum on a hyper accept loop of our own).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /mcp` | MCP Streamable HTTP (rmcp), sessions bounded ([`sessions`]) |
//! | `POST /jsonrpc` | plain JSON-RPC 2.0 ([`jsonrpc`](super::jsonrpc)) |
//! | `GET /github/<path>?<query>` | reverse proxy answering like GitHub ([`proxy`]) |
//! | `POST /webhook` | GitHub webhook deliveries → invalidations ([`webhook`]; authenticated by their HMAC signature, not the token) |
//! | `GET /metrics` | OpenMetrics text (behind the token with `metrics_require_token`) |
//! | `GET /healthz` | `ok` |
//! | `GET /` | the dashboard page ([`dashboard`]) |
//! | `GET /api/dashboard` | the dashboard's data, JSON ([`dashboard`]) |
//!
//! Every route checks `Host`; `/mcp`, `/jsonrpc`, `/github` and
//! `/api/dashboard` also check `Origin` and the bearer token and bound
//! their bodies ([`guard`]).
//! Connections are capped and timed out in [`serve`]. Every answer carries
//! `X-Content-Type-Options: nosniff`. The limits and what each refusal
//! answers are listed in `docs/security.md`.

pub mod dashboard;
pub mod guard;
pub mod proxy;
pub mod replay;
pub mod serve;
pub mod sessions;
pub mod webhook;
pub mod workers;

use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use super::jsonrpc::handle_jsonrpc_bytes;
use super::mcp::McpHandler;
use super::App;
use crate::sync::StdArc as Arc;
pub use guard::origin_allowed;

/// The whole router. Starts the MCP session sweeper, which ends with
/// `mcp_cancel`.
pub fn router(app: Arc<App>, mcp_cancel: CancellationToken) -> Router {
    let limit = app.config.max_body_bytes;
    let mcp_app = app.clone();
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(limit)
        .with_cancellation_token(mcp_cancel.clone());
    // The Host rule is ours (guard::check_host, every route); rmcp's own
    // list would only repeat it, and could not know `allowed_hosts`.
    mcp_config = mcp_config.disable_allowed_hosts();
    let book = sessions::SessionBook::new(app.config.limits.clone(), app.metrics.clone());
    let manager = sessions::BoundedSessions::new(book.clone());
    tokio::spawn(manager.clone().sweep(mcp_cancel));
    let mcp = StreamableHttpService::new(move || Ok(McpHandler::new(mcp_app.clone())), manager, mcp_config);
    let mcp = Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(book, sessions::admit));
    let guarded = Router::new()
        .route("/jsonrpc", post(jsonrpc))
        .route("/github/{*path}", any(proxy::proxy))
        .route("/github", any(proxy::proxy))
        .merge(dashboard::data())
        .merge(mcp)
        .layer(middleware::from_fn_with_state(app.clone(), guard::guard))
        .layer(DefaultBodyLimit::max(limit));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), guard::metrics_guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/webhook", post(webhook::webhook))
        .merge(dashboard::pages())
        .merge(metrics)
        .merge(guarded)
        .layer(middleware::from_fn_with_state(app.clone(), guard::check_host))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(middleware::from_fn_with_state(app.clone(), time_answer))
        .with_state(app)
}

/// Records the time to each answer's headers (refusals included) in
/// `ghcache_http_request_duration_seconds{route}`.
async fn time_answer(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = super::metrics::route_of(request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    app.metrics.http_answered(route, started.elapsed().as_secs_f64());
    response
}

async fn jsonrpc(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match handle_jsonrpc_bytes(&app, &body).await {
        Some(answer) => ([(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics_text(),
    )
        .into_response()
}
