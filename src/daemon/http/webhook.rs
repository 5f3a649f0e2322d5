//! `POST /webhook`: GitHub's webhook deliveries, turned into invalidations.
//!
//! Outside the token guard (GitHub cannot send the MCP bearer token): the
//! `X-Hub-Signature-256` HMAC is this route's authentication
//! ([`webhook`](crate::daemon::webhook)). The `Host` check still applies,
//! so a daemon reached through a public name needs that name in
//! `allowed_hosts`.
//!
//! | request | answer | `result` label |
//! | --- | --- | --- |
//! | no secret configured | 404, how to turn it on | `disabled` |
//! | body over 25 MB (declared or streamed) | 413, not read whole | `too_large` |
//! | body not received within `http_body_timeout_ms` | 408 | `malformed` |
//! | signature missing or wrong | 401 | `bad_signature` |
//! | no `X-GitHub-Event`, a bad `X-GitHub-Delivery`, or a payload the table cannot read | 400, naming the field | `malformed` |
//! | a delivery id seen before | 200 `{"duplicate": true}`, nothing applied | `duplicate` |
//! | an event not in the table | 202 `{"ignored": true}` | `ignored` |
//! | a known event | 200, what was invalidated | `accepted` |
//!
//! Checks run in that order: nothing is parsed before the signature holds.
//! Every invalidation goes through [`App::invalidate_fleet`]: applied here,
//! then published to the fleet. A payload sent as
//! `application/x-www-form-urlencoded` (a hook's other content type) is
//! read from its `payload` field; the signature covers the raw body.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::guard::{collect_bounded, error_json, BodyError};
use crate::daemon::key_path::scopes_text;
use crate::daemon::tools::Invalidate;
use crate::daemon::webhook::events::{self, Malformed, Mapped};
use crate::daemon::webhook::{Outcome, MAX_DELIVERY_BYTES, MAX_DELIVERY_ID_LEN};
use crate::daemon::App;
use crate::sync::StdArc as Arc;

/// Answers one delivery (module docs).
pub async fn webhook(State(app): State<Arc<App>>, request: Request) -> Response {
    let (outcome, response) = deliver(&app, request).await;
    app.metrics.webhook(outcome);
    response
}

async fn deliver(app: &App, request: Request) -> (Outcome, Response) {
    let Some(hook) = &app.webhook else {
        return (
            Outcome::Disabled,
            error_json(
                StatusCode::NOT_FOUND,
                "webhooks are off: set webhook_secret_file (--webhook-secret-file FILE) or GHCACHE_WEBHOOK_SECRET \
                 to the secret of the GitHub webhook to turn POST /webhook on (docs/webhooks.md)",
            ),
        );
    };
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let timeout = app.config.limits.body_timeout;
    let body = match collect_bounded(headers, body, MAX_DELIVERY_BYTES, timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            return (
                Outcome::TooLarge,
                error_json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("webhook body over {MAX_DELIVERY_BYTES} bytes (GitHub's cap)"),
                ),
            )
        }
        Err(BodyError::Timeout) => {
            return (
                Outcome::Malformed,
                error_json(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "webhook body not received within {} ms (http_body_timeout_ms)",
                        timeout.as_millis()
                    ),
                ),
            )
        }
        Err(BodyError::Read(e)) => {
            return (
                Outcome::Malformed,
                error_json(StatusCode::BAD_REQUEST, &format!("cannot read the webhook body: {e}")),
            )
        }
    };
    let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    if !hook.verify(signature, &body) {
        tracing::debug!(present = signature.is_some(), "webhook signature refused");
        return (
            Outcome::BadSignature,
            error_json(
                StatusCode::UNAUTHORIZED,
                "missing or wrong X-Hub-Signature-256 (sha256=<hex HMAC-SHA256 of the body under the webhook secret>)",
            ),
        );
    }
    let malformed = |message: &str| (Outcome::Malformed, error_json(StatusCode::BAD_REQUEST, message));
    let Some(event) = header_text(headers, "x-github-event").filter(|e| !e.is_empty()) else {
        return malformed("missing X-GitHub-Event header");
    };
    let delivery = match headers.get("x-github-delivery").map(|v| v.to_str().map(str::trim)) {
        None => None,
        Some(Ok(id)) if !id.is_empty() && id.len() <= MAX_DELIVERY_ID_LEN => Some(id),
        Some(_) => {
            return malformed(&format!(
                "X-GitHub-Delivery must be 1 to {MAX_DELIVERY_ID_LEN} visible characters"
            ))
        }
    };
    if let Some(id) = delivery {
        if !hook.deliveries.claim(id) {
            let answer = json!({"duplicate": true, "delivery": id, "event": event});
            return (Outcome::Duplicate, (StatusCode::OK, json_body(&answer)).into_response());
        }
    }
    let payload = match form_payload(headers, &body) {
        Ok(p) => p,
        Err(message) => {
            if let Some(id) = delivery {
                hook.deliveries.release(id);
            }
            return malformed(&message);
        }
    };
    let payload = payload.as_deref().unwrap_or(&body);
    match events::map(event, payload) {
        Ok(Mapped::Ignored) => {
            record(app, event, delivery, "not in the event table, nothing invalidated");
            let answer = json!({"ignored": true, "event": event, "delivery": delivery,
                "message": "event not in the table (docs/webhooks.md): nothing invalidated"});
            (
                Outcome::Ignored,
                (StatusCode::ACCEPTED, json_body(&answer)).into_response(),
            )
        }
        Err(Malformed(message)) => {
            if let Some(id) = delivery {
                hook.deliveries.release(id);
            }
            malformed(&message)
        }
        Ok(Mapped::Known(scopes)) => {
            // Fleet-wide, all scopes at once: the answer waits for the
            // members' acks at most once (`p2p::invalidation::ACK_WAIT`).
            let reports = futures::future::join_all(scopes.iter().map(|what| app.invalidate_fleet(what))).await;
            let mut total = 0;
            let applied: Vec<Value> = scopes
                .iter()
                .zip(reports)
                .map(|(what, (dropped, fleet))| {
                    total += dropped;
                    let mut v = describe(what);
                    v["dropped"] = json!(dropped);
                    if let Some(Ok(r)) = fleet {
                        v["members"] = json!(r.members);
                        v["applied"] = json!(r.applied);
                        v["missing"] = json!(r.missing.iter().map(|p| p.to_string()).collect::<Vec<_>>());
                    }
                    v
                })
                .collect();
            tracing::debug!(event, delivery, dropped = total, "webhook applied");
            record(app, event, delivery, &format!("{total} entries dropped"));
            let answer = json!({"event": event, "delivery": delivery, "invalidated": applied, "dropped": total});
            (Outcome::Accepted, (StatusCode::OK, json_body(&answer)).into_response())
        }
    }
}

/// A verified delivery, new and applied (or ignored), in the dashboard's
/// activity log; its invalidations are there too, through `App::invalidate`.
fn record(app: &App, event: &str, delivery: Option<&str>, outcome: &str) {
    let id = delivery.unwrap_or("no delivery id");
    app.activity.record(
        crate::daemon::activity::Kind::Webhook,
        format!("{event} ({id}): {outcome}"),
    );
}

/// One invalidation as JSON, in the words of `gh_invalidate_cache`.
fn describe(what: &Invalidate) -> Value {
    match what {
        Invalidate::All => json!({"pattern": "*"}),
        Invalidate::Prefix(p) => json!({"pattern": p}),
        Invalidate::Repository(r) => json!({"repo": r}),
        Invalidate::Paths(scopes) => json!({"paths": scopes_text(scopes)}),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The `payload` field of a form-encoded delivery; `None` for JSON.
fn form_payload(headers: &HeaderMap, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let form = header_text(headers, "content-type")
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Ok(None);
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| Some(v.into_owned().into_bytes()))
        .ok_or_else(|| "form-encoded webhook body has no `payload` field".to_string())
}

fn json_body(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}
