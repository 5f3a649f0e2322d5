//! Which GitHub path a cache key reads, and the path scopes of
//! [`Invalidate::Paths`](super::tools::Invalidate::Paths).
//!
//! Every key the daemon makes reads one GitHub path (the inverse of the
//! tools' key builders in [`tools`](super::tools)):
//!
//! | key | path it reads |
//! | --- | --- |
//! | `api:path=P&…`, `issues:…&path=P…`, `pull_requests:…`, `workflow_runs:…`, `repos:…` | `P` |
//! | `repo:repo=o/r` | `/repos/o/r` |
//! | `workflow_run:repo=o/r&run_id=N` | `/repos/o/r/actions/runs/N` |
//! | `runners:repo=o/r` / `runners:org=g` | `/repos/o/r/actions/runners` / `/orgs/g/actions/runners` |
//! | `auth_status:` / `rate_limit:` | `/user` / `/rate_limit` |
//!
//! A [`PathScope`] names one path, alone or with everything under it, so
//! an invalidation can drop "that repository's workflow runs" whichever
//! tool, query, media type or credential partition read them. Paths are
//! compared ASCII-case-insensitively, as GitHub compares owner and
//! repository names; a key the table does not cover (none today) is never
//! matched by a path scope.
//!
//! Works on the key's text, so the store (which keeps keys as text) and the
//! cache apply the same rule.

/// One path of an [`Invalidate::Paths`](super::tools::Invalidate::Paths):
/// `path` itself, and with `tree` every path under it (`path/…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathScope {
    /// An absolute GitHub API path (`/repos/o/r/actions/runs`), no query.
    pub path: String,
    /// Also every path below `path`.
    pub tree: bool,
}

impl PathScope {
    /// `path` and everything under it.
    pub fn tree(path: impl Into<String>) -> PathScope {
        PathScope {
            path: path.into(),
            tree: true,
        }
    }

    /// `path` alone.
    pub fn exact(path: impl Into<String>) -> PathScope {
        PathScope {
            path: path.into(),
            tree: false,
        }
    }

    /// Does this scope cover `path` (as [`key_text_path`] gives it)?
    pub fn covers(&self, path: &str) -> bool {
        let scope = self.path.trim_end_matches('/');
        if path.len() < scope.len() || !path.as_bytes()[..scope.len()].eq_ignore_ascii_case(scope.as_bytes()) {
            return false;
        }
        match &path[scope.len()..] {
            "" => true,
            rest => self.tree && rest.starts_with('/'),
        }
    }

    /// Does this scope cover the path the key `text` reads?
    pub fn covers_key_text(&self, text: &str) -> bool {
        key_text_path(text).is_some_and(|p| self.covers(&p))
    }
}

impl std::fmt::Display for PathScope {
    /// `/repos/o/r` alone; `/repos/o/r/issues/**` for the path and
    /// everything under it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.trim_end_matches('/');
        if self.tree {
            write!(f, "{path}/**")
        } else {
            f.write_str(path)
        }
    }
}

/// The scopes as text, for answers and logs.
pub fn scopes_text(scopes: &[PathScope]) -> Vec<String> {
    scopes.iter().map(ToString::to_string).collect()
}

/// Does any of `scopes` cover the path the key `text` reads?
pub fn any_covers_key_text(scopes: &[PathScope], text: &str) -> bool {
    key_text_path(text).is_some_and(|p| scopes.iter().any(|s| s.covers(&p)))
}

/// The GitHub path the key `text` reads (module docs), or `None` for a
/// text that is not such a key.
pub fn key_text_path(text: &str) -> Option<String> {
    let (op, params) = text.split_once(':')?;
    let param = |name: &str| {
        params
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(unescape)
    };
    match op {
        "api" | "issues" | "pull_requests" | "workflow_runs" | "repos" => param("path"),
        "repo" => Some(format!("/repos/{}", param("repo")?)),
        "workflow_run" => Some(format!("/repos/{}/actions/runs/{}", param("repo")?, param("run_id")?)),
        "runners" => match (param("repo"), param("org")) {
            (Some(repo), _) => Some(format!("/repos/{repo}/actions/runners")),
            (None, Some(org)) => Some(format!("/orgs/{org}/actions/runners")),
            (None, None) => None,
        },
        "auth_status" => Some("/user".to_string()),
        "rate_limit" => Some("/rate_limit".to_string()),
        _ => None,
    }
}

/// Undoes the key text's escapes (`%25`, `%26`, `%3D`); anything else is
/// kept as it is.
fn unescape(value: &str) -> String {
    value.replace("%26", "&").replace("%3D", "=").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CacheKey, Operation};
    use crate::daemon::tools::{api_read, ToolCall, Variant};
    use serde_json::json;

    fn tool_key(name: &str, args: serde_json::Value) -> CacheKey {
        match ToolCall::parse(name, Some(&args)) {
            Ok(ToolCall::Read(key, _)) => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_tool_key_maps_to_the_path_it_reads() {
        let cases = [
            (tool_key("gh_get_repo", json!({"repo": "O/R"})), "/repos/O/R"),
            (
                tool_key("gh_get_workflow_run", json!({"repo": "o/r", "run_id": 7})),
                "/repos/o/r/actions/runs/7",
            ),
            (
                tool_key("gh_list_workflow_runs", json!({"repo": "o/r", "branch": "main"})),
                "/repos/o/r/actions/runs",
            ),
            (
                tool_key("gh_list_runners", json!({"repo": "o/r"})),
                "/repos/o/r/actions/runners",
            ),
            (
                tool_key("gh_list_runners", json!({"org": "g"})),
                "/orgs/g/actions/runners",
            ),
            (
                tool_key("gh_list_issues", json!({"repo": "o/r", "state": "open"})),
                "/repos/o/r/issues",
            ),
            (
                tool_key("gh_list_pull_requests", json!({"repo": "o/r"})),
                "/repos/o/r/pulls",
            ),
            (tool_key("gh_list_repos", json!({"owner": "g"})), "/users/g/repos"),
            (
                tool_key(
                    "gh_api",
                    json!({"path": "/repos/o/r/branches", "query": {"per_page": 5}}),
                ),
                "/repos/o/r/branches",
            ),
            (CacheKey::new::<&str, _>(Operation::AuthStatus, []), "/user"),
            (CacheKey::new::<&str, _>(Operation::RateLimit, []), "/rate_limit"),
        ];
        for (key, path) in cases {
            assert_eq!(key_text_path(key.as_str()).as_deref(), Some(path), "{key}");
        }
    }

    #[test]
    fn escaped_paths_come_back_as_read() {
        let key = CacheKey::new(Operation::Api, [("path", Some("/a%26b&c=d%")), ("query", Some("x=1"))]);
        assert_eq!(key.as_str(), "api:path=/a%2526b%26c%3Dd%25&query=x%3D1");
        assert_eq!(key_text_path(key.as_str()).as_deref(), Some("/a%26b&c=d%"));
        let (key, _) = api_read(
            "/repos/o/r/contents/x",
            vec![("ref".into(), "main".into())],
            &Variant::default(),
        )
        .unwrap();
        assert_eq!(key_text_path(key.as_str()).as_deref(), Some("/repos/o/r/contents/x"));
        assert_eq!(key_text_path("nope:x=1"), None);
        assert_eq!(key_text_path("runners:"), None);
        assert_eq!(key_text_path("no colon"), None);
    }

    #[test]
    fn scopes_stop_at_segment_boundaries_and_ignore_case() {
        let runs = PathScope::tree("/repos/o/r/actions/runs");
        assert!(runs.covers("/repos/o/r/actions/runs"));
        assert!(runs.covers("/repos/O/R/actions/runs/5/jobs"));
        assert!(!runs.covers("/repos/o/r/actions/runsx"));
        assert!(!runs.covers("/repos/o/r2/actions/runs"));
        assert!(!runs.covers("/repos/o/r/actions"));
        let repo = PathScope::exact("/repos/o/r");
        assert!(repo.covers("/repos/O/r"));
        assert!(!repo.covers("/repos/o/r/issues"));
        assert!(PathScope::tree("/repos/o/r/").covers("/repos/o/r/issues"));
        let key = tool_key("gh_list_workflow_runs", json!({"repo": "O/R", "status": "queued"}));
        assert!(runs.covers_key_text(key.as_str()));
        assert!(!PathScope::tree("/repos/o/r/issues").covers_key_text(key.as_str()));
        assert!(any_covers_key_text(&[repo, runs], key.as_str()));
    }
}
