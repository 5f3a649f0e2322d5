//! The checks a request passes before a handler sees it.
//!
//! | check | where | refusal |
//! | --- | --- | --- |
//! | `Host` | every route | 403 `host not allowed` |
//! | `Origin` | `/mcp`, `/jsonrpc`, `/github` | 403 `origin not allowed` |
//! | bearer token (`mcp_token`) | the same, and `/metrics` with `metrics_require_token` | 401 |
//! | body size (`max_body_bytes`) and time (`http_body_timeout_ms`) | the same | 413, 408 |
//!
//! **Host** (against DNS rebinding: a web page whose name now resolves to
//! 127.0.0.1 sends its own name as `Host`): when the daemon listens on
//! loopback, only the names of this machine (`localhost`, `127.0.0.1`,
//! `[::1]`, any port) and `allowed_hosts` are accepted; beyond loopback,
//! `allowed_hosts` when set, else any well-formed `host[:port]` (the token
//! guards it then). A `Host` that is not a plain `host[:port]` is refused
//! everywhere, so the proxy can put the accepted one in the links it writes.
//!
//! **Token**: compared through SHA-256 digests of both sides, in constant
//! time over the digest, so neither its bytes nor its length leak through
//! timing.
//!
//! Each request of `/jsonrpc` and `/github` runs inside one upstream
//! [`budget`](crate::daemon::budget) scope of `max_upstream_per_request`.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::daemon::metrics::Refusal;
use crate::daemon::{budget, App};
use crate::sync::StdArc as Arc;

/// The `Host` rule (module docs).
#[derive(Clone, Debug)]
pub struct HostPolicy {
    loopback_listener: bool,
    allowed: Vec<String>,
}

impl HostPolicy {
    /// The rule for `app`'s listener and `allowed_hosts`.
    pub fn new(loopback_listener: bool, allowed: &[String]) -> HostPolicy {
        HostPolicy {
            loopback_listener,
            allowed: allowed.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Is this `Host` header value acceptable?
    pub fn allows(&self, host: &str) -> bool {
        (self.loopback_listener && is_plain_loopback(host)) || self.allows_parsed(host)
    }

    /// [`HostPolicy::allows`] without its shortcut for a loopback name:
    /// the value parsed as an authority, then its name compared.
    fn allows_parsed(&self, host: &str) -> bool {
        if !crate::daemon::config::valid_authority(host) {
            return false;
        }
        // The name without its port; compared without case (the listed
        // names are lowercase), with no copy in the usual case.
        let name: std::borrow::Cow<str> = match host.strip_prefix('[') {
            Some(v6) => match v6.find(']') {
                Some(end) => host[..end + 2].into(),
                None => format!("[{v6}]").into(),
            },
            None => host.split(':').next().unwrap_or_default().into(),
        };
        let listed = self
            .allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(&name));
        if self.loopback_listener {
            listed
                || ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&name))
        } else {
            listed || self.allowed.is_empty()
        }
    }
}

/// Is `host` `localhost`, `127.0.0.1` or `[::1]` (any case), alone or
/// with a port of 1 to 5 digits? What a local client sends as `Host`,
/// recognised without parsing: each such value is a well-formed authority
/// naming this machine, so on a loopback listener the full check accepts
/// it too; any other value takes the full check.
fn is_plain_loopback(host: &str) -> bool {
    let host = host.as_bytes();
    [&b"127.0.0.1"[..], b"localhost", b"[::1]"].iter().any(|name| {
        let Some(rest) = host
            .get(..name.len())
            .filter(|h| h.eq_ignore_ascii_case(name))
            .map(|_| &host[name.len()..])
        else {
            return false;
        };
        match rest {
            [] => true,
            [b':', port @ ..] => (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
    })
}

/// A JSON error answer `{"message": …}`.
pub fn error_json(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"message": message}).to_string(),
    )
        .into_response()
}

/// Outer layer, every route: the `Host` check.
pub async fn check_host(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refuse_host(&app, request.headers()) {
        return refusal;
    }
    next.run(request).await
}

/// The `Host` check alone: `None` when the request may pass.
pub fn refuse_host(app: &App, headers: &HeaderMap) -> Option<Response> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if host.is_some_and(|h| app.hosts.allows(h)) {
        return None;
    }
    app.metrics.refused(Refusal::Host);
    Some(error_json(StatusCode::FORBIDDEN, "host not allowed"))
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

/// Is `origin` acceptable: a loopback origin, or one of `allowed`?
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    is_loopback_origin(origin) || allowed.iter().any(|a| a == origin.trim_end_matches('/'))
}

/// Does `given` equal `expected`? Constant time in both (module docs).
pub fn token_matches(given: &str, expected: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token check alone: `None` when the request may pass. The token
/// may come as `Authorization` or, so that a proxy client can send its
/// own GitHub token in `Authorization`, as `Proxy-Authorization`.
fn check_token(app: &App, headers: &HeaderMap) -> Option<Response> {
    let token = app.config.mcp_token.0.as_deref()?;
    let presented = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
            .map(str::trim)
            .is_some_and(|g| token_matches(g, token))
    };
    if presented(header::AUTHORIZATION) || presented(header::PROXY_AUTHORIZATION) {
        return None;
    }
    app.metrics.refused(Refusal::Token);
    let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// `/metrics`: the token when `metrics_require_token` is set.
pub async fn metrics_guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.config.metrics_require_token {
        if let Some(refusal) = check_token(&app, request.headers()) {
            return refusal;
        }
    }
    next.run(request).await
}

/// `/mcp`, `/jsonrpc`, `/github`: Origin, token, then the body read whole
/// within its size and time bounds, then the handler inside an upstream
/// budget scope.
pub async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(refusal) = refuse_client(&app, request.headers()) {
        return refusal;
    }
    let request = match read_body(&app, request).await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let client = request.extensions().get::<super::serve::ClientAddr>().map(|c| c.0.ip());
    budget::scope(app.config.limits.max_upstream_per_request, client, next.run(request)).await
}

/// The `Origin` and token checks of [`guard`]: `None` when the request
/// may pass.
pub fn refuse_client(app: &App, headers: &HeaderMap) -> Option<Response> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &app.config.allowed_origins));
        if !ok {
            app.metrics.refused(Refusal::Origin);
            return Some(error_json(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    check_token(app, headers)
}

/// Does the request come with a body (which [`guard`] reads within its
/// bounds before the handler runs)?
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads the body whole (when there is one) within `max_body_bytes` and
/// `http_body_timeout_ms`, so a slow or endless body cannot hold a
/// handler.
async fn read_body(app: &App, request: Request) -> Result<Request, Response> {
    let headers = request.headers();
    if !has_body(headers) {
        return Ok(request);
    }
    let limit = app.config.max_body_bytes;
    let timeout = app.config.limits.body_timeout;
    let (parts, body) = request.into_parts();
    let why = match collect_bounded(&parts.headers, body, limit, timeout).await {
        Ok(bytes) => return Ok(Request::from_parts(parts, Body::from(bytes))),
        Err(why) => why,
    };
    // The rest of the body stays unread, so the connection closes after
    // the refusal; `Connection: close` says so, lest a client send its
    // next request on it.
    let mut refusal = match why {
        BodyError::TooLarge => {
            app.metrics.refused(Refusal::BodyTooLarge);
            error_json(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {limit} bytes (max_body_bytes)"),
            )
        }
        BodyError::Timeout => {
            app.metrics.refused(Refusal::BodyTimeout);
            error_json(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body not received within {} ms (http_body_timeout_ms)",
                    timeout.as_millis()
                ),
            )
        }
        BodyError::Read(e) => error_json(StatusCode::BAD_REQUEST, &format!("cannot read the request body: {e}")),
    };
    refusal
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Err(refusal)
}

/// Why [`collect_bounded`] gave up.
#[derive(Debug)]
pub enum BodyError {
    /// Declared (`Content-Length`) or streamed past the limit; in the
    /// first case nothing was read.
    TooLarge,
    /// Not complete within the time bound.
    Timeout,
    /// The connection failed mid-body.
    Read(String),
}

/// Reads `body` whole, refusing a declared length over `limit` before
/// reading anything and cutting a streamed one at `limit`, within
/// `timeout`.
pub async fn collect_bounded(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
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

    #[test]
    fn hosts_on_loopback() {
        let p = HostPolicy::new(true, &["cache.internal".to_string()]);
        for ok in [
            "localhost:9000",
            "127.0.0.1:9000",
            "[::1]:9000",
            "LOCALHOST",
            "cache.internal:1",
            "127.0.0.1",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.com:9000",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "evil.example@x",
            "localhost@evil",
            "localhost/x",
            "localhost:9000 x",
            "",
            "[::2]:9000",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// The shortcut for loopback names never accepts what the full
        /// check refuses (nor the reverse, on a loopback listener).
        #[test]
        fn the_loopback_shortcut_answers_as_the_full_check(
            name in "(localhost|LocalHost|127\\.0\\.0\\.1|127\\.0\\.0\\.10|\\[::1\\]|\\[::2\\]|cache\\.internal)?",
            rest in "(:[0-9]{0,6})?[:0-9a-z.@/\\[\\]% ]{0,3}",
        ) {
            let host = format!("{name}{rest}");
            for policy in [HostPolicy::new(true, &[]), HostPolicy::new(true, &["cache.internal".to_string()])] {
                proptest::prop_assert_eq!(policy.allows(&host), policy.allows_parsed(&host), "{:?}", host);
            }
        }
    }

    #[test]
    fn hosts_beyond_loopback() {
        let open = HostPolicy::new(false, &[]);
        assert!(open.allows("cache.corp:9000"));
        assert!(!open.allows("evil.example@x"));
        assert!(!open.allows("a b"));
        let listed = HostPolicy::new(false, &["cache.corp".to_string()]);
        assert!(listed.allows("cache.corp:9000"));
        assert!(!listed.allows("localhost:9000"));
    }

    #[test]
    fn tokens() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("", "s3cret"));
        assert!(!token_matches("s3cret ", "s3cret"));
    }
}
