//! `/github/<path>`: an HTTP cache of GitHub for any GitHub client.
//!
//! **Reads** (GET, HEAD) go through the cache ([`App::read`]) under a key
//! holding everything that changes the answer: path, sorted query, a
//! non-default `Accept` and `X-GitHub-Api-Version`, and the credential
//! partition ([`Variant`]). An `X-GitHub-Api-Version` that is not a date
//! or an `Accept` over 256 bytes is refused (400) rather than forwarded or
//! keyed, so no header mints unbounded keys. The answer is GitHub's own, replayed from the
//! stored [`Response`](crate::daemon::response::Response): status, body
//! bytes and the headers that describe them (content type, every `Link`
//! rel, `ETag`, `Last-Modified`, `X-GitHub-Media-Type`, OAuth scopes, …),
//! plus `X-Cache-Mode`. No header is invented: a `Link` is GitHub's or
//! absent. `X-RateLimit-*` say what the daemon knows of its quota now.
//!
//! **URLs are rewritten per `Host`**: every absolute URL under the API
//! root in `Link` and in a JSON body is rewritten to this proxy's base as
//! the client reached it (`http://<Host>/github`), so clients that follow
//! `next` or `url` fields stay on the cache; what is stored stays GitHub's
//! bytes. The `Host` used was checked by the guard. The rewritten answer
//! of an entry is built once per `Host` ([`replay`](super::replay)).
//!
//! **Reads skip the router**: the accept loop hands GET and HEAD without a
//! body to [`read_direct`], which applies the router's checks for
//! `/github` itself; everything else comes through the router to
//! [`proxy`].
//!
//! **Credentials**: a request with its own GitHub token
//! (`Authorization: token …` / `Bearer …` / `Basic` with the token as
//! password) is sent with that token and
//! cached in that token's partition (a keyed hash of it, never the token);
//! an answer fetched with one token is never served to another, and such
//! answers are neither written to disk nor shared with peers. Without one,
//! the daemon's token is used; an `Authorization` that cannot be read is
//! refused (401), never taken as "no token". When the daemon has an `mcp_token`, a client
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

use std::net::IpAddr;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::guard::{error_json, has_body, refuse_client, refuse_host, token_matches};
use super::replay::{base_of, is_json, put_header, rewrite_urls};
use crate::core::Served;
use crate::daemon::tools::{api_read, parse_query, Invalidate, Variant};
use crate::daemon::upstream::{ClientToken, ErrorKind, DEFAULT_API_VERSION};
use crate::daemon::{budget, upstream_error, App};
use crate::sync::StdArc as Arc;

/// Answers one `/github/…` request (module docs), as the router hands it
/// over (after the guard has read and bounded its body).
pub async fn proxy(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, app.config.max_body_bytes).await {
        Ok(body) => body,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &format!("cannot read the request body: {e}")),
    };
    handle(&app, &parts.method, &parts.uri, &parts.headers, body).await
}

/// Is `request` one the accept loop answers with [`read_direct`] rather
/// than through the router: a GET or HEAD of `/github` or `/github/<path>`
/// without a body (the proxy's cached reads, its hot path).
pub fn is_direct_read<B>(request: &axum::http::Request<B>) -> bool {
    let path = request.uri().path();
    matches!(*request.method(), Method::GET | Method::HEAD)
        && (path == "/github" || (path.len() > "/github/".len() && path.starts_with("/github/")))
        && !has_body(request.headers())
}

/// A read that [`is_direct_read`], answered without the router's layers
/// but with what they do for `/github`, in their order: the `Host` check,
/// then `Origin` and the token, the handler inside the upstream budget
/// scope of the client's address, `X-Content-Type-Options: nosniff`, and a
/// HEAD answer's body dropped after its length is set.
pub async fn read_direct(app: Arc<App>, request: axum::http::request::Parts, client: IpAddr) -> Response {
    let refused = refuse_host(&app, &request.headers).or_else(|| refuse_client(&app, &request.headers));
    let mut response = match refused {
        Some(refusal) => refusal,
        None => {
            let units = app.config.limits.max_upstream_per_request;
            let handled = handle(&app, &request.method, &request.uri, &request.headers, Bytes::new());
            budget::scope(units, Some(client), handled).await
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if request.method == Method::HEAD {
        if !headers.contains_key(header::CONTENT_LENGTH) {
            if let Some(len) = response.body().size_hint().exact() {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
        *response.body_mut() = Body::empty();
    }
    response
}

/// Answers one `/github/…` request whose body (if any) is `body`.
async fn handle(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response {
    let path = uri.path().strip_prefix("/github").unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    let Some(query) = parse_query(uri.query().unwrap_or("")) else {
        return error_json(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let host = proxy_host(headers);
    let token = match client_token(app, headers) {
        Ok(t) => t,
        Err(why) => return error_json(StatusCode::UNAUTHORIZED, &format!("Bad credentials: {why}")),
    };
    if method != Method::GET && method != Method::HEAD {
        // Boxed, so that a read's future is not as large as a write's.
        let base = base_of(host);
        return Box::pin(write(app, method.clone(), path, &query, headers, token, body, &base)).await;
    }
    let variant = match variant_of(headers, token) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let (key, req) = match api_read(path, query, &variant) {
        Ok(kr) => kr,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.message),
    };
    let result = if wants_revalidation(headers) {
        app.read_revalidated(&key, &req).await
    } else {
        app.read(&key, &req).await
    };
    match result {
        Ok(served) => answer(
            app,
            &served,
            headers,
            method == Method::HEAD,
            host,
            variant.credential.as_ref().map(|t| t.partition.as_str()),
        ),
        Err(e) => failure(app, &e, &base_of(host)),
    }
}

/// The `Host` this client reached the proxy at (checked by the guard).
fn proxy_host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
}

/// The client's own GitHub token, if it sent one (module docs): from
/// `Authorization: token T`, `Bearer T` or `Basic base64(user:T)` (GitHub
/// takes a token as the Basic password, or as the user name with the
/// password `x-oauth-basic` or none). The MCP token is not a GitHub token:
/// presented here it means "read with the daemon's". Any other value is
/// refused, never read as "no token": a client that sent credentials must
/// not silently get the daemon's view instead of its own.
fn client_token(app: &App, headers: &HeaderMap) -> Result<Option<ClientToken>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| "the Authorization header is not text")?;
    let (scheme, credential) = value
        .trim()
        .split_once(' ')
        .ok_or("no scheme in the Authorization header")?;
    let credential = credential.trim();
    let token = if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        credential.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        basic_token(credential)?
    } else {
        return Err("the Authorization scheme is not token, Bearer or Basic");
    };
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token is empty, too long or not printable ASCII");
    }
    Ok(match app.config.mcp_token.0.as_deref() {
        Some(mcp) if token_matches(&token, mcp) => None,
        _ => Some(ClientToken {
            partition: app.credential_partition(&token),
            secret: token,
        }),
    })
}

/// Longer than any GitHub token (fine-grained ones are 93 characters).
const MAX_TOKEN_BYTES: usize = 1024;

/// The token in a Basic credential (see [`client_token`]).
fn basic_token(credential: &str) -> Result<String, &'static str> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential)
        .map_err(|_| "the Basic credential is not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "the Basic credential is not UTF-8")?;
    let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    Ok(match password {
        "" | "x-oauth-basic" => user,
        password => password,
    }
    .to_string())
}

/// Longest `Accept` the proxy keys on; GitHub's media types are far shorter.
const MAX_ACCEPT_BYTES: usize = 256;

/// What, besides path and query, selects GitHub's answer (the key's
/// [`Variant`]): checked here so that a hostile header neither reaches
/// GitHub nor mints unbounded keys. An `X-GitHub-Api-Version` that is not
/// a date (`YYYY-MM-DD`, GitHub's only form) and an over-long or non-text
/// `Accept` are refused with 400.
#[allow(clippy::result_large_err)]
fn variant_of(headers: &HeaderMap, credential: Option<ClientToken>) -> Result<Variant, Response> {
    let api_version = match headers.get("x-github-api-version") {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default().trim();
            if !is_api_version(v) {
                return Err(error_json(
                    StatusCode::BAD_REQUEST,
                    "X-GitHub-Api-Version must be a date, YYYY-MM-DD (e.g. 2022-11-28)",
                ));
            }
            (v != DEFAULT_API_VERSION).then(|| v.to_string())
        }
    };
    let accept = match headers.get(header::ACCEPT) {
        None => None,
        Some(v) => {
            let Ok(text) = v.to_str() else {
                return Err(error_json(StatusCode::BAD_REQUEST, "the Accept header is not text"));
            };
            if text.len() > MAX_ACCEPT_BYTES {
                return Err(error_json(
                    StatusCode::BAD_REQUEST,
                    &format!("the Accept header is over {MAX_ACCEPT_BYTES} bytes"),
                ));
            }
            non_default_accept(text)
        }
    };
    Ok(Variant {
        accept,
        api_version,
        credential,
    })
}

/// `YYYY-MM-DD`, digits only.
fn is_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// `accept` normalised, unless it names GitHub's default JSON.
fn non_default_accept(accept: &str) -> Option<String> {
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
    (!default).then_some(normalised)
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

const X_CACHE_MODE: HeaderName = HeaderName::from_static("x-cache-mode");

fn cache_mode_header(mode: &'static str) -> (HeaderName, HeaderValue) {
    (X_CACHE_MODE, HeaderValue::from_static(mode))
}

/// The quota's figures as GitHub names them, in the order of
/// [`RateLimitSnapshot`](crate::daemon::upstream::RateLimitSnapshot)'s
/// fields.
const RATE_LIMIT_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-used"),
    HeaderName::from_static("x-ratelimit-reset"),
];

/// What the daemon knows now of the quota of the token that asked
/// (`partition`: a client's own; `None`: the daemon's), as GitHub names it;
/// appended, as `out` holds no `X-RateLimit-*` (a replay never does).
fn rate_limit_headers(app: &App, partition: Option<&str>, out: &mut HeaderMap) {
    let rate = app.upstream.rate_limit_of(partition);
    if let Some(resource) = rate.resource {
        out.append("x-ratelimit-resource", HeaderValue::from_static(resource));
    }
    let figures = [rate.limit, rate.remaining, rate.used, rate.reset];
    for (slot, (name, value)) in RATE_LIMIT_HEADERS.into_iter().zip(figures).enumerate() {
        if let Some(v) = value {
            out.append(name, figure_value(slot, v));
        }
    }
}

/// `v` as a header value. The figures change only when GitHub answers, so
/// each thread keeps the value it made last for each of the four and
/// hands out a shared copy while the figure stays the same.
fn figure_value(slot: usize, v: u64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<[Option<(u64, HeaderValue)>; 4]> =
            const { std::cell::RefCell::new([const { None }; 4]) };
    }
    LAST.with_borrow_mut(|last| match &last[slot] {
        Some((figure, value)) if *figure == v => value.clone(),
        _ => {
            let value = HeaderValue::from(v);
            last[slot] = Some((v, value.clone()));
            value
        }
    })
}

/// A response of `status` with exactly `headers`.
fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A cached answer, replayed (module docs): the entry's [`Replay`] for
/// this `Host`, plus what is this request's own.
fn answer(
    app: &App,
    served: &Served,
    request: &HeaderMap,
    head: bool,
    host: &str,
    partition: Option<&str>,
) -> Response {
    let entry = &served.entry;
    let replay = app.replays.get(entry, app.upstream.base().as_str(), host);
    let not_modified = entry.etag.as_ref().is_some_and(|tag| {
        request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag.as_str() || t.trim() == "*"))
    });
    // A copy of the block as it is (names already hashed and placed), with
    // room in its index for this answer's own headers.
    let mut headers = replay.headers.clone();
    rate_limit_headers(app, partition, &mut headers);
    let (name, value) = cache_mode_header(served.mode.as_str());
    headers.append(name, value);
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (replay.status, replay.body.clone())
    };
    if head {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        return with_headers(status, headers, Body::empty());
    }
    // As axum answers a `Bytes` body that names no type.
    if !replay.typed {
        headers.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    with_headers(status, headers, Body::from(body))
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

    fn variant(pairs: &[(&'static str, &str)]) -> Result<Variant, StatusCode> {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        variant_of(&h, None).map_err(|r| r.status())
    }

    #[test]
    fn accept_defaults_share_the_default_key() {
        assert_eq!(variant(&[]).unwrap().accept, None);
        for default in [
            "application/vnd.github+json",
            "application/vnd.github.v3+json",
            "*/*",
            "application/json",
            "application/vnd.github+json, */*;q=0.8",
        ] {
            assert_eq!(variant(&[("accept", default)]).unwrap().accept, None, "{default}");
        }
        for (sent, keyed) in [
            ("application/vnd.github.diff", "application/vnd.github.diff"),
            ("Application/VND.github.raw+json", "application/vnd.github.raw+json"),
        ] {
            assert_eq!(variant(&[("accept", sent)]).unwrap().accept.as_deref(), Some(keyed));
        }
    }

    #[test]
    fn hostile_variant_headers_are_refused_not_keyed() {
        let long = format!("application/vnd.github.{}", "x".repeat(300));
        assert_eq!(variant(&[("accept", &long)]).unwrap_err(), StatusCode::BAD_REQUEST);
        for bad in [
            "../../etc",
            "2022-11-28x",
            "2022-1-288",
            "",
            "20221128",
            "2022-11-28 x",
            "yyyy-mm-dd",
        ] {
            assert_eq!(
                variant(&[("x-github-api-version", bad)]).unwrap_err(),
                StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
        }
        assert_eq!(
            variant(&[("x-github-api-version", "2022-11-28")]).unwrap().api_version,
            None
        );
        assert_eq!(
            variant(&[("x-github-api-version", " 2026-03-10 ")])
                .unwrap()
                .api_version
                .as_deref(),
            Some("2026-03-10")
        );
    }

    #[test]
    fn basic_credentials_carry_the_token() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(basic_token(&b64("octocat:ghp_secret")).unwrap(), "ghp_secret");
        assert_eq!(basic_token(&b64("ghp_secret:x-oauth-basic")).unwrap(), "ghp_secret");
        assert_eq!(basic_token(&b64("ghp_secret")).unwrap(), "ghp_secret");
        assert!(basic_token("%%%").is_err());
    }

    #[test]
    fn repositories_of_write_paths() {
        assert_eq!(repository_of("/repos/o/r/issues").as_deref(), Some("o/r"));
        assert_eq!(repository_of("/repos/o/r").as_deref(), Some("o/r"));
        assert_eq!(repository_of("/repos/o"), None);
        assert_eq!(repository_of("/graphql"), None);
    }
}
