"""The fake GitHub's data: one user, one repository, and what clients can
write to it; deterministic, so two runs against a fresh (or reset) world read
the same bytes.

What exists (all under the owner `octo`, repository `hello`, id 1001):
- issues #1..#75 and pull requests #76..#78 (the issues list includes the
  pulls, as GitHub's does); issue #1 has 35 comments, issue #n has n % 4;
- labels bug, enhancement, question, documentation;
- 40 branches (`main`, `feature-001`..`feature-039`);
- 45 workflow runs (an object-wrapped list);
- 70 Dependabot alerts (a cursor-paginated list);
- 250 stargazers (more than one page even at the 100 cap);
- README.md in the contents API.
`octo/old-name` is the repository's former name (301), `octo/busy` always
answers a secondary rate limit.

Timestamps come from a logical clock, never the wall clock: seeded objects
are spread over 2026-01-01, and each write advances the clock by one second
from 2026-06-01T00:00:00Z.

The renderers take `base` (the API root URL, no trailing slash) and `media`
(the `param` of the requested media type: None, "raw", "text", "html",
"full") and return the JSON document GitHub would.
"""
import base64
import datetime
import hashlib
import html

OWNER = "octo"
REPO = "hello"
REPO_ID = 1001
OLD_NAME = "old-name"
BUSY_REPO = "busy"
FULL = f"{OWNER}/{REPO}"
PULLS = (76, 77, 78)

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
WRITE_EPOCH = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
README = "# hello\n\nA repository that exists only in the fake GitHub.\n"
LABEL_COLORS = {"bug": "d73a4a", "enhancement": "a2eeef", "question": "d876e3", "documentation": "0075ca"}


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sha(text):
    return hashlib.sha1(text.encode()).hexdigest()


def cursor(n):
    """The opaque cursor GitHub-style lists hand out for item `n`."""
    return base64.urlsafe_b64encode(f"cursor:v2:{n:04d}".encode()).decode().rstrip("=")


def uncursor(c):
    """The item number a cursor stands for, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not raw.startswith("cursor:v2:") or not raw[10:].isdigit():
        return None
    return int(raw[10:])


class World:
    """All mutable state; the server holds one and serialises access to it."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.writes = 0
        self.labels = {name: {"id": 7000 + i, "name": name, "color": c, "description": f"{name} label"}
                       for i, (name, c) in enumerate(LABEL_COLORS.items())}
        self.issues = {}
        self.comments = {}  # comment id -> comment record
        next_comment = 5_000_001
        for n in range(1, 79):
            t = EPOCH + datetime.timedelta(minutes=10 * n)
            labels = [name for name, on in (("bug", n % 3 == 0), ("enhancement", n % 4 == 0)) if on]
            self.issues[n] = {
                "number": n, "title": f"{'Pull request' if n in PULLS else 'Issue'} {n}",
                "body": f"Body of #{n}.\n\nIt mentions **#{max(1, n - 1)}** and `code`.",
                "state": "open", "labels": labels, "created": t, "updated": t, "is_pull": n in PULLS,
            }
            for k in range(35 if n == 1 else n % 4):
                self.comments[next_comment] = {"id": next_comment, "issue": n, "body": f"Comment {k + 1} on #{n}.",
                                               "created": t + datetime.timedelta(minutes=k + 1)}
                next_comment += 1
        self.next_comment = next_comment
        self.next_number = 79

    # -- the logical clock ------------------------------------------------
    def tick(self):
        self.writes += 1
        return WRITE_EPOCH + datetime.timedelta(seconds=self.writes)

    # -- writes ----------------------------------------------------------
    def create_issue(self, title, body, labels):
        n = self.next_number
        self.next_number += 1
        t = self.tick()
        for name in labels:
            self.ensure_label(name)
        self.issues[n] = {"number": n, "title": title, "body": body or "", "state": "open",
                          "labels": list(dict.fromkeys(labels)), "created": t, "updated": t, "is_pull": False}
        return n

    def edit_issue(self, n, changes):
        issue = self.issues[n]
        for key in ("title", "body", "state"):
            if key in changes:
                issue[key] = changes[key]
        if "labels" in changes:
            for name in changes["labels"]:
                self.ensure_label(name)
            issue["labels"] = list(dict.fromkeys(changes["labels"]))
        issue["updated"] = self.tick()

    def add_comment(self, n, body):
        cid = self.next_comment
        self.next_comment += 1
        t = self.tick()
        self.comments[cid] = {"id": cid, "issue": n, "body": body, "created": t}
        self.issues[n]["updated"] = t
        return cid

    def ensure_label(self, name):
        if name not in self.labels:
            self.labels[name] = {"id": 7000 + len(self.labels), "name": name, "color": "ededed", "description": None}

    def add_labels(self, n, names):
        for name in names:
            self.ensure_label(name)
        issue = self.issues[n]
        issue["labels"] = list(dict.fromkeys(issue["labels"] + list(names)))
        issue["updated"] = self.tick()

    def remove_label(self, n, name):
        issue = self.issues[n]
        issue["labels"].remove(name)
        issue["updated"] = self.tick()

    # -- queries ---------------------------------------------------------
    def issue_numbers(self, state, direction):
        nums = [n for n, i in self.issues.items() if state == "all" or i["state"] == state]
        return sorted(nums, reverse=direction != "asc")

    def comments_of(self, n):
        return [c for c in sorted(self.comments.values(), key=lambda c: c["id"]) if c["issue"] == n]

    # -- renderers -------------------------------------------------------
    @staticmethod
    def user(base, login="octo", uid=1):
        return {
            "login": login, "id": uid, "node_id": f"U_fake{uid}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
            "url": f"{base}/users/{login}", "html_url": f"{origin_of(base)}/{login}",
            "followers_url": f"{base}/users/{login}/followers", "repos_url": f"{base}/users/{login}/repos",
            "type": "User", "site_admin": False,
        }

    def repo(self, base):
        r = f"{base}/repos/{FULL}"
        t = iso(EPOCH)
        return {
            "id": REPO_ID, "node_id": "R_fake1001", "name": REPO, "full_name": FULL, "private": False,
            "owner": self.user(base), "html_url": f"{origin_of(base)}/{FULL}",
            "description": "The fake GitHub's only repository", "fork": False, "url": r,
            "issues_url": f"{r}/issues{{/number}}", "pulls_url": f"{r}/pulls{{/number}}",
            "comments_url": f"{r}/comments{{/number}}", "issue_comment_url": f"{r}/issues/comments{{/number}}",
            "labels_url": f"{r}/labels{{/name}}", "branches_url": f"{r}/branches{{/branch}}",
            "contents_url": f"{r}/contents/{{+path}}", "commits_url": f"{r}/commits{{/sha}}",
            "stargazers_url": f"{r}/stargazers", "events_url": f"{r}/events", "hooks_url": f"{r}/hooks",
            "created_at": t, "updated_at": iso(self.repo_updated()), "pushed_at": t,
            "homepage": None, "size": 108, "stargazers_count": 250, "watchers_count": 250,
            "language": "Rust", "has_issues": True, "forks_count": 0, "archived": False, "disabled": False,
            "open_issues_count": sum(1 for i in self.issues.values() if i["state"] == "open"),
            "visibility": "public", "default_branch": "main",
            "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True},
        }

    def repo_updated(self):
        return max(i["updated"] for i in self.issues.values())

    def label(self, base, name):
        lab = self.labels[name]
        return {"id": lab["id"], "node_id": f"LA_fake{lab['id']}", "url": f"{base}/repos/{FULL}/labels/{name}",
                "name": name, "color": lab["color"], "default": name in LABEL_COLORS,
                "description": lab["description"]}

    def issue(self, base, n, media=None):
        i = self.issues[n]
        r = f"{base}/repos/{FULL}"
        doc = {
            "url": f"{r}/issues/{n}", "repository_url": r, "labels_url": f"{r}/issues/{n}/labels{{/name}}",
            "comments_url": f"{r}/issues/{n}/comments", "events_url": f"{r}/issues/{n}/events",
            "html_url": f"{origin_of(base)}/{FULL}/{'pull' if i['is_pull'] else 'issues'}/{n}",
            "id": 100_000 + n, "node_id": f"I_fake{n}", "number": n, "title": i["title"],
            "user": self.user(base), "labels": [self.label(base, name) for name in i["labels"]],
            "state": i["state"], "locked": False, "assignee": None, "assignees": [], "milestone": None,
            "comments": len(self.comments_of(n)), "created_at": iso(i["created"]), "updated_at": iso(i["updated"]),
            "closed_at": iso(i["updated"]) if i["state"] == "closed" else None,
            "author_association": "OWNER", "state_reason": "completed" if i["state"] == "closed" else None,
        }
        if i["is_pull"]:
            doc["pull_request"] = {"url": f"{r}/pulls/{n}", "html_url": f"{origin_of(base)}/{FULL}/pull/{n}",
                                   "diff_url": f"{origin_of(base)}/{FULL}/pull/{n}.diff",
                                   "patch_url": f"{origin_of(base)}/{FULL}/pull/{n}.patch"}
        add_body(doc, i["body"], media)
        return doc

    def comment(self, base, cid, media=None):
        c = self.comments[cid]
        r = f"{base}/repos/{FULL}"
        doc = {"url": f"{r}/issues/comments/{cid}", "html_url": f"{origin_of(base)}/{FULL}/issues/{c['issue']}#issuecomment-{cid}",
               "issue_url": f"{r}/issues/{c['issue']}", "id": cid, "node_id": f"IC_fake{cid}",
               "user": self.user(base), "created_at": iso(c["created"]), "updated_at": iso(c["created"]),
               "author_association": "OWNER"}
        add_body(doc, c["body"], media)
        return doc

    def pull(self, base, n, media=None):
        i = self.issues[n]
        r = f"{base}/repos/{FULL}"
        repo = self.repo(base)
        head_sha = sha(f"head-{n}")
        doc = {
            "url": f"{r}/pulls/{n}", "id": 200_000 + n, "node_id": f"PR_fake{n}",
            "html_url": f"{origin_of(base)}/{FULL}/pull/{n}", "diff_url": f"{origin_of(base)}/{FULL}/pull/{n}.diff",
            "patch_url": f"{origin_of(base)}/{FULL}/pull/{n}.patch", "issue_url": f"{r}/issues/{n}",
            "commits_url": f"{r}/pulls/{n}/commits", "review_comments_url": f"{r}/pulls/{n}/comments",
            "comments_url": f"{r}/issues/{n}/comments", "statuses_url": f"{r}/statuses/{head_sha}",
            "number": n, "state": i["state"], "locked": False, "title": i["title"], "user": self.user(base),
            "created_at": iso(i["created"]), "updated_at": iso(i["updated"]), "closed_at": None, "merged_at": None,
            "merge_commit_sha": None, "draft": False,
            "head": {"label": f"octo:feature-{n:03d}", "ref": f"feature-{n:03d}", "sha": head_sha,
                     "user": self.user(base), "repo": repo},
            "base": {"label": "octo:main", "ref": "main", "sha": sha("main"), "user": self.user(base), "repo": repo},
            "merged": False, "mergeable": True, "comments": len(self.comments_of(n)), "review_comments": 0,
            "commits": 1, "additions": 2, "deletions": 1, "changed_files": 1,
            "author_association": "OWNER",
        }
        add_body(doc, i["body"], media)
        return doc

    @staticmethod
    def diff(n):
        return (f"diff --git a/src/lib{n}.rs b/src/lib{n}.rs\nindex 1111111..2222222 100644\n"
                f"--- a/src/lib{n}.rs\n+++ b/src/lib{n}.rs\n@@ -1 +1,2 @@\n-fn old() {{}}\n+fn new() {{}}\n+fn more() {{}}\n")

    def patch(self, n):
        return (f"From {sha(f'head-{n}')} Mon Sep 17 00:00:00 2001\nFrom: octo <octo@example.invalid>\n"
                f"Date: Thu, 1 Jan 2026 00:00:00 +0000\nSubject: [PATCH] {self.issues[n]['title']}\n\n---\n"
                + self.diff(n) + "--\n2.43.0\n")

    @staticmethod
    def branches():
        return ["main"] + [f"feature-{k:03d}" for k in range(1, 40)]

    @staticmethod
    def branch(base, name):
        s = sha(name)
        return {"name": name, "commit": {"sha": s, "url": f"{base}/repos/{FULL}/commits/{s}"}, "protected": name == "main"}

    def run(self, base, k):
        rid = 9000 + k
        r = f"{base}/repos/{FULL}"
        t = iso(EPOCH + datetime.timedelta(hours=k))
        return {
            "id": rid, "name": "CI", "node_id": f"WFR_fake{rid}", "head_branch": "main", "head_sha": sha(f"run-{k}"),
            "path": ".github/workflows/ci.yml", "display_title": f"Commit {k}", "run_number": k, "event": "push",
            "status": "completed", "conclusion": "success" if k % 3 else "failure", "workflow_id": 77,
            "url": f"{r}/actions/runs/{rid}", "html_url": f"{origin_of(base)}/{FULL}/actions/runs/{rid}",
            "jobs_url": f"{r}/actions/runs/{rid}/jobs", "logs_url": f"{r}/actions/runs/{rid}/logs",
            "workflow_url": f"{r}/actions/workflows/77", "created_at": t, "updated_at": t, "run_attempt": 1,
            "run_started_at": t, "repository": {"id": REPO_ID, "name": REPO, "full_name": FULL, "url": r},
        }

    @staticmethod
    def run_ids():
        return list(range(45, 0, -1))  # newest first

    @staticmethod
    def runners():
        """The repository's self-hosted runners, as GET .../actions/runners lists them."""
        def labels(*names):
            return [{"id": i + 1, "name": n, "type": "read-only" if i < 2 else "custom"} for i, n in enumerate(names)]
        return [
            {"id": 21, "name": "build-1", "os": "Linux", "status": "online", "busy": True,
             "labels": labels("self-hosted", "Linux", "x64")},
            {"id": 22, "name": "build-2", "os": "Linux", "status": "online", "busy": False,
             "labels": labels("self-hosted", "Linux", "x64")},
            {"id": 23, "name": "mac-1", "os": "macOS", "status": "offline", "busy": False,
             "labels": labels("self-hosted", "macOS", "arm64")},
        ]

    @staticmethod
    def alert(base, k):
        r = f"{base}/repos/{FULL}"
        t = iso(EPOCH + datetime.timedelta(hours=k))
        ghsa = f"GHSA-fake-{k:04d}-xxxx"
        sev = ("low", "medium", "high", "critical")[k % 4]
        advisory = {"ghsa_id": ghsa, "cve_id": None, "summary": f"Advisory {k}", "description": f"Advisory {k}.",
                    "severity": sev, "identifiers": [{"type": "GHSA", "value": ghsa}], "references": [],
                    "published_at": t, "updated_at": t, "withdrawn_at": None, "vulnerabilities": []}
        return {
            "number": k, "state": "open",
            "dependency": {"package": {"ecosystem": "npm", "name": f"pkg-{k:02d}"}, "manifest_path": "package-lock.json",
                           "scope": "runtime"},
            "security_advisory": advisory,
            "security_vulnerability": {"package": {"ecosystem": "npm", "name": f"pkg-{k:02d}"}, "severity": sev,
                                       "vulnerable_version_range": "< 1.0.0",
                                       "first_patched_version": {"identifier": "1.0.0"}},
            "url": f"{r}/dependabot/alerts/{k}", "html_url": f"{origin_of(base)}/{FULL}/security/dependabot/{k}",
            "created_at": t, "updated_at": t, "dismissed_at": None, "dismissed_by": None, "dismissed_reason": None,
            "dismissed_comment": None, "fixed_at": None, "auto_dismissed_at": None,
        }

    @staticmethod
    def alert_numbers():
        return list(range(1, 71))

    def stargazer(self, base, k):
        return self.user(base, f"stargazer-{k:03d}", 10_000 + k)

    @staticmethod
    def contents(base, path):
        r = f"{base}/repos/{FULL}"
        data = README.encode()
        return {"type": "file", "encoding": "base64", "size": len(data), "name": path, "path": path,
                "content": base64.encodebytes(data).decode(), "sha": sha(README),
                "url": f"{r}/contents/{path}?ref=main", "git_url": f"{r}/git/blobs/{sha(README)}",
                "html_url": f"{origin_of(base)}/{FULL}/blob/main/{path}",
                "download_url": f"{origin_of(base)}/raw/{FULL}/main/{path}",
                "_links": {"self": f"{r}/contents/{path}?ref=main", "git": f"{r}/git/blobs/{sha(README)}",
                           "html": f"{origin_of(base)}/{FULL}/blob/main/{path}"}}


def origin_of(base):
    """Where the fake's web pages (html_url) live: the API root, as on a
    GitHub Enterprise Server whose API sits at the root of its host."""
    return base


def add_body(doc, body, media):
    """Adds `body`, `body_text` and/or `body_html` as the media type asks."""
    if media in (None, "raw", "full", "v3"):
        doc["body"] = body
    if media in ("text", "full"):
        doc["body_text"] = body.replace("**", "").replace("`", "")
    if media in ("html", "full"):
        paras = "".join(f"<p>{html.escape(p)}</p>\n" for p in body.split("\n\n"))
        doc["body_html"] = paras
