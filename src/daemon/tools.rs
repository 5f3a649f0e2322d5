//! The tools, shared by `/mcp` and `/jsonrpc`: one definition, one
//! implementation.
//!
//! [`ToolCall::parse`] is pure: it turns a tool name and its JSON arguments
//! into a validated call (or a [`RpcError`] with the JSON-RPC code), so the
//! part that sees outside input can be fuzzed without a runtime.
//! [`App::call`](super::App::call) runs a parsed call.
//!
//! Every GitHub read answers an object
//! `{cache_mode, status, age_secs, etag, data}` where `cache_mode` says how
//! it was served: `hit`, `revalidated`, `miss`, `stale`, `coalesced`, `peer`.

use serde_json::{json, Map, Value};

use super::upstream::{ClientToken, Request, Shape};
use crate::core::{CacheKey, Operation};

/// A JSON-RPC error: code and message.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// JSON-RPC code (-32700, -32600, -32601, -32602, -32603, -32000).
    pub code: i64,
    /// Message.
    pub message: String,
    /// Extra data, if any.
    pub data: Option<Value>,
}

impl RpcError {
    /// -32602.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32602,
            message: message.into(),
            data: None,
        }
    }

    /// -32601.
    pub fn method_not_found(message: impl Into<String>) -> RpcError {
        RpcError {
            code: -32601,
            message: message.into(),
            data: None,
        }
    }
}

/// What an invalidation removes: from `gh_invalidate_cache`, a write
/// through the proxy, or (later) a webhook. `App::invalidate` applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidate {
    /// Everything.
    All,
    /// Every key starting with this.
    Prefix(String),
    /// Every key of repository `owner/name`, of every tool and partition.
    Repository(String),
}

/// A validated tool call.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolCall {
    /// `gh_get_cache_stats`.
    Stats,
    /// `gh_invalidate_cache`.
    Invalidate(Invalidate),
    /// `gh_get_auth_status`.
    AuthStatus,
    /// `gh_list_peers`.
    ListPeers,
    /// Any GitHub read: its key and request.
    Read(CacheKey, Request),
}

/// Name, description and input schema of each tool.
pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    let repo = json!({"type": "string", "description": "owner/name", "pattern": "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"});
    let limit = json!({"type": "integer", "minimum": 1, "maximum": 1000, "description": "most items (default 30)"});
    let state = json!({"type": "string", "enum": ["open", "closed", "all"]});
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    vec![
        (
            "gh_get_cache_stats",
            "Cache statistics: hits, misses, API calls made and saved, P2P state (peer_id), and `aggregate` over the fleet.",
            obj(json!({}), &[]),
        ),
        ("gh_list_peers", "The P2P peers this node is connected to (Peer ID, addresses, agent, ping).", obj(json!({}), &[])),
        (
            "gh_invalidate_cache",
            "Drop cached entries: all, those whose key starts with `pattern` (e.g. `runners:` or `repo:repo=o/r`; a trailing `*` is allowed), or every entry of repository `repo` (every tool, /github/ paths included). Give at most one of the two.",
            obj(json!({"pattern": {"type": "string"}, "repo": repo}), &[]),
        ),
        (
            "gh_api",
            "Any GitHub REST GET, through the cache: path like /repos/o/r/branches, optional query object.",
            obj(
                json!({"path": {"type": "string"}, "query": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}}),
                &["path"],
            ),
        ),
        (
            "gh_list_repos",
            "Repositories of `owner` (user or organisation), or of the authenticated user.",
            obj(json!({"owner": {"type": "string"}, "limit": limit}), &[]),
        ),
        ("gh_get_repo", "One repository.", obj(json!({"repo": repo}), &["repo"])),
        (
            "gh_list_workflow_runs",
            "Workflow runs of a repository, newest first.",
            obj(json!({"repo": repo, "status": {"type": "string"}, "branch": {"type": "string"}, "limit": limit}), &["repo"]),
        ),
        (
            "gh_get_workflow_run",
            "One workflow run.",
            obj(json!({"repo": repo, "run_id": {"type": ["integer", "string"]}}), &["repo", "run_id"]),
        ),
        (
            "gh_list_runners",
            "Self-hosted runners of a repository or an organisation (give exactly one).",
            obj(json!({"repo": repo, "org": {"type": "string"}}), &[]),
        ),
        (
            "gh_list_issues",
            "Issues of a repository.",
            obj(json!({"repo": repo, "state": state, "limit": limit}), &["repo"]),
        ),
        (
            "gh_list_pull_requests",
            "Pull requests of a repository.",
            obj(json!({"repo": repo, "state": state, "limit": limit}), &["repo"]),
        ),
        ("gh_get_rate_limit", "GitHub's rate-limit status (free to ask), plus what the daemon last saw.", obj(json!({}), &[])),
        ("gh_get_auth_status", "Who the daemon's GitHub token belongs to (no token: unauthenticated).", obj(json!({}), &[])),
    ]
}

/// The `tools/list` result.
pub fn list() -> Value {
    let tools: Vec<Value> = definitions()
        .into_iter()
        .map(|(name, description, schema)| json!({"name": name, "description": description, "inputSchema": schema}))
        .collect();
    json!({ "tools": tools })
}

struct Args<'a> {
    map: Option<&'a Map<String, Value>>,
    allowed: &'static [&'static str],
}

impl<'a> Args<'a> {
    fn new(args: Option<&'a Value>, allowed: &'static [&'static str]) -> Result<Args<'a>, RpcError> {
        let map = match args {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
        };
        if let Some(k) = map
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| !allowed.contains(&k.as_str()))
        {
            return Err(RpcError::invalid_params(format!("unknown argument `{k}`")));
        }
        Ok(Args { map, allowed })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        debug_assert!(self.allowed.contains(&name));
        self.map.and_then(|m| m.get(name))
    }

    fn str_opt(&self, name: &str) -> Result<Option<&'a str>, RpcError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(RpcError::invalid_params(format!("`{name}` must be a string"))),
        }
    }

    fn str(&self, name: &str) -> Result<&'a str, RpcError> {
        self.str_opt(name)?
            .ok_or_else(|| RpcError::invalid_params(format!("missing required argument `{name}`")))
    }

    fn limit(&self) -> Result<usize, RpcError> {
        match self.get("limit") {
            None | Some(Value::Null) => Ok(30),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .map(|n| n as usize)
                .ok_or_else(|| RpcError::invalid_params("`limit` must be an integer from 1 to 1000")),
        }
    }
}

pub(crate) fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
}

fn repo_arg(args: &Args<'_>) -> Result<String, RpcError> {
    let repo = args.str("repo")?;
    match repo.split_once('/') {
        Some((o, r)) if name_ok(o) && name_ok(r) => Ok(repo.to_string()),
        _ => Err(RpcError::invalid_params(format!(
            "`repo` must look like owner/name, got {repo:?}"
        ))),
    }
}

fn owner_arg(args: &Args<'_>, name: &str) -> Result<Option<String>, RpcError> {
    match args.str_opt(name)? {
        None => Ok(None),
        Some(o) if name_ok(o) => Ok(Some(o.to_string())),
        Some(o) => Err(RpcError::invalid_params(format!(
            "`{name}` is not a valid GitHub login: {o:?}"
        ))),
    }
}

fn text_arg(args: &Args<'_>, name: &str) -> Result<Option<String>, RpcError> {
    match args.str_opt(name)? {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) => Ok(Some(s.to_string())),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`{name}` must be 1 to 256 printable characters"
        ))),
    }
}

fn state_arg(args: &Args<'_>) -> Result<Option<String>, RpcError> {
    match args.str_opt("state")? {
        None => Ok(None),
        Some(s @ ("open" | "closed" | "all")) => Ok(Some(s.to_string())),
        Some(s) => Err(RpcError::invalid_params(format!(
            "`state` must be open, closed or all, got {s:?}"
        ))),
    }
}

/// Checks a GitHub API path (see [`ApiPath`](super::api_base::ApiPath)):
/// the one rule for every path a client gives, in the proxy and every tool.
pub fn clean_path(path: &str) -> Result<String, RpcError> {
    super::api_base::ApiPath::parse(path)
        .map(|p| p.as_str().to_string())
        .map_err(|e| RpcError::invalid_params(format!("`path` must be a GitHub API path like /repos/o/r: {e}")))
}

/// What changes a plain GET's answer besides its path and query: the media
/// type, the API version, and whose credentials ask. Each is `None` for
/// the default (GitHub's JSON, the default version, the daemon's token),
/// so the proxy's default reads and `gh_api` share entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Variant {
    /// A non-default `Accept`, normalised (lowercase, no spaces).
    pub accept: Option<String>,
    /// A non-default `X-GitHub-Api-Version`.
    pub api_version: Option<String>,
    /// The client's own token, with its partition (a keyed hash of it, the
    /// only form of it that enters a key).
    pub credential: Option<ClientToken>,
}

/// The key and request of a plain GET (`gh_api`, the reverse proxy):
/// path, query pairs sorted so that the same read always gets the same
/// key, and the [`Variant`]. The variant's parameters are named so they
/// sort after `path`, so every plain GET key starts `api:path=`.
pub fn api_read(
    path: &str,
    mut query: Vec<(String, String)>,
    variant: &Variant,
) -> Result<(CacheKey, Request), RpcError> {
    let path = clean_path(path)?;
    query.sort();
    let canonical = super::upstream::encode_query(&query);
    let key = CacheKey::new(
        Operation::Api,
        [
            ("path", Some(path.as_str())),
            ("query", (!canonical.is_empty()).then_some(canonical.as_str())),
            ("vary_accept", variant.accept.as_deref()),
            ("vary_api_version", variant.api_version.as_deref()),
            (
                "vary_credential",
                variant.credential.as_ref().map(|t| t.partition.as_str()),
            ),
        ],
    );
    let req = Request {
        path,
        query,
        shape: Shape::Response,
        accept: variant.accept.clone(),
        api_version: variant.api_version.clone(),
        token: variant.credential.clone(),
        ..Request::default()
    };
    Ok((key, req))
}

/// The key a read of `req` for operation `op` has: the inverse of the
/// tools' builders, so a request that arrives from a peer can be checked
/// against the key it names (a peer cannot file one path under another
/// path's key). Also fixes the page shape from the operation. `None`: no
/// tool makes such a request.
pub fn key_of(op: Operation, req: &Request) -> Option<(CacheKey, Shape)> {
    let path = clean_path(&req.path).ok().filter(|p| *p == req.path)?;
    let single = |params: Vec<(&str, &str)>| {
        (req.query.is_empty() && req.limit.is_none()).then(|| {
            (
                CacheKey::new(op, params.into_iter().map(|(k, v)| (k, Some(v)))),
                Shape::Single,
            )
        })
    };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match op {
        // Peers share the default variant only (the daemons' own token).
        Operation::Api => {
            let mut query = req.query.clone();
            query.sort();
            let (key, _) = api_read(&path, query.clone(), &Variant::default()).ok()?;
            let default = req.accept.is_none() && req.api_version.is_none() && req.token.is_none();
            (req.limit.is_none() && query == req.query && default).then_some((key, Shape::Response))
        }
        Operation::RateLimit if path == "/rate_limit" => single(vec![("path", "/rate_limit")]),
        Operation::AuthStatus if path == "/user" => single(vec![("path", "/user")]),
        Operation::Repo => match segments[..] {
            ["repos", o, r] => single(vec![("repo", &format!("{o}/{r}"))]),
            _ => None,
        },
        Operation::WorkflowRun => match segments[..] {
            ["repos", o, r, "actions", "runs", id] => single(vec![("repo", &format!("{o}/{r}")), ("run_id", id)]),
            _ => None,
        },
        Operation::Runners => {
            let (param, value) = match segments[..] {
                ["repos", o, r, "actions", "runners"] => ("repo", format!("{o}/{r}")),
                ["orgs", org, "actions", "runners"] => ("org", org.to_string()),
                _ => return None,
            };
            (req.query.is_empty() && req.limit == Some(100)).then(|| {
                (
                    CacheKey::new(op, [(param, Some(value.as_str()))]),
                    Shape::Field("runners"),
                )
            })
        }
        Operation::Repos | Operation::Issues | Operation::PullRequests | Operation::WorkflowRuns => {
            let limit = req.limit?.to_string();
            let mut params: Vec<(&str, Option<&str>)> =
                req.query.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))).collect();
            params.push(("limit", Some(&limit)));
            params.push(("path", Some(&path)));
            let shape = if op == Operation::WorkflowRuns {
                Shape::Field("workflow_runs")
            } else {
                Shape::Array
            };
            Some((CacheKey::new(op, params), shape))
        }
        Operation::RateLimit | Operation::AuthStatus => None,
    }
}

fn list_read(
    op: Operation,
    path: String,
    filters: Vec<(&'static str, Option<String>)>,
    shape: Shape,
    limit: usize,
) -> (CacheKey, Request) {
    let limit_text = limit.to_string();
    let mut params: Vec<(&str, Option<&str>)> = filters.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    params.push(("limit", Some(&limit_text)));
    params.push(("path", Some(&path)));
    let key = CacheKey::new(op, params);
    let query = filters
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    (
        key,
        Request {
            path,
            query,
            shape,
            limit: Some(limit),
            ..Request::default()
        },
    )
}

impl ToolCall {
    /// Validates a call of tool `name` with `arguments` (pure; see the
    /// module docs).
    pub fn parse(name: &str, arguments: Option<&Value>) -> Result<ToolCall, RpcError> {
        let read = |(key, req): (CacheKey, Request)| Ok(ToolCall::Read(key, req));
        match name {
            "gh_get_cache_stats" => {
                Args::new(arguments, &[])?;
                Ok(ToolCall::Stats)
            }
            "gh_list_peers" => {
                Args::new(arguments, &[])?;
                Ok(ToolCall::ListPeers)
            }
            "gh_invalidate_cache" => {
                let a = Args::new(arguments, &["pattern", "repo"])?;
                if a.get("repo").is_some() {
                    if a.get("pattern").is_some() {
                        return Err(RpcError::invalid_params("give `pattern` or `repo`, not both"));
                    }
                    return Ok(ToolCall::Invalidate(Invalidate::Repository(repo_arg(&a)?)));
                }
                let pattern = a.str_opt("pattern")?.unwrap_or("*");
                let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
                if prefix.is_empty() {
                    return Ok(ToolCall::Invalidate(Invalidate::All));
                }
                // A bare operation name means all its keys.
                let prefix = match Operation::from_name(prefix) {
                    Some(op) => format!("{}:", op.name()),
                    None => prefix.to_string(),
                };
                Ok(ToolCall::Invalidate(Invalidate::Prefix(prefix)))
            }
            "gh_get_auth_status" => {
                Args::new(arguments, &[])?;
                Ok(ToolCall::AuthStatus)
            }
            "gh_get_rate_limit" => {
                Args::new(arguments, &[])?;
                read((
                    CacheKey::new(Operation::RateLimit, [("path", Some("/rate_limit"))]),
                    Request::single("/rate_limit"),
                ))
            }
            "gh_api" => {
                let a = Args::new(arguments, &["path", "query"])?;
                let path = a.str("path")?;
                let query = match a.get("query") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Object(q)) => q
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                Value::Number(n) => n.to_string(),
                                Value::Bool(b) => b.to_string(),
                                _ => {
                                    return Err(RpcError::invalid_params(format!(
                                        "query value `{k}` must be a string, number or boolean"
                                    )))
                                }
                            };
                            Ok((k.clone(), v))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(Value::String(s)) => {
                        parse_query(s).ok_or_else(|| RpcError::invalid_params("`query` is not a valid query string"))?
                    }
                    Some(_) => return Err(RpcError::invalid_params("`query` must be an object")),
                };
                read(api_read(path, query, &Variant::default())?)
            }
            "gh_list_repos" => {
                let a = Args::new(arguments, &["owner", "limit"])?;
                let limit = a.limit()?;
                let path = match owner_arg(&a, "owner")? {
                    Some(owner) => format!("/users/{owner}/repos"),
                    None => "/user/repos".to_string(),
                };
                read(list_read(Operation::Repos, path, vec![], Shape::Array, limit))
            }
            "gh_get_repo" => {
                let a = Args::new(arguments, &["repo"])?;
                let repo = repo_arg(&a)?;
                read((
                    CacheKey::new(Operation::Repo, [("repo", Some(repo.as_str()))]),
                    Request::single(format!("/repos/{repo}")),
                ))
            }
            "gh_list_workflow_runs" => {
                let a = Args::new(arguments, &["repo", "status", "branch", "limit"])?;
                let repo = repo_arg(&a)?;
                let filters = vec![("status", text_arg(&a, "status")?), ("branch", text_arg(&a, "branch")?)];
                read(list_read(
                    Operation::WorkflowRuns,
                    format!("/repos/{repo}/actions/runs"),
                    filters,
                    Shape::Field("workflow_runs"),
                    a.limit()?,
                ))
            }
            "gh_get_workflow_run" => {
                let a = Args::new(arguments, &["repo", "run_id"])?;
                let repo = repo_arg(&a)?;
                let id = match a.get("run_id") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s))
                        if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        s.parse().ok()
                    }
                    None => return Err(RpcError::invalid_params("missing required argument `run_id`")),
                    _ => None,
                }
                .ok_or_else(|| RpcError::invalid_params("`run_id` must be a positive integer"))?;
                let id = id.to_string();
                read((
                    CacheKey::new(
                        Operation::WorkflowRun,
                        [("repo", Some(repo.as_str())), ("run_id", Some(id.as_str()))],
                    ),
                    Request::single(format!("/repos/{repo}/actions/runs/{id}")),
                ))
            }
            "gh_list_runners" => {
                let a = Args::new(arguments, &["repo", "org"])?;
                let repo = a.str_opt("repo")?.map(|_| repo_arg(&a)).transpose()?;
                let org = owner_arg(&a, "org")?;
                let (param, value, path) = match (repo, org) {
                    (Some(repo), None) => ("repo", repo.clone(), format!("/repos/{repo}/actions/runners")),
                    (None, Some(org)) => ("org", org.clone(), format!("/orgs/{org}/actions/runners")),
                    _ => return Err(RpcError::invalid_params("give exactly one of `repo` and `org`")),
                };
                let key = CacheKey::new(Operation::Runners, [(param, Some(value.as_str()))]);
                read((
                    key,
                    Request {
                        path,
                        shape: Shape::Field("runners"),
                        limit: Some(100),
                        ..Request::default()
                    },
                ))
            }
            "gh_list_issues" | "gh_list_pull_requests" => {
                let a = Args::new(arguments, &["repo", "state", "limit"])?;
                let repo = repo_arg(&a)?;
                let (op, path) = if name == "gh_list_issues" {
                    (Operation::Issues, format!("/repos/{repo}/issues"))
                } else {
                    (Operation::PullRequests, format!("/repos/{repo}/pulls"))
                };
                read(list_read(
                    op,
                    path,
                    vec![("state", state_arg(&a)?)],
                    Shape::Array,
                    a.limit()?,
                ))
            }
            other => Err(RpcError::method_not_found(format!("unknown tool {other:?}"))),
        }
    }
}

/// Parses `a=b&c=d` (percent-decoded); `None` when malformed or when a
/// name or value holds a control character (an encoded CR/LF is never
/// sent on).
pub fn parse_query(s: &str) -> Option<Vec<(String, String)>> {
    let text = |part: &str| super::upstream::decode(part).filter(|t| !t.chars().any(char::is_control));
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((text(k)?, text(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once() {
        let defs = definitions();
        let mut names: Vec<_> = defs.iter().map(|d| d.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 13);
    }

    #[test]
    fn key_of_inverts_every_read_tool() {
        let calls = [
            ("gh_get_repo", json!({"repo": "o/r"})),
            (
                "gh_api",
                json!({"path": "/repos/o/r/branches", "query": {"b": 2, "a": "x y"}}),
            ),
            ("gh_api", json!({"path": "/meta"})),
            ("gh_list_repos", json!({})),
            ("gh_list_repos", json!({"owner": "someone", "limit": 5})),
            (
                "gh_list_workflow_runs",
                json!({"repo": "o/r", "status": "queued", "branch": "main"}),
            ),
            ("gh_get_workflow_run", json!({"repo": "o/r", "run_id": 42})),
            ("gh_list_runners", json!({"repo": "o/r"})),
            ("gh_list_runners", json!({"org": "acme"})),
            ("gh_list_issues", json!({"repo": "o/r", "state": "open", "limit": 7})),
            ("gh_list_pull_requests", json!({"repo": "o/r"})),
            ("gh_get_rate_limit", json!({})),
        ];
        for (name, args) in calls {
            let Ok(ToolCall::Read(key, req)) = ToolCall::parse(name, Some(&args)) else {
                panic!("{name}")
            };
            let (k, shape) = key_of(key.operation(), &req).unwrap_or_else(|| panic!("{name}: no key for {req:?}"));
            assert_eq!(k.as_str(), key.as_str(), "{name}");
            assert_eq!(shape, req.shape, "{name}");
        }
        // A request filed under another read's key does not match it.
        let Ok(ToolCall::Read(key, _)) = ToolCall::parse("gh_get_repo", Some(&json!({"repo": "o/r"}))) else {
            panic!()
        };
        let other = Request::single("/repos/o/other");
        assert_ne!(
            key_of(key.operation(), &other).map(|k| k.0.as_str().to_string()),
            Some(key.as_str().to_string())
        );
        assert!(key_of(Operation::Repo, &Request::single("/repos/o/r/../x")).is_none());
        assert!(key_of(Operation::RateLimit, &Request::single("/user")).is_none());
    }

    #[test]
    fn parse_validates() {
        assert_eq!(ToolCall::parse("gh_get_cache_stats", None), Ok(ToolCall::Stats));
        assert_eq!(ToolCall::parse("gh_list_peers", None), Ok(ToolCall::ListPeers));
        assert_eq!(ToolCall::parse("nope", None).unwrap_err().code, -32601);
        assert_eq!(
            ToolCall::parse("gh_get_repo", Some(&json!({}))).unwrap_err().code,
            -32602
        );
        assert_eq!(
            ToolCall::parse("gh_get_repo", Some(&json!({"repo": "../x"})))
                .unwrap_err()
                .code,
            -32602
        );
        assert_eq!(
            ToolCall::parse("gh_get_repo", Some(&json!({"repo": "o/r", "x": 1})))
                .unwrap_err()
                .code,
            -32602
        );
        assert_eq!(
            ToolCall::parse("gh_api", Some(&json!({"path": "/a/../b"})))
                .unwrap_err()
                .code,
            -32602
        );
        assert_eq!(
            ToolCall::parse("gh_list_runners", Some(&json!({}))).unwrap_err().code,
            -32602
        );
        let Ok(ToolCall::Read(key, req)) = ToolCall::parse("gh_get_repo", Some(&json!({"repo": "o/r"}))) else {
            panic!()
        };
        assert_eq!(key.as_str(), "repo:repo=o/r");
        assert_eq!(req.path, "/repos/o/r");
        let Ok(ToolCall::Read(key, _)) = ToolCall::parse("gh_list_runners", Some(&json!({"org": "acme"}))) else {
            panic!()
        };
        assert_eq!(key.as_str(), "runners:org=acme");
        assert_eq!(
            ToolCall::parse("gh_invalidate_cache", Some(&json!({"pattern": "runners"}))),
            Ok(ToolCall::Invalidate(Invalidate::Prefix("runners:".into())))
        );
        assert_eq!(
            ToolCall::parse("gh_invalidate_cache", None),
            Ok(ToolCall::Invalidate(Invalidate::All))
        );
        assert_eq!(
            ToolCall::parse("gh_invalidate_cache", Some(&json!({"repo": "o/r"}))),
            Ok(ToolCall::Invalidate(Invalidate::Repository("o/r".into())))
        );
        for bad in [
            json!({"repo": "o/r", "pattern": "x"}),
            json!({"repo": "../r"}),
            json!({"repo": 1}),
        ] {
            assert_eq!(
                ToolCall::parse("gh_invalidate_cache", Some(&bad)).unwrap_err().code,
                -32602,
                "{bad}"
            );
        }
    }

    #[test]
    fn api_keys_ignore_query_order() {
        let (a, _) = api_read(
            "/x",
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            &Variant::default(),
        )
        .unwrap();
        let (b, _) = api_read(
            "x",
            vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            &Variant::default(),
        )
        .unwrap();
        assert_eq!(a, b);
        let Ok(ToolCall::Read(c, _)) =
            ToolCall::parse("gh_api", Some(&json!({"path": "/x", "query": {"b": 2, "a": "1"}})))
        else {
            panic!()
        };
        assert_eq!(a, c);
    }
}
