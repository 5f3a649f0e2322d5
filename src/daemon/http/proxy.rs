//! `/github/<path>`: the reverse proxy, answering like GitHub.
//!
//! GET and HEAD go through the cache ([`App::read`]); other methods are
//! refused with 405. The path and query are checked by the same rules as
//! every tool (`ApiPath`); a link written back to the client uses the
//! client's `Host`, which the guard has already checked to be a plain
//! `host[:port]` this daemon accepts.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::guard::error_json;
use crate::core::{CacheMode, Served};
use crate::daemon::tools::{api_read, parse_query};
use crate::daemon::upstream::ErrorKind;
use crate::daemon::{upstream_error, App};
use crate::sync::StdArc as Arc;

fn cache_mode_header(mode: CacheMode) -> (header::HeaderName, &'static str) {
    (header::HeaderName::from_static("x-cache-mode"), mode.as_str())
}

/// Answers one proxy request (module docs).
pub async fn proxy(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
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
                if let ErrorKind::RateLimited { reset } = u.kind {
                    r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from(0));
                    r.headers_mut().insert("x-ratelimit-reset", HeaderValue::from(reset));
                }
                // A redirect off the API root goes back as it came.
                if let Some(location) = u.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
                    r.headers_mut().insert(header::LOCATION, location);
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
        crate::daemon::upstream::encode_query(&next)
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
