//! `/github/<path>`: an HTTP cache of GitHub for any GitHub client.
//!
//! **Reads** (GET, HEAD) go through the cache ([`App::read`]) under a key
//! holding everything that changes the answer: path, sorted query, a
//! non-default `Accept` and `X-GitHub-Api-Version`, and the credential
//! partition ([`Variant`]). The answer is GitHub's own, replayed from the
//! stored [`Response`](crate::daemon::response::Response): status, body
//! bytes and the headers that describe them (content type, every `Link`
//! rel, `ETag`, `Last-Modified`, `X-GitHub-Media-Type`, OAuth scopes, …),
//! plus `X-Cache-Mode`. No header is invented: a `Link` is GitHub's or
//! absent. `X-RateLimit-*` say what the daemon knows of its quota now.
//!
//! **URLs are rewritten per answer**: every absolute URL under the API root
//! in `Link` and in a JSON body is rewritten to this proxy's base as the
//! client reached it (`http://<Host>/github`), so clients that follow
//! `next` or `url` fields stay on the cache; what is stored stays GitHub's
//! bytes. The `Host` used was checked by the guard.
//!
//! **Credentials**: a request with its own GitHub token
//! (`Authorization: token …` / `Bearer …`) is sent with that token and
//! cached in that token's partition (a keyed hash of it, never the token);
//! an answer fetched with one token is never served to another, and such
//! answers are neither written to disk nor shared with peers. Without one,
//! the daemon's token is used. When the daemon has an `mcp_token`, a client
//! presents it as `Authorization` (then the daemon's GitHub token is used)
//! or as `Proxy-Authorization: Bearer …` beside its own GitHub token in
//! `Authorization`.
//!
//! **Client cache control**: `Cache-Control: no-cache` or `max-age=0`
//! revalidates upstream first (a 304 is free); a matching `If-None-Match`
//! is answered 304 from the cache.
//!
//! **Writes** (POST, PUT, PATCH, DELETE, `POST /graphql`) pass through
//! uncached with status, headers and body as GitHub answered (URLs
//! rewritten as above); a successful write under `/repos/<o>/<r>` drops
//! every cached entry of that repository.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::guard::{error_json, token_matches};
use crate::core::Served;
use crate::daemon::response;
use crate::daemon::tools::{api_read, parse_query, Invalidate, Variant};
use crate::daemon::upstream::{is_json_type, ClientToken, ErrorKind, DEFAULT_API_VERSION};
use crate::daemon::{upstream_error, App};
use crate::sync::StdArc as Arc;

/// Answers one `/github/…` request (module docs).
pub async fn proxy(State(app): State<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().strip_prefix("/github").unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    let Some(query) = parse_query(uri.query().unwrap_or("")) else {
        return error_json(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let base = proxy_base(&headers);
    let token = client_token(&app, &headers);
    if method != Method::GET && method != Method::HEAD {
        return write(&app, method, path, &query, &headers, token, body, &base).await;
    }
    let variant = Variant {
        accept: non_default_accept(&headers),
        api_version: headers
            .get("x-github-api-version")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != DEFAULT_API_VERSION)
            .map(str::to_string),
        credential: token,
    };
    let (key, req) = match api_read(path, query, &variant) {
        Ok(kr) => kr,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.message),
    };
    let result = if wants_revalidation(&headers) {
        app.read_revalidated(&key, &req).await
    } else {
        app.read(&key, &req).await
    };
    match result {
        Ok(served) => answer(
            &app,
            &served,
            &headers,
            method == Method::HEAD,
            &base,
            variant.credential.as_ref().map(|t| t.partition.as_str()),
        ),
        Err(e) => failure(&app, &e, &base),
    }
}

/// The proxy's base as this client reached it.
fn proxy_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/github")
}

/// The client's own GitHub token, if it sent one (module docs).
fn client_token(app: &App, headers: &HeaderMap) -> Option<ClientToken> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return None;
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match app.config.mcp_token.0.as_deref() {
        Some(mcp) if token_matches(token, mcp) => None,
        _ => Some(ClientToken {
            secret: token.to_string(),
            partition: app.credential_partition(token),
        }),
    }
}

/// `Accept` unless it names GitHub's default JSON.
fn non_default_accept(headers: &HeaderMap) -> Option<String> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let normalised: String = accept
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let default = normalised.split(',').all(|t| {
        matches!(
            t.split(';').next().unwrap_or_default(),
            "" | "*/*" | "application/json" | "application/vnd.github+json" | "application/vnd.github.v3+json"
        )
    });
    (!default && normalised.len() <= 256).then_some(normalised)
}

fn wants_revalidation(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "max-age=0"))
        || headers
            .get(header::PRAGMA)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// Replaces every absolute URL under the API root (`from`) in `bytes` by
/// the same URL under `to`. A match must end at a URL boundary, so
/// `https://api.github.com.evil.example` is left alone. Returns the same
/// buffer when there is nothing to rewrite.
pub fn rewrite_urls(bytes: &Bytes, from: &str, to: &str) -> Bytes {
    let finder = memchr::memmem::Finder::new(from.as_bytes());
    let boundary = |at: usize| {
        bytes
            .get(at)
            .is_none_or(|b| matches!(b, b'/' | b'"' | b'?' | b'>' | b'#' | b'\\'))
    };
    let mut hits = finder.find_iter(bytes).filter(|&i| boundary(i + from.len())).peekable();
    if hits.peek().is_none() {
        return bytes.clone();
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut last = 0;
    for i in hits {
        out.extend_from_slice(&bytes[last..i]);
        out.extend_from_slice(to.as_bytes());
        last = i + from.len();
    }
    out.extend_from_slice(&bytes[last..]);
    Bytes::from(out)
}

fn is_json(content_type: Option<&[u8]>) -> bool {
    content_type
        .and_then(|t| std::str::from_utf8(t).ok())
        .is_some_and(is_json_type)
}

/// Appends one of GitHub's headers to `out`; when `rewrite` is set, the
/// URLs under the API root (`from`) in it are rewritten to the proxy
/// (`to`). A name or value that is not a valid header is dropped.
fn put_header(out: &mut HeaderMap, name: &str, value: &Bytes, rewrite: bool, from: &str, to: &str) {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        return;
    };
    let value = if rewrite {
        rewrite_urls(value, from, to)
    } else {
        value.clone()
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(value) {
        out.append(name, value);
    }
}

fn cache_mode_header(mode: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-cache-mode"),
        HeaderValue::from_str(mode).unwrap_or(HeaderValue::from_static("error")),
    )
}

/// What the daemon knows now of the quota of the token that asked
/// (`partition`: a client's own; `None`: the daemon's), as GitHub names it.
fn rate_limit_headers(app: &App, partition: Option<&str>, out: &mut HeaderMap) {
    let rate = app.upstream.rate_limit_of(partition);
    if let Some(resource) = rate.resource {
        out.insert("x-ratelimit-resource", HeaderValue::from_static(resource));
    }
    for (name, value) in [
        ("x-ratelimit-limit", rate.limit),
        ("x-ratelimit-remaining", rate.remaining),
        ("x-ratelimit-used", rate.used),
        ("x-ratelimit-reset", rate.reset),
    ] {
        if let Some(v) = value {
            out.insert(HeaderName::from_static(name), HeaderValue::from(v));
        }
    }
}

/// A cached answer, replayed (module docs).
fn answer(
    app: &App,
    served: &Served,
    request: &HeaderMap,
    head: bool,
    base: &str,
    partition: Option<&str>,
) -> Response {
    let entry = &served.entry;
    let stored = response::Response::decode(entry.status, &entry.body);
    let upstream_base = app.upstream.base().as_str();
    let etag = entry.etag.as_ref().map(|t| t.as_str().to_string());
    let not_modified = etag.as_deref().is_some_and(|tag| {
        request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    });
    let mut headers = HeaderMap::new();
    for (name, value) in &stored.headers {
        let rewrite = matches!(name.as_str(), "link" | "location");
        put_header(&mut headers, name, value, rewrite, upstream_base, base);
    }
    if let Some(tag) = etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert(header::ETAG, tag);
    }
    rate_limit_headers(app, partition, &mut headers);
    let (name, value) = cache_mode_header(served.mode.as_str());
    headers.insert(name, value);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK)
    };
    let body = if not_modified {
        Bytes::new()
    } else if is_json(stored.header("content-type")) {
        rewrite_urls(&stored.body, upstream_base, base)
    } else {
        stored.body
    };
    if head {
        let len = body.len();
        let mut r = (status, headers).into_response();
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return r;
    }
    (status, headers, body).into_response()
}

/// A failed read: GitHub's answer when there was one (its status, kept
/// headers and body), else a JSON message.
fn failure(app: &App, e: &crate::core::FetchFailed, base: &str) -> Response {
    let (status, body) = match upstream_error(e) {
        Some(u) if !u.body.is_empty() => (u.http_status(), u.body.clone()),
        Some(u) => (u.http_status(), Bytes::from(json!({"message": u.message}).to_string())),
        None => (502, Bytes::from(json!({"message": e.to_string()}).to_string())),
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    if let Some(u) = upstream_error(e) {
        for (name, value) in &u.headers {
            // A redirect off the API root goes back as it came: its
            // `Location` is not rewritten.
            put_header(
                &mut headers,
                name,
                value,
                name == "link",
                app.upstream.base().as_str(),
                base,
            );
        }
        match u.kind {
            ErrorKind::RateLimited { reset } => {
                headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
                headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
                let wait = reset.saturating_sub(crate::daemon::upstream::unix_now()).max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
            ErrorKind::OverBudget if !headers.contains_key(header::RETRY_AFTER) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let (name, value) = cache_mode_header("error");
    headers.insert(name, value);
    (status, headers, body).into_response()
}

/// Request headers passed through with a write.
const WRITE_HEADERS: [HeaderName; 5] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-github-api-version"),
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// A write, passed through (module docs).
#[allow(clippy::too_many_arguments)]
async fn write(
    app: &App,
    method: Method,
    path: &str,
    query: &[(String, String)],
    request: &HeaderMap,
    token: Option<ClientToken>,
    body: Bytes,
    base: &str,
) -> Response {
    let path = match crate::daemon::api_base::ApiPath::parse(path) {
        Ok(p) => p,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.0),
    };
    let mut pass = HeaderMap::new();
    for name in WRITE_HEADERS {
        for value in request.get_all(&name) {
            pass.append(name.clone(), value.clone());
        }
    }
    let answered = app
        .upstream
        .forward(method, &path, query, pass, token.as_ref(), body)
        .await;
    let forwarded = match answered {
        Ok(f) => f,
        Err(u) => {
            return error_json(
                StatusCode::from_u16(u.http_status()).unwrap_or(StatusCode::BAD_GATEWAY),
                &u.message,
            )
        }
    };
    if (200..300).contains(&forwarded.status) {
        if let Some(repo) = repository_of(path.as_str()) {
            app.invalidate_fleet(&Invalidate::Repository(repo)).await;
        }
    }
    let upstream_base = app.upstream.base().as_str();
    let mut headers = HeaderMap::new();
    for (name, value) in &forwarded.headers {
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "set-cookie"
        ) {
            continue;
        }
        let rewrite = name == header::LINK || name == header::LOCATION;
        let value = Bytes::copy_from_slice(value.as_bytes());
        put_header(&mut headers, name.as_str(), &value, rewrite, upstream_base, base);
    }
    let (name, value) = cache_mode_header("pass");
    headers.insert(name, value);
    let json = is_json(forwarded.headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes));
    let body = if json {
        rewrite_urls(&forwarded.body, upstream_base, base)
    } else {
        forwarded.body
    };
    let status = StatusCode::from_u16(forwarded.status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, headers, Body::from(body)).into_response()
}

/// `o/r` when `path` is under `/repos/o/r`.
fn repository_of(path: &str) -> Option<String> {
    let mut parts = path.strip_prefix("/repos/")?.split('/');
    let (owner, repo) = (parts.next()?, parts.next()?);
    (!owner.is_empty() && !repo.is_empty()).then(|| format!("{owner}/{repo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_at_boundaries_only() {
        let from = "https://api.github.com";
        let to = "http://127.0.0.1:9000/github";
        let body = Bytes::from_static(
            br#"{"url":"https://api.github.com/repos/o/r","x":"https://api.github.com.evil.example/a","y":"https://api.github.com"}"#,
        );
        let out = rewrite_urls(&body, from, to);
        assert_eq!(
            &out[..],
            br#"{"url":"http://127.0.0.1:9000/github/repos/o/r","x":"https://api.github.com.evil.example/a","y":"http://127.0.0.1:9000/github"}"#
        );
        let link = Bytes::from_static(b"<https://api.github.com/x?page=2>; rel=\"next\"");
        assert_eq!(
            &rewrite_urls(&link, from, to)[..],
            b"<http://127.0.0.1:9000/github/x?page=2>; rel=\"next\""
        );
        let untouched = Bytes::from_static(b"[1,2,3]");
        assert_eq!(rewrite_urls(&untouched, from, to).as_ptr(), untouched.as_ptr());
    }

    #[test]
    fn accept_defaults_share_the_default_key() {
        let mut h = HeaderMap::new();
        assert_eq!(non_default_accept(&h), None);
        for default in [
            "application/vnd.github+json",
            "application/vnd.github.v3+json",
            "*/*",
            "application/json",
        ] {
            h.insert(header::ACCEPT, HeaderValue::from_static(default));
            assert_eq!(non_default_accept(&h), None, "{default}");
        }
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.github.diff"));
        assert_eq!(non_default_accept(&h).as_deref(), Some("application/vnd.github.diff"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.github.raw+json"),
        );
        assert_eq!(
            non_default_accept(&h).as_deref(),
            Some("application/vnd.github.raw+json")
        );
    }

    #[test]
    fn repositories_of_write_paths() {
        assert_eq!(repository_of("/repos/o/r/issues").as_deref(), Some("o/r"));
        assert_eq!(repository_of("/repos/o/r").as_deref(), Some("o/r"));
        assert_eq!(repository_of("/repos/o"), None);
        assert_eq!(repository_of("/graphql"), None);
    }
}
