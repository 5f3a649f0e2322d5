//! The tools, shared by `/mcp` and `/jsonrpc`: one definition, one
//! implementation.
//!
//! Each tool is one type ([`Tool`]): its fields' types ([`args`]) validate
//! the arguments and are the input schema `tools/list` publishes, so the
//! schema and the server cannot disagree (`tests/tool_schemas.rs` checks
//! it), and the type makes the call's key and request.
//! [`ToolCall::parse`] is pure: it turns a tool name and its JSON arguments
//! into a validated call (or a [`RpcError`] with the JSON-RPC code), so the
//! part that sees outside input can be fuzzed without a runtime.
//! [`App::call`](super::App::call) runs a parsed call.
//!
//! Every GitHub read answers an object
//! `{cache_mode, status, age_secs, etag, data}` where `cache_mode` says how
//! it was served: `hit`, `revalidated`, `miss`, `stale`, `coalesced`, `peer`.

mod args;

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub use self::args::is_repo_name;
pub(crate) use self::args::name_ok;
use self::args::{Limit, Login, PathArg, QueryArg, RepoName, RunId, State, Text};
pub use super::key_path::PathScope;
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
/// through the proxy, or a GitHub webhook. `App::invalidate` applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidate {
    /// Everything.
    All,
    /// Every key starting with this.
    Prefix(String),
    /// Every key of repository `owner/name`, of every tool and partition.
    Repository(String),
    /// Every key that reads one of these GitHub paths (or a path under a
    /// [`PathScope::tree`]), of every tool and partition: see
    /// [`key_path`](super::key_path).
    Paths(Vec<PathScope>),
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

/// One tool: its arguments type is its one definition. The type's
/// `Deserialize` validates (see [`args`]), its `JsonSchema` is the input
/// schema `tools/list` publishes, and [`Tool::into_call`] makes the key and
/// request from the validated value.
trait Tool: DeserializeOwned + JsonSchema {
    /// The tool's name.
    const NAME: &'static str;
    /// What it does, for the model reading `tools/list`.
    const DESCRIPTION: &'static str;
    /// The call these arguments make (rules across fields are checked here
    /// and stated in the schema with `extend`).
    fn into_call(self) -> Result<ToolCall, RpcError>;
}

/// A tool as the registry holds it.
struct Definition {
    name: &'static str,
    description: &'static str,
    schema: fn() -> Value,
    parse: fn(Value) -> Result<ToolCall, RpcError>,
}

fn definition<T: Tool>() -> Definition {
    Definition {
        name: T::NAME,
        description: T::DESCRIPTION,
        schema: || {
            let generator = SchemaSettings::draft2020_12()
                .with(|s| s.inline_subschemas = true)
                .into_generator();
            let mut schema = generator.into_root_schema_for::<T>().to_value();
            if let Value::Object(map) = &mut schema {
                map.remove("$schema");
                map.remove("title");
            }
            schema
        },
        parse: |arguments| {
            serde_json::from_value::<T>(arguments)
                .map_err(|e| RpcError::invalid_params(e.to_string()))?
                .into_call()
        },
    }
}

/// Every tool, in the order `tools/list` gives them.
fn registry() -> [Definition; 13] {
    [
        definition::<GetCacheStats>(),
        definition::<ListPeers>(),
        definition::<InvalidateCache>(),
        definition::<Api>(),
        definition::<ListRepos>(),
        definition::<GetRepo>(),
        definition::<ListWorkflowRuns>(),
        definition::<GetWorkflowRun>(),
        definition::<ListRunners>(),
        definition::<ListIssues>(),
        definition::<ListPullRequests>(),
        definition::<GetRateLimit>(),
        definition::<GetAuthStatus>(),
    ]
}

/// Name, description and input schema of each tool.
pub fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    registry()
        .into_iter()
        .map(|d| (d.name, d.description, (d.schema)()))
        .collect()
}

/// The `tools/list` result.
pub fn list() -> Value {
    let tools: Vec<Value> = definitions()
        .into_iter()
        .map(|(name, description, schema)| json!({"name": name, "description": description, "inputSchema": schema}))
        .collect();
    json!({ "tools": tools })
}

impl ToolCall {
    /// Validates a call of tool `name` with `arguments` (pure; see the
    /// module docs). Absent or `null` arguments are `{}`.
    pub fn parse(name: &str, arguments: Option<&Value>) -> Result<ToolCall, RpcError> {
        let Some(tool) = registry().into_iter().find(|d| d.name == name) else {
            return Err(RpcError::method_not_found(format!("unknown tool {name:?}")));
        };
        let arguments = match arguments {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => return Err(RpcError::invalid_params("arguments must be an object")),
        };
        (tool.parse)(arguments)
    }
}

/// Defines a tool that takes no arguments.
macro_rules! no_arguments {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $description:literal, $call:expr) => {
        $(#[$doc])*
        #[derive(Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct $ty {}

        impl Tool for $ty {
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = $description;
            fn into_call(self) -> Result<ToolCall, RpcError> {
                Ok($call)
            }
        }
    };
}

no_arguments!(
    GetCacheStats,
    "gh_get_cache_stats",
    "Cache statistics: hits, misses, API calls made and saved, P2P state (peer_id), and `aggregate` over the fleet.",
    ToolCall::Stats
);
no_arguments!(
    ListPeers,
    "gh_list_peers",
    "The P2P peers this node is connected to (Peer ID, addresses, agent, ping).",
    ToolCall::ListPeers
);
no_arguments!(
    GetAuthStatus,
    "gh_get_auth_status",
    "Who the daemon's GitHub token belongs to (no token: unauthenticated).",
    ToolCall::AuthStatus
);
no_arguments!(
    GetRateLimit,
    "gh_get_rate_limit",
    "GitHub's rate-limit status (free to ask), plus what the daemon last saw.",
    ToolCall::Read(
        CacheKey::new(Operation::RateLimit, [("path", Some("/rate_limit"))]),
        Request::single("/rate_limit"),
    )
);

// `gh_invalidate_cache`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = {
    "required": ["pattern", "repo"],
    "properties": {"pattern": {"type": "string"}, "repo": {"type": "string"}}
}))]
struct InvalidateCache {
    /// A key prefix (e.g. `runners:` or `repo:repo=o/r`; a trailing `*` is
    /// allowed; a bare tool operation such as `runners` means its keys).
    pattern: Option<String>,
    /// Every entry of this repository.
    repo: Option<RepoName>,
}

impl Tool for InvalidateCache {
    const NAME: &'static str = "gh_invalidate_cache";
    const DESCRIPTION: &'static str = "Drop cached entries: all, those whose key starts with `pattern` (e.g. `runners:` or `repo:repo=o/r`; a trailing `*` is allowed), or every entry of repository `repo` (every tool, /github/ paths included). Give at most one of the two.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let pattern = match (self.pattern, self.repo) {
            (Some(_), Some(_)) => return Err(RpcError::invalid_params("give `pattern` or `repo`, not both")),
            (None, Some(repo)) => return Ok(ToolCall::Invalidate(Invalidate::Repository(repo.0))),
            (pattern, None) => pattern.unwrap_or_default(),
        };
        let prefix = pattern.strip_suffix('*').unwrap_or(&pattern);
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
}

// `gh_api`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Api {
    path: PathArg,
    query: Option<QueryArg>,
}

impl Tool for Api {
    const NAME: &'static str = "gh_api";
    const DESCRIPTION: &'static str =
        "Any GitHub REST GET, through the cache: path like /repos/o/r/branches, optional query object.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let (key, req) = api_read(&self.path.0, self.query.unwrap_or_default().0, &Variant::default())?;
        Ok(ToolCall::Read(key, req))
    }
}

// `gh_list_repos`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListRepos {
    /// A user or organisation; none: the authenticated user.
    owner: Option<Login>,
    limit: Option<Limit>,
}

impl Tool for ListRepos {
    const NAME: &'static str = "gh_list_repos";
    const DESCRIPTION: &'static str = "Repositories of `owner` (user or organisation), or of the authenticated user.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let path = match self.owner {
            Some(owner) => format!("/users/{}/repos", owner.0),
            None => "/user/repos".to_string(),
        };
        let limit = self.limit.unwrap_or_default().0;
        Ok(list_read(Operation::Repos, path, vec![], Shape::Array, limit))
    }
}

// `gh_get_repo`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetRepo {
    repo: RepoName,
}

impl Tool for GetRepo {
    const NAME: &'static str = "gh_get_repo";
    const DESCRIPTION: &'static str = "One repository.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let repo = self.repo.0;
        Ok(ToolCall::Read(
            CacheKey::new(Operation::Repo, [("repo", Some(repo.as_str()))]),
            Request::single(format!("/repos/{repo}")),
        ))
    }
}

// `gh_list_workflow_runs`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListWorkflowRuns {
    repo: RepoName,
    /// e.g. `completed`, `in_progress`, `failure`.
    status: Option<Text>,
    branch: Option<Text>,
    limit: Option<Limit>,
}

impl Tool for ListWorkflowRuns {
    const NAME: &'static str = "gh_list_workflow_runs";
    const DESCRIPTION: &'static str = "Workflow runs of a repository, newest first.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let filters = vec![
            ("status", self.status.map(|t| t.0)),
            ("branch", self.branch.map(|t| t.0)),
        ];
        Ok(list_read(
            Operation::WorkflowRuns,
            format!("/repos/{}/actions/runs", self.repo.0),
            filters,
            Shape::Field("workflow_runs"),
            self.limit.unwrap_or_default().0,
        ))
    }
}

// `gh_get_workflow_run`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetWorkflowRun {
    repo: RepoName,
    run_id: RunId,
}

impl Tool for GetWorkflowRun {
    const NAME: &'static str = "gh_get_workflow_run";
    const DESCRIPTION: &'static str = "One workflow run.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let (repo, id) = (self.repo.0, self.run_id.0.to_string());
        Ok(ToolCall::Read(
            CacheKey::new(
                Operation::WorkflowRun,
                [("repo", Some(repo.as_str())), ("run_id", Some(id.as_str()))],
            ),
            Request::single(format!("/repos/{repo}/actions/runs/{id}")),
        ))
    }
}

// `gh_list_runners`: exactly one of `repo` and `org`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {"required": ["repo"], "properties": {"repo": {"type": "string"}}},
    {"required": ["org"], "properties": {"org": {"type": "string"}}}
]))]
struct ListRunners {
    repo: Option<RepoName>,
    org: Option<Login>,
}

impl Tool for ListRunners {
    const NAME: &'static str = "gh_list_runners";
    const DESCRIPTION: &'static str = "Self-hosted runners of a repository or an organisation (give exactly one).";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        let (param, value, path) = match (self.repo, self.org) {
            (Some(repo), None) => ("repo", repo.0.clone(), format!("/repos/{}/actions/runners", repo.0)),
            (None, Some(org)) => ("org", org.0.clone(), format!("/orgs/{}/actions/runners", org.0)),
            _ => return Err(RpcError::invalid_params("give exactly one of `repo` and `org`")),
        };
        Ok(ToolCall::Read(
            CacheKey::new(Operation::Runners, [(param, Some(value.as_str()))]),
            Request {
                path,
                shape: Shape::Field("runners"),
                limit: Some(100),
                ..Request::default()
            },
        ))
    }
}

// `gh_list_issues` and `gh_list_pull_requests`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RepoList {
    repo: RepoName,
    state: Option<State>,
    limit: Option<Limit>,
}

impl RepoList {
    fn call(self, op: Operation, tail: &str) -> Result<ToolCall, RpcError> {
        Ok(list_read(
            op,
            format!("/repos/{}/{tail}", self.repo.0),
            vec![("state", self.state.map(|s| s.as_str().to_string()))],
            Shape::Array,
            self.limit.unwrap_or_default().0,
        ))
    }
}

// `gh_list_issues`.
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
struct ListIssues(RepoList);

impl Tool for ListIssues {
    const NAME: &'static str = "gh_list_issues";
    const DESCRIPTION: &'static str = "Issues of a repository.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        self.0.call(Operation::Issues, "issues")
    }
}

// `gh_list_pull_requests`.
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
struct ListPullRequests(RepoList);

impl Tool for ListPullRequests {
    const NAME: &'static str = "gh_list_pull_requests";
    const DESCRIPTION: &'static str = "Pull requests of a repository.";
    fn into_call(self) -> Result<ToolCall, RpcError> {
        self.0.call(Operation::PullRequests, "pulls")
    }
}

/// Checks a GitHub API path (see [`ApiPath`](super::api_base::ApiPath)):
/// the one rule for every path a client gives, in the proxy and every tool.
pub fn clean_path(path: &str) -> Result<String, RpcError> {
    super::api_base::ApiPath::parse(path)
        .map(super::api_base::ApiPath::into_string)
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
) -> ToolCall {
    let limit_text = limit.to_string();
    let mut params: Vec<(&str, Option<&str>)> = filters.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    params.push(("limit", Some(&limit_text)));
    params.push(("path", Some(&path)));
    let key = CacheKey::new(op, params);
    let query = filters
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect();
    ToolCall::Read(
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
