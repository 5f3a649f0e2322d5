//! The HTTP surface (axum).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /mcp` | MCP Streamable HTTP (rmcp) |
//! | `POST /jsonrpc` | plain JSON-RPC 2.0 ([`jsonrpc`](super::jsonrpc)) |
//! | `GET /github/<path>?<query>` | reverse proxy answering like GitHub, plus `X-Cache-Mode`; other methods 405 |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | `ok` |
//!
//! `/mcp`, `/jsonrpc` and `/github` share one guard: a present `Origin`
//! must be a loopback origin or one of `allowed_origins` (else 403, against
//! DNS rebinding from browsers), and when `mcp_token` is set the request
//! must carry `Authorization: Bearer <token>` (else 401; `token <token>` is
//! accepted too, for GitHub clients pointed at the proxy). Bodies above
//! `max_body_bytes` get 413.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::handle_jsonrpc_bytes;
use super::mcp::McpHandler;
use super::tools::{api_read, parse_query};
use super::{upstream_error, App};
use crate::core::{CacheMode, Served};
use crate::sync::StdArc as Arc;

/// The whole router.
pub fn router(app: Arc<App>, mcp_cancel: CancellationToken) -> Router {
    let limit = app.config.max_body_bytes;
    let mcp_app = app.clone();
    let mut mcp_config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(limit)
        .with_cancellation_token(mcp_cancel);
    if !app.config.listen.ip().is_loopback() {
        // Reached by other hosts' names: the Origin check and the token
        // protect it, not a Host allowlist.
        mcp_config = mcp_config.disable_allowed_hosts();
    }
    let mcp = StreamableHttpService::new(
        move || Ok(McpHandler::new(mcp_app.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let guarded = Router::new()
        .route("/jsonrpc", post(jsonrpc))
        .nest_service("/mcp", mcp)
        .route("/github/{*path}", any(proxy))
        .route("/github", any(proxy))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(limit));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded)
        .with_state(app)
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or_default()
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
        && rest[rest.find(']').map_or(0, |i| i + 1)..]
            .split_once(':')
            .is_none_or(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// Is `origin` acceptable (see the module docs)?
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    is_loopback_origin(origin) || allowed.iter().any(|a| a == origin.trim_end_matches('/'))
}

fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error_json(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"message": message}).to_string(),
    )
        .into_response()
}

async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &app.config.allowed_origins));
        if !ok {
            return error_json(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    if let Some(token) = &app.config.mcp_token.0 {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
            .map(str::trim);
        if !given.is_some_and(|g| tokens_equal(g.as_bytes(), token.as_bytes())) {
            let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

async fn jsonrpc(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match handle_jsonrpc_bytes(&app, &body).await {
        Some(answer) => ([(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics_text(),
    )
        .into_response()
}

fn cache_mode_header(mode: CacheMode) -> (header::HeaderName, &'static str) {
    (header::HeaderName::from_static("x-cache-mode"), mode.as_str())
}

async fn proxy(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = error_json(StatusCode::METHOD_NOT_ALLOWED, "ghcache proxies GET only");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = uri.path().strip_prefix("/github").unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    let Some(query) = parse_query(uri.query().unwrap_or("")) else {
        return error_json(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let (key, req) = match api_read(path, query) {
        Ok(kr) => kr,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.message),
    };
    match app.read(&key, &req).await {
        Ok(served) => {
            let mut r = answer(&served, &headers, method == Method::HEAD);
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if let Some(link) = host.and_then(|host| next_page_link(host, &req.path, &req.query, &served)) {
                if let Ok(v) = HeaderValue::from_str(&link) {
                    r.headers_mut().insert(header::LINK, v);
                }
            }
            r
        }
        Err(e) => {
            let (status, body) = match upstream_error(&e) {
                Some(u) if !u.body.is_empty() => (u.http_status(), u.body.clone()),
                Some(u) => (u.http_status(), Bytes::from(json!({"message": u.message}).to_string())),
                None => (502, Bytes::from(json!({"message": e.to_string()}).to_string())),
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                body,
            )
                .into_response();
            if let Some(u) = upstream_error(&e) {
                if let super::upstream::ErrorKind::RateLimited { reset } = u.kind {
                    r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from(0));
                    r.headers_mut().insert("x-ratelimit-reset", HeaderValue::from(reset));
                }
            }
            r.headers_mut()
                .insert("x-cache-mode", HeaderValue::from_static("error"));
            r
        }
    }
}

/// A `Link: <...>; rel="next"` for a full page of a JSON-array list.
///
/// Entries keep status, body and ETag only, not GitHub's headers, so the
/// proxy cannot repeat GitHub's own `Link`. For page-numbered lists (most of
/// the REST API) it synthesises `next` instead: a page holding `per_page`
/// items (GitHub's default 30) points at `page + 1` through the proxy. At
/// worst a client asks for one empty page at the end. Cursor-paginated and
/// object-wrapped lists get no link.
pub fn next_page_link(host: &str, path: &str, query: &[(String, String)], served: &Served) -> Option<String> {
    if served.entry.status != 200 || !served.entry.body.starts_with(b"[") {
        return None;
    }
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let per_page: usize = param("per_page").map_or(Some(30), |v| v.parse().ok())?;
    let page: usize = param("page").map_or(Some(1), |v| v.parse().ok())?;
    if per_page == 0
        || query
            .iter()
            .any(|(k, _)| k == "after" || k == "before" || k == "cursor")
    {
        return None;
    }
    let items: Vec<serde::de::IgnoredAny> = serde_json::from_slice(&served.entry.body).ok()?;
    if items.len() < per_page {
        return None;
    }
    let mut next: Vec<(String, String)> = query.iter().filter(|(k, _)| k != "page").cloned().collect();
    next.push(("page".into(), (page + 1).to_string()));
    Some(format!(
        "<http://{host}/github{path}?{}>; rel=\"next\"",
        super::upstream::encode_query(&next)
    ))
}

fn answer(served: &Served, request_headers: &HeaderMap, head: bool) -> Response {
    let entry = &served.entry;
    let etag = entry.etag.as_ref().and_then(|t| HeaderValue::from_str(t.as_str()).ok());
    let not_modified = etag.as_ref().is_some_and(|tag| {
        request_headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == tag.to_str().unwrap_or_default() || t.trim() == "*")
            })
    });
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK)
    };
    let body = if not_modified || head {
        Bytes::new()
    } else {
        entry.body.clone()
    };
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            cache_mode_header(served.mode),
        ],
        body,
    )
        .into_response();
    if let Some(tag) = etag {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed("http://localhost:3000", &none));
        assert!(origin_allowed("http://127.0.0.1", &none));
        assert!(origin_allowed("http://[::1]:8080", &none));
        assert!(!origin_allowed("http://localhost.evil.example", &none));
        assert!(!origin_allowed("https://evil.example", &none));
        assert!(!origin_allowed("null", &none));
        assert!(origin_allowed(
            "https://app.example",
            &["https://app.example".to_string()]
        ));
    }
}
