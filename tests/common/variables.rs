//! The fake GitHub's repository Actions variables, as GitHub documents
//! them (REST "Actions / Variables", API version 2022-11-28):
//!
//! - `GET /repos/{o}/{r}/actions/variables?per_page=N&page=P` → 200
//!   `{"total_count", "variables": [{name, value, created_at, updated_at}]}`
//!   (`per_page` at most 30, default 10), with an ETag; a matching
//!   `If-None-Match` → 304 with the ETag and no body.
//! - `GET …/variables/{name}` → 200 the variable, or 404.
//! - `POST …/variables` `{name, value}` → 201 `{}`; 409 when it exists; 422
//!   for a name GitHub refuses (not `[A-Za-z0-9_]`, starting with a digit
//!   or `GITHUB_`). Names are stored upper-case.
//! - `PATCH …/variables/{name}` `{name?, value?}` → 204, or 404.
//! - `DELETE …/variables/{name}` → 204, or 404.
//! - Without `Authorization: Bearer test-token` → 401.
//!
//! Every write sets `updated_at` to the fake's clock (whole seconds, UTC);
//! [`Variables::insert_aged`] plants an entry written some time ago.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Variable {
    pub value: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Per repository (`o/r`), name → variable.
#[derive(Default)]
pub struct Variables {
    pub repos: Mutex<BTreeMap<String, BTreeMap<String, Variable>>>,
    /// List requests that carried `If-None-Match`, and those answered 304.
    pub conditional: AtomicU64,
    pub not_modified: AtomicU64,
    /// Writes (POST, PATCH, DELETE) answered with a 2xx.
    pub writes: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Unix seconds as RFC 3339 (`2026-12-02T11:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.to_ascii_uppercase().starts_with("GITHUB_")
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, json!({"message": text}).to_string()).into_response()
}

impl Variables {
    /// Plants `name = value` in `repo`, last written `age` ago.
    pub fn insert_aged(&self, repo: &str, name: &str, value: &str, age: Duration) {
        let at = now() - age.as_secs();
        self.repos.lock().unwrap().entry(repo.into()).or_default().insert(
            name.to_ascii_uppercase(),
            Variable {
                value: value.into(),
                created_at: at,
                updated_at: at,
            },
        );
    }

    /// The variables of `repo` now.
    pub fn of(&self, repo: &str) -> BTreeMap<String, Variable> {
        self.repos.lock().unwrap().get(repo).cloned().unwrap_or_default()
    }

    /// Answers `…/actions/variables[/{name}]` of `repo`, or None when the
    /// path is not one of these endpoints.
    pub fn serve(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let rest = path.strip_prefix("/repos/")?;
        let (repo, tail) = match rest.splitn(3, '/').collect::<Vec<_>>()[..] {
            [o, r, tail] => (format!("{o}/{r}"), tail),
            _ => return None,
        };
        let tail = tail.strip_prefix("actions/variables")?;
        let name = match tail {
            "" => None,
            t => Some(t.strip_prefix('/').filter(|n| !n.contains('/'))?.to_ascii_uppercase()),
        };
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-token") {
            return Some(message(StatusCode::UNAUTHORIZED, "Requires authentication"));
        }
        let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut repos = self.repos.lock().unwrap();
        let vars = repos.entry(repo).or_default();
        let response = match (method.as_str(), name) {
            ("GET", None) => {
                let param = |k: &str| {
                    query
                        .split('&')
                        .find_map(|p| p.strip_prefix(&format!("{k}=")))
                        .and_then(|v| v.parse::<usize>().ok())
                };
                let per_page = param("per_page").unwrap_or(10).clamp(1, 30);
                let page = param("page").unwrap_or(1).max(1);
                let listed: Vec<Value> = vars
                    .iter()
                    .skip((page - 1) * per_page)
                    .take(per_page)
                    .map(|(name, v)| {
                        json!({"name": name, "value": v.value, "created_at": rfc3339(v.created_at),
                               "updated_at": rfc3339(v.updated_at)})
                    })
                    .collect();
                let body = json!({"total_count": vars.len(), "variables": listed}).to_string();
                let etag = format!("W/\"{:016x}\"", fnv(body.as_bytes()));
                if let Some(inm) = headers.get("if-none-match") {
                    self.conditional.fetch_add(1, Ordering::SeqCst);
                    if inm.to_str().ok() == Some(etag.as_str()) {
                        self.not_modified.fetch_add(1, Ordering::SeqCst);
                        let mut r = StatusCode::NOT_MODIFIED.into_response();
                        r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
                        return Some(r);
                    }
                }
                let mut r = (StatusCode::OK, body).into_response();
                r.headers_mut().insert("etag", HeaderValue::from_str(&etag).unwrap());
                r
            }
            ("GET", Some(name)) => match vars.get(&name) {
                Some(v) => (
                    StatusCode::OK,
                    json!({"name": name, "value": v.value, "created_at": rfc3339(v.created_at),
                           "updated_at": rfc3339(v.updated_at)})
                    .to_string(),
                )
                    .into_response(),
                None => message(StatusCode::NOT_FOUND, "Not Found"),
            },
            ("POST", None) => {
                let (Some(name), Some(value)) = (input["name"].as_str(), input["value"].as_str()) else {
                    return Some(message(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid request: name and value are required",
                    ));
                };
                if !name_ok(name) {
                    return Some(message(StatusCode::UNPROCESSABLE_ENTITY, "Invalid name"));
                }
                let name = name.to_ascii_uppercase();
                if vars.contains_key(&name) {
                    return Some(message(StatusCode::CONFLICT, "Already exists"));
                }
                let t = now();
                vars.insert(
                    name,
                    Variable {
                        value: value.into(),
                        created_at: t,
                        updated_at: t,
                    },
                );
                self.writes.fetch_add(1, Ordering::SeqCst);
                (StatusCode::CREATED, "{}").into_response()
            }
            ("PATCH", Some(name)) => {
                let Some(mut v) = vars.remove(&name) else {
                    return Some(message(StatusCode::NOT_FOUND, "Not Found"));
                };
                if let Some(value) = input["value"].as_str() {
                    v.value = value.into();
                }
                v.updated_at = now();
                let new_name = match input["name"].as_str() {
                    Some(n) if name_ok(n) => n.to_ascii_uppercase(),
                    Some(_) => {
                        vars.insert(name, v);
                        return Some(message(StatusCode::UNPROCESSABLE_ENTITY, "Invalid name"));
                    }
                    None => name,
                };
                vars.insert(new_name, v);
                self.writes.fetch_add(1, Ordering::SeqCst);
                StatusCode::NO_CONTENT.into_response()
            }
            ("DELETE", Some(name)) => match vars.remove(&name) {
                Some(_) => {
                    self.writes.fetch_add(1, Ordering::SeqCst);
                    StatusCode::NO_CONTENT.into_response()
                }
                None => message(StatusCode::NOT_FOUND, "Not Found"),
            },
            _ => message(StatusCode::NOT_FOUND, "Not Found"),
        };
        Some(response)
    }
}

/// FNV-1a: the ETag of a list body (any stable hash of the bytes does).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
