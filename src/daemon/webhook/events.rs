//! The event table: which cached reads a GitHub webhook event makes stale.
//!
//! [`map`] is pure (event name and body in, invalidations out), so it is
//! fuzzed (`fuzz/fuzz_targets/webhook_events.rs`) and tested without a
//! daemon. docs/webhooks.md lists the same table for operators; a test
//! below checks that both name the same events.
//!
//! Scopes are as narrow as the key scheme allows: a path scope
//! ([`PathScope`]) names what changed under `/repos/<o>/<r>/…` (or an
//! owner's lists), and catches every tool and `/github/` key reading it
//! ([`key_path`](crate::daemon::key_path)). Where an event can change what
//! the daemon's token may read at all (collaborators, teams, installations,
//! a rename or transfer), the scope is the whole repository. Anything an
//! event does not list stays until its TTL.
//!
//! Invariants: a known event yields its scopes or a [`Malformed`] naming
//! the missing or bad field, never a panic; every name put in a scope is a
//! valid GitHub owner or repository name (so a signed but hostile payload
//! cannot widen a scope with `..` or `/`); an unknown event is
//! [`Mapped::Ignored`] without its body being parsed.

use serde_json::Value;

use crate::daemon::key_path::PathScope;
use crate::daemon::tools::{name_ok as valid_name, Invalidate};

/// What an event makes stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A known event and the invalidations it needs (none for `ping`).
    Known(Vec<Invalidate>),
    /// An event not in the table: nothing to do.
    Ignored,
}

/// A known event whose payload lacks a field the table needs, or has a bad
/// one: answered 400 with this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Every event in the table, in the order of docs/webhooks.md.
pub const EVENTS: &[&str] = &[
    "ping",
    "push",
    "create",
    "delete",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "issues",
    "issue_comment",
    "commit_comment",
    "label",
    "milestone",
    "workflow_run",
    "workflow_job",
    "workflow_dispatch",
    "repository_dispatch",
    "deployment_review",
    "check_run",
    "check_suite",
    "status",
    "release",
    "deployment",
    "deployment_status",
    "branch_protection_rule",
    "page_build",
    "deploy_key",
    "meta",
    "code_scanning_alert",
    "dependabot_alert",
    "secret_scanning_alert",
    "repository_vulnerability_alert",
    "security_advisory",
    "star",
    "watch",
    "fork",
    "public",
    "repository",
    "repository_import",
    "member",
    "team_add",
    "team",
    "membership",
    "organization",
    "org_block",
    "package",
    "installation",
    "installation_repositories",
];

/// What the paths of a repository's code depend on: a push, a new or
/// deleted branch or tag.
const CODE: &[&str] = &[
    "commits", "branches", "contents", "readme", "git", "compare", "tags", "tarball", "zipball",
];

/// Maps event `event` (the `X-GitHub-Event` header) with payload `body`
/// (JSON) to what it makes stale (module docs).
pub fn map(event: &str, body: &[u8]) -> Result<Mapped, Malformed> {
    if !EVENTS.contains(&event) {
        return Ok(Mapped::Ignored);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("{event} payload is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Malformed(format!("{event} payload is not a JSON object")));
    }
    let p = Payload { event, v: &value };
    let mut out = Out::default();
    match event {
        "ping" => {}
        "push" => {
            let r = p.repo()?;
            out.repo_trees(&r, CODE);
            out.repo_trees(
                &r,
                &["stats", "contributors", "languages", "activity", "community", "pulls"],
            );
            out.repo_object(&r);
        }
        "create" | "delete" => out.repo_trees(&p.repo()?, CODE),
        "pull_request" => {
            let r = p.repo()?;
            out.repo_trees(&r, &["pulls", "issues"]);
            out.repo_object(&r);
        }
        "pull_request_review" | "pull_request_review_comment" | "pull_request_review_thread" => {
            out.repo_trees(&p.repo()?, &["pulls"])
        }
        "issues" => {
            let r = p.repo()?;
            out.repo_trees(&r, &["issues", "milestones"]);
            out.repo_object(&r);
            if p.str(&["action"]) == Some("transferred") {
                let to = p.repo_at(&["changes", "new_repository", "full_name"])?;
                out.repo_trees(&to, &["issues", "milestones"]);
                out.repo_object(&to);
            }
        }
        "issue_comment" => {
            let r = p.repo()?;
            out.repo_trees(&r, &["issues"]);
            if p.v.pointer("/issue/pull_request").is_some() {
                out.repo_trees(&r, &["pulls"]);
            }
        }
        "commit_comment" => {
            let r = p.repo()?;
            out.repo_trees(&r, &["comments"]);
            match p.str(&["comment", "commit_id"]).filter(|s| is_sha(s)) {
                Some(sha) => out.repo_trees(&r, &[&format!("commits/{sha}")]),
                None => out.repo_trees(&r, &["commits"]),
            }
        }
        "label" | "milestone" => {
            let r = p.repo()?;
            out.repo_trees(
                &r,
                &[
                    if event == "label" { "labels" } else { "milestones" },
                    "issues",
                    "pulls",
                ],
            );
        }
        "workflow_run" => {
            let r = p.repo()?;
            out.repo_trees(
                &r,
                &[
                    "actions/runs",
                    "actions/workflows",
                    "actions/jobs",
                    "actions/runners",
                    "actions/artifacts",
                    "actions/caches",
                ],
            );
            if let Some(sha) = p.str(&["workflow_run", "head_sha"]).filter(|s| is_sha(s)) {
                out.repo_trees(&r, &[&format!("commits/{sha}")]);
            }
            out.org_runners(&p)?;
        }
        "workflow_job" => {
            out.repo_trees(&p.repo()?, &["actions/runs", "actions/jobs", "actions/runners"]);
            out.org_runners(&p)?;
        }
        "workflow_dispatch" => out.repo_trees(&p.repo()?, &["actions/runs", "actions/workflows"]),
        "repository_dispatch" | "deployment_review" => out.repo_trees(&p.repo()?, &["actions/runs"]),
        "check_run" | "check_suite" => {
            let r = p.repo()?;
            out.repo_trees(&r, &["check-runs", "check-suites"]);
            match p.str(&[event, "head_sha"]).filter(|s| is_sha(s)) {
                Some(sha) => out.repo_trees(&r, &[&format!("commits/{sha}")]),
                None => out.repo_trees(&r, &["commits"]),
            }
        }
        "status" => {
            let r = p.repo()?;
            match p.str(&["sha"]).filter(|s| is_sha(s)) {
                Some(sha) => out.repo_trees(&r, &[&format!("commits/{sha}"), &format!("statuses/{sha}")]),
                None => out.repo_trees(&r, &["commits", "statuses"]),
            }
        }
        "release" => out.repo_trees(&p.repo()?, &["releases", "tags", "git"]),
        "deployment" | "deployment_status" => out.repo_trees(&p.repo()?, &["deployments", "environments"]),
        "branch_protection_rule" => out.repo_trees(&p.repo()?, &["branches", "rules", "rulesets"]),
        "page_build" => out.repo_trees(&p.repo()?, &["pages"]),
        "deploy_key" => out.repo_trees(&p.repo()?, &["keys"]),
        "meta" => match (p.opt_repo()?, p.opt_login(&["organization", "login"])?) {
            (Some(r), _) => out.repo_trees(&r, &["hooks"]),
            (None, Some(org)) => out.tree(format!("/orgs/{org}/hooks")),
            (None, None) => return Err(p.missing("repository.full_name or organization.login")),
        },
        "code_scanning_alert" => out.repo_trees(&p.repo()?, &["code-scanning"]),
        "dependabot_alert" => out.repo_trees(&p.repo()?, &["dependabot"]),
        "secret_scanning_alert" => out.repo_trees(&p.repo()?, &["secret-scanning"]),
        "repository_vulnerability_alert" => out.repo_trees(&p.repo()?, &["dependabot", "vulnerability-alerts"]),
        "security_advisory" => out.tree("/advisories".to_string()),
        "star" | "watch" => {
            let r = p.repo()?;
            out.repo_object(&r);
            out.repo_trees(&r, &["stargazers"]);
            out.tree("/user/starred".to_string());
            // A bot's login (`name[bot]`) names no /users/ path: skipped.
            if let Some(user) = p.str(&["sender", "login"]).filter(|u| valid_name(u)) {
                out.tree(format!("/users/{user}/starred"));
            }
        }
        "fork" => {
            let r = p.repo()?;
            out.repo_object(&r);
            out.repo_trees(&r, &["forks"]);
            if let Some(owner) = p.opt_login(&["forkee", "owner", "login"])? {
                out.owner_lists(&owner);
            }
        }
        "public" => {
            let r = p.repo()?;
            out.repo_object(&r);
            out.owner_lists(&r.owner);
        }
        "repository" => repository(&p, &mut out)?,
        "repository_import" => out.whole_repo(&p.repo()?),
        "member" => {
            out.whole_repo(&p.repo()?);
            out.tree("/user/repos".to_string());
            out.tree("/user/repository_invitations".to_string());
        }
        "team_add" => {
            out.whole_repo(&p.repo()?);
            out.tree(format!("/orgs/{}/teams", p.org()?));
        }
        "team" => {
            out.tree(format!("/orgs/{}/teams", p.org()?));
            out.tree("/user/teams".to_string());
            if let Some(r) = p.opt_repo()? {
                out.whole_repo(&r);
            }
        }
        "membership" => {
            let org = p.org()?;
            for area in ["teams", "members", "memberships"] {
                out.tree(format!("/orgs/{org}/{area}"));
            }
            out.tree("/user/teams".to_string());
            out.tree("/user/memberships".to_string());
        }
        "organization" => organization(&p, &mut out)?,
        "org_block" => {
            out.tree(format!("/orgs/{}/blocks", p.org()?));
            out.tree("/user/blocks".to_string());
        }
        "package" => {
            match p.opt_login(&["organization", "login"])? {
                Some(org) => out.tree(format!("/orgs/{org}/packages")),
                None => out.tree(format!("/users/{}/packages", p.repo()?.owner)),
            }
            out.tree("/user/packages".to_string());
        }
        "installation" | "installation_repositories" => installation(&p, &mut out)?,
        _ => unreachable!("every name in EVENTS has an arm"),
    }
    Ok(Mapped::Known(out.finish()))
}

/// `repository`: renamed and transferred drop both the old and the new
/// name; created, deleted and the visibility changes also the owner's lists.
fn repository(p: &Payload<'_>, out: &mut Out) -> Result<(), Malformed> {
    let r = p.repo()?;
    out.owner_lists(&r.owner);
    match p.str(&["action"]) {
        Some("renamed") => {
            let old_name = p.name_at(&["changes", "repository", "name", "from"])?;
            out.whole_repo(&r);
            out.whole_repo(&Repo {
                full: format!("{}/{old_name}", r.owner),
                owner: r.owner.clone(),
            });
        }
        Some("transferred") => {
            let old_owner = match p.opt_login(&["changes", "owner", "from", "user", "login"])? {
                Some(o) => o,
                None => p
                    .opt_login(&["changes", "owner", "from", "organization", "login"])?
                    .ok_or_else(|| {
                        p.missing("changes.owner.from.user.login or changes.owner.from.organization.login")
                    })?,
            };
            let name = r.full.split_once('/').map_or("", |(_, n)| n).to_string();
            out.whole_repo(&r);
            out.owner_lists(&old_owner);
            out.whole_repo(&Repo {
                full: format!("{old_owner}/{name}"),
                owner: old_owner,
            });
        }
        Some("deleted") => out.whole_repo(&r),
        _ => out.repo_object(&r),
    }
    Ok(())
}

/// `organization`: membership actions drop the member lists; renamed and
/// deleted drop everything of the organization (and of its old name).
fn organization(p: &Payload<'_>, out: &mut Out) -> Result<(), Malformed> {
    let org = p.org()?;
    match p.str(&["action"]) {
        Some("renamed" | "deleted") => {
            let mut names = vec![org];
            if let Some(old) = p.opt_login(&["changes", "login", "from"])? {
                names.push(old);
            }
            for name in names {
                for root in ["orgs", "users", "repos"] {
                    out.tree(format!("/{root}/{name}"));
                }
            }
            for area in ["orgs", "memberships", "repos", "teams"] {
                out.tree(format!("/user/{area}"));
            }
        }
        _ => {
            for area in [
                "members",
                "memberships",
                "invitations",
                "public_members",
                "outside_collaborators",
            ] {
                out.tree(format!("/orgs/{org}/{area}"));
            }
            out.tree("/user/memberships".to_string());
            out.tree("/user/orgs".to_string());
        }
    }
    Ok(())
}

/// `installation` and `installation_repositories`: what the app may read
/// changed, so every repository named drops whole; an `installation` event
/// that names none (an installation on all repositories) drops everything.
fn installation(p: &Payload<'_>, out: &mut Out) -> Result<(), Malformed> {
    let lists: &[&str] = if p.event == "installation" {
        &["repositories"]
    } else {
        &["repositories_added", "repositories_removed"]
    };
    let mut named = 0;
    for list in lists {
        match p.v.get(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let full = item
                        .get("full_name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| p.missing(&format!("{list}[{i}].full_name")))?;
                    out.whole_repo(&parse_repo(p, &format!("{list}[{i}].full_name"), full)?);
                    named += 1;
                }
            }
            Some(_) => return Err(Malformed(format!("{} payload: {list} is not an array", p.event))),
        }
    }
    if named == 0 && p.event == "installation" {
        out.everything = true;
    }
    out.tree("/installation".to_string());
    out.tree("/user/installations".to_string());
    Ok(())
}

/// A repository named by a payload.
#[derive(Clone, Debug)]
struct Repo {
    /// `owner/name`.
    full: String,
    owner: String,
}

/// The scopes collected for one event.
#[derive(Default)]
struct Out {
    paths: Vec<PathScope>,
    repos: Vec<String>,
    everything: bool,
}

impl Out {
    fn tree(&mut self, path: String) {
        self.paths.push(PathScope::tree(path));
    }

    fn repo_trees(&mut self, r: &Repo, areas: &[&str]) {
        for area in areas {
            self.tree(format!("/repos/{}/{area}", r.full));
        }
    }

    /// The repository object itself (`GET /repos/o/r`: counts, dates,
    /// settings), not what is under it.
    fn repo_object(&mut self, r: &Repo) {
        self.paths.push(PathScope::exact(format!("/repos/{}", r.full)));
    }

    fn whole_repo(&mut self, r: &Repo) {
        self.repos.push(r.full.clone());
    }

    /// The lists of repositories that `owner`'s repositories appear in.
    fn owner_lists(&mut self, owner: &str) {
        self.tree(format!("/users/{owner}/repos"));
        self.tree(format!("/orgs/{owner}/repos"));
        self.tree("/user/repos".to_string());
    }

    /// An organisation's runners (a job's runner may be one of them).
    fn org_runners(&mut self, p: &Payload<'_>) -> Result<(), Malformed> {
        if let Some(org) = p.opt_login(&["organization", "login"])? {
            self.tree(format!("/orgs/{org}/actions/runners"));
        }
        Ok(())
    }

    fn finish(self) -> Vec<Invalidate> {
        if self.everything {
            return vec![Invalidate::All];
        }
        let mut out: Vec<Invalidate> = Vec::new();
        for repo in self.repos {
            let what = Invalidate::Repository(repo);
            if !out.contains(&what) {
                out.push(what);
            }
        }
        let mut paths: Vec<PathScope> = Vec::with_capacity(self.paths.len());
        for scope in self.paths {
            if !paths.contains(&scope) {
                paths.push(scope);
            }
        }
        if !paths.is_empty() {
            out.push(Invalidate::Paths(paths));
        }
        out
    }
}

/// Typed reads of one payload, with errors that name the field.
struct Payload<'a> {
    event: &'a str,
    v: &'a Value,
}

impl Payload<'_> {
    fn str(&self, path: &[&str]) -> Option<&str> {
        path.iter().try_fold(self.v, |v, k| v.get(k))?.as_str()
    }

    fn missing(&self, field: &str) -> Malformed {
        Malformed(format!("{} payload has no {field}", self.event))
    }

    /// `repository.full_name`, required.
    fn repo(&self) -> Result<Repo, Malformed> {
        self.repo_at(&["repository", "full_name"])
    }

    /// `repository.full_name` when the payload has a `repository`.
    fn opt_repo(&self) -> Result<Option<Repo>, Malformed> {
        match self.v.get("repository") {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.repo().map(Some),
        }
    }

    fn repo_at(&self, path: &[&str]) -> Result<Repo, Malformed> {
        let field = path.join(".");
        let full = self.str(path).ok_or_else(|| self.missing(&field))?;
        parse_repo(self, &field, full)
    }

    /// A repository name (no owner) at `path`, required.
    fn name_at(&self, path: &[&str]) -> Result<String, Malformed> {
        let field = path.join(".");
        let name = self.str(path).ok_or_else(|| self.missing(&field))?;
        if !valid_name(name) {
            return Err(Malformed(format!(
                "{} payload: {field} {name:?} is not a valid name",
                self.event
            )));
        }
        Ok(name.to_string())
    }

    /// `organization.login`, required.
    fn org(&self) -> Result<String, Malformed> {
        self.opt_login(&["organization", "login"])?
            .ok_or_else(|| self.missing("organization.login"))
    }

    /// A login at `path` when present; a present but invalid one is an
    /// error.
    fn opt_login(&self, path: &[&str]) -> Result<Option<String>, Malformed> {
        let Some(v) = path.iter().try_fold(self.v, |v, k| v.get(k)) else {
            return Ok(None);
        };
        match v {
            Value::Null => Ok(None),
            Value::String(s) if valid_name(s) => Ok(Some(s.clone())),
            other => Err(Malformed(format!(
                "{} payload: {} {other} is not a valid login",
                self.event,
                path.join(".")
            ))),
        }
    }
}

fn parse_repo(p: &Payload<'_>, field: &str, full: &str) -> Result<Repo, Malformed> {
    match full.split_once('/') {
        Some((owner, name)) if valid_name(owner) && valid_name(name) => Ok(Repo {
            full: full.to_string(),
            owner: owner.to_string(),
        }),
        _ => Err(Malformed(format!(
            "{} payload: {field} {full:?} is not owner/name",
            p.event
        ))),
    }
}

/// A commit SHA: 40 (SHA-1) or 64 (SHA-256) hex digits.
fn is_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known(event: &str, body: Value) -> Vec<Invalidate> {
        match map(event, body.to_string().as_bytes()) {
            Ok(Mapped::Known(v)) => v,
            other => panic!("{event}: {other:?}"),
        }
    }

    fn paths(v: &[Invalidate]) -> Vec<String> {
        v.iter()
            .flat_map(|i| match i {
                Invalidate::Paths(p) => crate::daemon::key_path::scopes_text(p),
                other => vec![format!("{other:?}")],
            })
            .collect()
    }

    fn repo(full: &str) -> Value {
        json!({"full_name": full, "owner": {"login": full.split('/').next().unwrap()}})
    }

    #[test]
    fn a_workflow_job_drops_only_that_repositorys_runs_jobs_and_runners() {
        let got = known(
            "workflow_job",
            json!({"action": "completed", "repository": repo("o/r"), "workflow_job": {"id": 1}}),
        );
        assert_eq!(
            paths(&got),
            [
                "/repos/o/r/actions/runs/**",
                "/repos/o/r/actions/jobs/**",
                "/repos/o/r/actions/runners/**"
            ]
        );
        let with_org = known(
            "workflow_job",
            json!({"repository": repo("o/r"), "organization": {"login": "o"}}),
        );
        assert!(paths(&with_org).contains(&"/orgs/o/actions/runners/**".to_string()));
    }

    #[test]
    fn renames_and_transfers_drop_both_names() {
        let renamed = known(
            "repository",
            json!({"action": "renamed", "repository": repo("o/new"), "changes": {"repository": {"name": {"from": "old"}}}}),
        );
        assert!(renamed.contains(&Invalidate::Repository("o/new".into())));
        assert!(renamed.contains(&Invalidate::Repository("o/old".into())));
        let moved = known(
            "repository",
            json!({"action": "transferred", "repository": repo("b/r"), "changes": {"owner": {"from": {"organization": {"login": "a"}}}}}),
        );
        assert!(moved.contains(&Invalidate::Repository("b/r".into())));
        assert!(moved.contains(&Invalidate::Repository("a/r".into())));
        assert!(paths(&moved).contains(&"/orgs/a/repos/**".to_string()));
        let deleted = known("repository", json!({"action": "deleted", "repository": repo("o/r")}));
        assert!(deleted.contains(&Invalidate::Repository("o/r".into())));
    }

    #[test]
    fn ping_is_known_and_drops_nothing_and_unknown_events_are_not_parsed() {
        assert_eq!(map("ping", br#"{"zen": "x"}"#), Ok(Mapped::Known(vec![])));
        assert_eq!(map("sponsorship", b"not json at all"), Ok(Mapped::Ignored));
        assert_eq!(map("", b""), Ok(Mapped::Ignored));
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let cases: [(&str, &[u8], &str); 7] = [
            ("push", b"{", "not JSON"),
            ("push", b"[1]", "not a JSON object"),
            ("push", b"{}", "repository.full_name"),
            ("push", br#"{"repository": {"full_name": "../x"}}"#, "is not owner/name"),
            (
                "push",
                br#"{"repository": {"full_name": "o/r/extra"}}"#,
                "is not owner/name",
            ),
            (
                "repository",
                br#"{"action": "renamed", "repository": {"full_name": "o/r"}}"#,
                "changes.repository.name.from",
            ),
            (
                "membership",
                br#"{"organization": {"login": "a/b"}}"#,
                "not a valid login",
            ),
        ];
        for (event, body, needle) in cases {
            match map(event, body) {
                Err(Malformed(m)) => assert!(m.contains(needle), "{event}: {m}"),
                other => panic!("{event} {:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn an_installation_on_all_repositories_drops_everything() {
        assert_eq!(
            known(
                "installation",
                json!({"action": "new_permissions_accepted", "installation": {}})
            ),
            vec![Invalidate::All]
        );
        let some = known(
            "installation_repositories",
            json!({"repositories_added": [{"full_name": "o/a"}], "repositories_removed": [{"full_name": "o/b"}]}),
        );
        assert!(some.contains(&Invalidate::Repository("o/a".into())));
        assert!(some.contains(&Invalidate::Repository("o/b".into())));
    }

    #[test]
    fn every_event_of_the_table_is_in_the_docs() {
        let docs = include_str!("../../../docs/webhooks.md");
        let first_cells: Vec<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .map(|l| l.split(" |").next().unwrap_or_default())
            .collect();
        for event in EVENTS {
            let row = format!("`{event}`");
            assert!(
                first_cells.iter().any(|c| format!("`{c}").contains(&row)),
                "docs/webhooks.md has no row for {event}"
            );
        }
    }
}
