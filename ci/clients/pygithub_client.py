#!/usr/bin/env python3
"""PyGithub 2.x against a GitHub API base URL; prints a transcript of what it read.

Usage: pygithub_client.py BASE_URL TOKEN reads|all

`reads` makes only cacheable GETs; `all` adds what a cache must pass through
(a secondary rate limit, GraphQL) and writes (create an issue, comment,
label) with read-backs. Every occurrence of BASE_URL in the output is
written `{BASE}`, so a run straight against the fake GitHub and a run through
a proxy print the same text when the proxy is faithful. The exact numbers of
remaining quota are not printed (a cache spends less of it).

PyGithub's own pacing (0.25 s between requests) and retries are switched off:
a retry would hide an error the transcript should show.
"""
import sys

from github import Auth, Github, GithubException

BASE, TOKEN, PHASE = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
CAP = 2000  # items; a list longer than this is a client looping, not data


def out(key, value):
    print(f"{key}: {str(value).replace(BASE, '{BASE}')}", flush=True)


def gh(**kw):
    return Github(base_url=BASE, auth=Auth.Token(TOKEN), retry=None, seconds_between_requests=0,
                  seconds_between_writes=0, **kw)


def take(paginated):
    """Up to CAP items of a PaginatedList (a proxy that loops must not hang the gate)."""
    items = []
    for item in paginated:
        items.append(item)
        if len(items) > CAP:
            break
    return items


def numbers(items):
    return " ".join(str(i) for i in items)


def listing(label, paginated, show):
    """Prints a list's totalCount, how many items iterating it gives, and
    `show(item)` of each; returns the items."""
    out(f"{label}.totalCount", paginated.totalCount)
    items = take(paginated)
    out(f"{label}.count", len(items))
    out(f"{label}.items", numbers(show(i) for i in items))
    return items


def attempt(label, fn):
    """Runs one step; a client exception becomes a transcript line, not a crash."""
    try:
        fn()
    except GithubException as e:
        msg = e.data.get("message") if isinstance(e.data, dict) else e.data
        out(label, f"{type(e).__name__} status={e.status} retry-after={(e.headers or {}).get('retry-after')} "
                   f"message={msg}")
    except Exception as e:  # noqa: BLE001 - the transcript records any client failure
        out(label, f"{type(e).__name__}: {e}")


def reads(g):
    attempt("user", lambda: out("user.login", g.get_user().login))
    repo = None

    def get_repo():
        nonlocal repo
        repo = g.get_repo("octo/hello")
        for f in ("full_name", "id", "default_branch", "stargazers_count", "open_issues_count", "url", "html_url",
                  "issues_url", "comments_url"):
            out(f"repo.{f}", getattr(repo, f))
        out("repo.last_modified", repo.last_modified)
    attempt("repo", get_repo)
    if repo is None:
        return

    def issues():
        pl = repo.get_issues()
        listing("issues", pl, lambda i: i.number)
        out("issues.reversed.first5", numbers(i.number for i in take(pl.reversed)[:5]))
        out("issues.page2", numbers(i.number for i in pl.get_page(2)))
        out("issues.closed.totalCount", repo.get_issues(state="closed").totalCount)
    attempt("issues", issues)

    def issue_nav():
        issue = repo.get_issue(1)
        out("issue1.title", issue.title)
        out("issue1.comments", issue.comments)
        out("issue12.labels", [lab.name for lab in repo.get_issue(12).labels])
        cs = listing("issue1.comments", issue.get_comments(), lambda c: c.id)
        out("issue1.comments.first", f"{cs[0].id} {cs[0].body!r} {cs[0].url}")
        out("issue1.comments.last", f"{cs[-1].id} {cs[-1].body!r}")
        out("issue1.repository", issue.repository.full_name)
        out("issue78.pull_request", repo.get_issue(78).pull_request.html_url)
    attempt("issue", issue_nav)

    def pull():
        p = repo.get_pull(76)
        out("pull76", f"{p.title} head={p.head.ref} base={p.base.ref} merged={p.merged} url={p.url}")
        out("pull76.issue", p.as_issue().title)
        out("pulls.numbers", numbers(x.number for x in take(repo.get_pulls())))
    attempt("pull", pull)

    def branches():
        listing("branches", repo.get_branches(), lambda b: b.name)
    attempt("branches", branches)

    def runs():
        items = listing("runs", repo.get_workflow_runs(), lambda r: r.id)
        out("runs.first", f"{items[0].id} {items[0].conclusion} {items[0].url}")
    attempt("runs", runs)

    def cursor_list():
        alerts = take(repo.get_dependabot_alerts())
        out("alerts.count", len(alerts))
        out("alerts.numbers", numbers(a.number for a in alerts))
    attempt("alerts", cursor_list)

    def per_page_cap():
        stars = take(gh(per_page=150).get_repo("octo/hello").get_stargazers())
        out("stargazers.per_page150.count", len(stars))
        out("stargazers.last", stars[-1].login)
    attempt("stargazers", per_page_cap)

    attempt("renamed", lambda: out("renamed.full_name", g.get_repo("octo/old-name").full_name))

    def contents():
        c = repo.get_contents("README.md")
        out("readme", f"{c.path} {c.sha} {c.decoded_content!r}")
    attempt("readme", contents)

    def conditional():
        r = g.get_repo("octo/hello")
        out("repo.etag.present", bool(r.etag))
        out("repo.update.changed", r.update())  # a conditional GET: False when answered 304
    attempt("conditional", conditional)

    def rate():
        remaining, limit = g.rate_limiting
        out("rate_limiting.limit", limit)
        out("rate_limiting.remaining_known", 0 <= remaining <= limit)
        out("rate_limiting.resettime_known", g.rate_limiting_resettime > 0)
        out("oauth_scopes", g.oauth_scopes)
    attempt("rate", rate)


def passthrough_and_writes(g):
    attempt("secondary", lambda: out("secondary", g.get_repo("octo/busy").full_name))

    def graphql():
        _, data = g.requester.graphql_query(
            "query($owner: String!, $name: String!) { viewer { login } "
            "repository(owner: $owner, name: $name) { nameWithOwner issues { totalCount } } }",
            {"owner": "octo", "name": "hello"})
        out("graphql", data)
    attempt("graphql", graphql)

    def writes():
        repo = g.get_repo("octo/hello")
        issue = repo.create_issue(title="Created by PyGithub", body="hello from the client gate")
        out("created", f"#{issue.number} {issue.state} {issue.url}")
        c = issue.create_comment("first comment")
        out("comment", f"{c.id} {c.body!r} {c.url}")
        issue.add_to_labels("bug", "client-gate")
        out("labels.after_add", [lab.name for lab in issue.get_labels()])
        again = repo.get_issue(issue.number)
        out("readback", f"#{again.number} comments={again.comments} labels={[lab.name for lab in again.labels]}")
        out("readback.comments", [x.body for x in take(again.get_comments())])
        out("readback.open_issues.totalCount", repo.get_issues(state="open").totalCount)
        out("readback.labels", [lab.name for lab in take(repo.get_labels())])
        issue.edit(state="closed")
        out("readback.closed", repo.get_issue(issue.number).state)
    attempt("writes", writes)


def main():
    g = gh()
    reads(g)
    if PHASE == "all":
        passthrough_and_writes(g)


if __name__ == "__main__":
    main()
