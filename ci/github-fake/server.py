#!/usr/bin/env python3
"""A fake api.github.com on 127.0.0.1 for the real-client gate (ci/clients-check).

Usage: server.py [--port N] [--port-file F] [--base-url URL]
Binds 127.0.0.1:N (0 = any free port), prints the bound port on its first
stdout line and writes it to F. Python 3 standard library only; never reaches
the internet. The data are in world.py (deterministic).

What it does as GitHub does (header names and shapes as api.github.com sends
them):
- 401 without `Authorization: token|Bearer <non-empty>`.
- Page-numbered lists: `per_page` (default 30, capped at 100) and `page`;
  `Link` with every rel that applies, in GitHub's order (prev, next, last,
  first), the other query parameters kept, and, like GitHub, on the
  `/repositories/<id>/...` form of the path. One page: no Link at all.
- A cursor list (`/repos/octo/hello/dependabot/alerts`): `after`/`before`
  cursors, `page` ignored, `Link` next with `after=CURSOR`, prev with
  `before=CURSOR`.
- Object-wrapped lists (`{"total_count":..,"workflow_runs":[..]}`, and
  `runners` of `/repos/octo/hello/actions/runners`), paginated the same way.
- Media types from `Accept` (`application/vnd.github[.v3][.PARAM][+json]`):
  diff and patch of a pull, raw and html of a file, raw/text/html/full bodies
  of issues, pulls and comments; `X-GitHub-Media-Type` says which was served.
- Absolute URLs in bodies and Link built from the base URL (`--base-url`,
  default `http://127.0.0.1:<port>`).
- `ETag` (weak, differs per token, same on any port) with 304 for `If-None-Match`,
  `Last-Modified` on single objects with 304 for `If-Modified-Since`;
  `X-RateLimit-Limit/Remaining/Used/Reset/Resource` counted per token and
  resource (a 304 costs nothing; past 5000 a token gets GitHub's 403 "API
  rate limit exceeded"), `X-OAuth-Scopes`, `X-Accepted-OAuth-Scopes`.
- 301 to `/repositories/1001...` for the renamed `octo/old-name`.
- Writes: create an issue, edit it, comment, add/replace/remove labels; later
  GETs see them. `POST /graphql` answers `viewer { login }` and
  `repository(owner, name) { ... issues { totalCount } }`.
- `octo/busy`: every request gets a 403 secondary rate limit with
  `Retry-After: 60`.
- Hostile upstream answers for the proxy's own checks, under
  `/repos/octo/hostile/`: `big-header` (a 200 KB header), `non-utf8-header`,
  `huge-body` (40 MiB).

Outside the API (never counted, no token needed):
- `GET /__requests`: `{"count", "gets", "by_method", "log": [{"method",
  "path", "status"[, "injected"]}]}` of every API request since start or
  reset (`injected`: the request carried an `X-Injected` header, which only
  a CR/LF smuggled through a proxy puts there);
- `POST /__reset`: the world back to its start, counters and log emptied.
"""
import argparse
import email.utils
import hashlib
import json
import os
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import world as W

RATE_LIMIT = 5000
RATE_RESET = 4102444800  # fixed, so answers are deterministic
SCOPES = "repo, workflow, read:org"
DOCS = "https://docs.github.com/rest"
MEDIA_RE = re.compile(r"application/vnd\.github(\.v3)?(?:\.([a-z]+))?(?:\+([a-z]+))?")


class HttpError(Exception):
    def __init__(self, status, message, headers=None, extra=None):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers or {}, extra or {}


class Answer:
    """One response before it is written: status, body bytes, headers."""

    def __init__(self, status, body=b"", content_type="application/json; charset=utf-8", headers=None,
                 last_modified=None, resource="core"):
        self.status = status
        self.body = json.dumps(body, separators=(",", ":")).encode() if not isinstance(body, bytes) else body
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.last_modified = last_modified
        self.resource = resource


class Fake:
    """State shared by all handler threads; every access holds `lock`."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.lock = threading.Lock()
        self.world = W.World()
        self.reset_counters()

    def reset_counters(self):
        self.log = []
        self.used = {}  # (token, resource) -> requests counted against the limit
        self.request_id = 0


def media_of(accept):
    """(header value for X-GitHub-Media-Type, param, the vnd type as asked or None)."""
    for part in (accept or "").split(","):
        t = part.split(";")[0].strip().lower()
        m = MEDIA_RE.fullmatch(t)
        if m:
            param, fmt = m.group(2), m.group(3)
            label = "github.v3" + (f"; param={param}" if param else "") + (f"; format={fmt}" if fmt else "")
            if not param and not fmt:
                label = "github.v3; format=json"
            return label, param, t
    return "github.v3; format=json", None, None


def http_date(t):
    return email.utils.format_datetime(t, usegmt=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    fake: Fake = None  # set by main()

    def log_message(self, *args):
        pass

    def version_string(self):
        return "GitHub.com"

    # -- plumbing --------------------------------------------------------
    def do_GET(self):
        self.handle_any()

    do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def handle_any(self):
        fake = self.fake
        raw_path, _, raw_query = self.path.partition("?")
        body = self.read_body()
        if raw_path.startswith("/__"):
            return self.internal(raw_path)
        query = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
        token = self.token()
        try:
            if token is None:
                raise HttpError(401, "Requires authentication")
            with fake.lock:
                self.check_quota(token, raw_path)
                answer = self.route(raw_path, dict(query), query, body)
        except HttpError as e:
            doc = {"message": e.message, **e.extra, "documentation_url": DOCS, "status": str(e.status)}
            answer = Answer(e.status, doc, headers=e.headers)
        with fake.lock:
            self.finish_answer(answer, token)
            entry = {"method": self.command, "path": self.path, "status": answer.status}
            if "x-injected" in self.headers:  # set only by ci/clients/hostile.py's CR/LF tricks
                entry["injected"] = True
            fake.log.append(entry)
        self.write(answer)

    def token(self):
        auth = self.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return None

    def check_quota(self, token, path):
        """403 once a token has used its whole primary quota, as GitHub does."""
        resource = "graphql" if path == "/graphql" else "core"
        if path != "/rate_limit" and self.fake.used.get((token, resource), 0) >= RATE_LIMIT:
            raise HttpError(403, "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for "
                            "help, please include the request ID FAKE:PRIMARY.")

    def finish_answer(self, a, token):
        """Adds GitHub's common headers; turns a matching conditional GET into 304."""
        fake = self.fake
        fake.request_id += 1
        h = a.headers
        h.setdefault("X-GitHub-Api-Version-Selected", "2022-11-28")
        h.setdefault("X-GitHub-Request-Id", f"FAKE:{fake.request_id:06d}")
        if a.status < 400 or a.status == 404:
            h.setdefault("X-OAuth-Scopes", SCOPES)
            h.setdefault("X-Accepted-OAuth-Scopes", "repo" if self.path.startswith(("/repos/", "/repositories/")) else "")
        h.setdefault("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding, X-Requested-With")
        if self.command in ("GET", "HEAD") and a.status == 200:
            h["Cache-Control"] = "private, max-age=60, s-maxage=60"
            # Over the body without the base URL, so that fakes on different
            # ports agree (the expected transcripts hold ETags), and the token,
            # since GitHub's ETags differ per token.
            tag_of = a.body.replace(fake.base.encode(), b"") + (token or "").encode() + h.get("X-GitHub-Media-Type", "").encode()
            etag = 'W/"%s"' % hashlib.sha256(tag_of).hexdigest()[:32]
            h["ETag"] = etag
            if a.last_modified:
                h["Last-Modified"] = http_date(a.last_modified)
            inm = self.headers.get("if-none-match")
            ims = self.headers.get("if-modified-since")
            not_modified = False
            if inm is not None:
                tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
                not_modified = etag.removeprefix("W/") in tags or "*" in tags
            elif ims and a.last_modified:
                try:
                    not_modified = a.last_modified <= email.utils.parsedate_to_datetime(ims)
                except (TypeError, ValueError):
                    pass
            if not_modified:
                a.status, a.body = 304, b""
        if token is not None and a.status != 304:
            key = (token, a.resource)
            fake.used[key] = fake.used.get(key, 0) + 1
        if token is not None:
            used = fake.used.get((token, a.resource), 0)
            h["X-RateLimit-Limit"] = str(RATE_LIMIT)
            h["X-RateLimit-Remaining"] = str(max(0, RATE_LIMIT - used))
            h["X-RateLimit-Reset"] = str(RATE_RESET)
            h["X-RateLimit-Used"] = str(used)
            h["X-RateLimit-Resource"] = a.resource

    def write(self, a):
        self.send_response(a.status)
        if a.status != 304 and a.status != 204:
            self.send_header("Content-Type", a.content_type)
        for k, v in a.headers.items():
            self.send_header(k, v)
        if a.status not in (204, 304):
            self.send_header("Content-Length", str(len(a.body)))
        self.end_headers()
        if self.command != "HEAD" and a.status not in (204, 304):
            self.wfile.write(a.body)

    def internal(self, path):
        fake = self.fake
        with fake.lock:
            if path == "/__requests" and self.command == "GET":
                by = {}
                for r in fake.log:
                    by[r["method"]] = by.get(r["method"], 0) + 1
                doc = {"count": len(fake.log), "gets": by.get("GET", 0) + by.get("HEAD", 0), "by_method": by,
                       "log": fake.log}
                a = Answer(200, doc)
            elif path == "/__reset" and self.command == "POST":
                fake.world.reset()
                fake.reset_counters()
                a = Answer(200, {"reset": True})
            elif path == "/__health":
                a = Answer(200, {"ok": True})
            else:
                a = Answer(404, {"message": "Not Found"})
        self.write(a)

    # -- routing ---------------------------------------------------------
    def route(self, path, q, pairs, body):
        fake, base, m = self.fake, self.fake.base, self.command
        path = path.rstrip("/") or "/"
        rid = f"/repositories/{W.REPO_ID}"
        if path == rid or path.startswith(rid + "/"):
            path = f"/repos/{W.FULL}" + path[len(rid):]
        old = f"/repos/{W.OWNER}/{W.OLD_NAME}"
        if path == old or path.startswith(old + "/"):
            loc = base + rid + path[len(old):] + (f"?{self.path.partition('?')[2]}" if "?" in self.path else "")
            raise HttpError(301, "Moved Permanently", headers={"Location": loc}, extra={"url": loc})
        if path.startswith(f"/repos/{W.OWNER}/{W.BUSY_REPO}"):
            raise HttpError(403, "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                            "again. If you reach out to GitHub Support for help, please include the request ID "
                            "FAKE:SECONDARY.", headers={"Retry-After": "60"})
        if path.startswith(f"/repos/{W.OWNER}/hostile/"):
            return self.hostile(path.rsplit("/", 1)[1])
        if path == "/graphql" and m == "POST":
            return self.graphql(body)
        label, param, vnd = media_of(self.headers.get("accept"))
        seg = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        w = fake.world

        def json_answer(doc, status=200, last_modified=None, headers=None):
            return Answer(status, doc, headers={"X-GitHub-Media-Type": label, **(headers or {})},
                          last_modified=last_modified)

        if m in ("GET", "HEAD"):
            if seg == ["user"]:
                return json_answer(w.user(base))
            if len(seg) == 2 and seg[0] == "users" and seg[1] == "octo":
                return json_answer(w.user(base))
            if seg == ["rate_limit"]:
                used = fake.used.get((self.token(), "core"), 0)
                core = {"limit": RATE_LIMIT, "used": used, "remaining": RATE_LIMIT - used, "reset": RATE_RESET}
                return Answer(200, {"resources": {"core": core, "graphql": {**core, "used": 0, "remaining": RATE_LIMIT},
                                                  "search": {"limit": 30, "used": 0, "remaining": 30, "reset": RATE_RESET}},
                                    "rate": core}, resource="rate_limit")
        if len(seg) < 3 or seg[0] != "repos" or f"{seg[1]}/{seg[2]}" != W.FULL:
            raise HttpError(404, "Not Found")
        rest = seg[3:]
        r = f"/repos/{W.FULL}"
        if m in ("GET", "HEAD"):
            if not rest:
                return json_answer(w.repo(base), last_modified=w.repo_updated())
            if rest == ["issues"]:
                nums = w.issue_numbers(q.get("state", "open"), q.get("direction", "desc"))
                page, links = self.page(len(nums), q, pairs, r + "/issues")
                return json_answer([w.issue(base, n, param) for n in (nums[i] for i in page)], headers=links)
            if len(rest) == 2 and rest[0] == "issues" and rest[1].isdigit() and int(rest[1]) in w.issues:
                n = int(rest[1])
                return json_answer(w.issue(base, n, param), last_modified=w.issues[n]["updated"])
            if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments" and rest[1].isdigit() \
                    and int(rest[1]) in w.issues:
                cs = w.comments_of(int(rest[1]))
                page, links = self.page(len(cs), q, pairs, f"{r}/issues/{rest[1]}/comments")
                return json_answer([w.comment(base, cs[i]["id"], param) for i in page], headers=links)
            if len(rest) == 3 and rest[:2] == ["issues", "comments"] and rest[2].isdigit() \
                    and int(rest[2]) in w.comments:
                cid = int(rest[2])
                return json_answer(w.comment(base, cid, param), last_modified=w.comments[cid]["created"])
            if len(rest) == 3 and rest[0] == "issues" and rest[2] == "labels" and rest[1].isdigit() \
                    and int(rest[1]) in w.issues:
                names = w.issues[int(rest[1])]["labels"]
                page, links = self.page(len(names), q, pairs, f"{r}/issues/{rest[1]}/labels")
                return json_answer([w.label(base, names[i]) for i in page], headers=links)
            if rest == ["labels"]:
                names = list(w.labels)
                page, links = self.page(len(names), q, pairs, r + "/labels")
                return json_answer([w.label(base, names[i]) for i in page], headers=links)
            if rest == ["pulls"]:
                nums = [n for n in W.PULLS if w.issues[n]["state"] == "open"][::-1]
                page, links = self.page(len(nums), q, pairs, r + "/pulls")
                return json_answer([w.pull(base, nums[i], param) for i in page], headers=links)
            if len(rest) == 2 and rest[0] == "pulls" and rest[1].isdigit() and int(rest[1]) in W.PULLS:
                n = int(rest[1])
                if param in ("diff", "patch"):
                    text = w.diff(n) if param == "diff" else w.patch(n)
                    return Answer(200, text.encode(), content_type=f"{vnd}; charset=utf-8",
                                  headers={"X-GitHub-Media-Type": label}, last_modified=w.issues[n]["updated"])
                return json_answer(w.pull(base, n, param), last_modified=w.issues[n]["updated"])
            if rest == ["branches"]:
                names = w.branches()
                page, links = self.page(len(names), q, pairs, r + "/branches")
                return json_answer([w.branch(base, names[i]) for i in page], headers=links)
            if rest == ["actions", "runs"]:
                ids = w.run_ids()
                page, links = self.page(len(ids), q, pairs, r + "/actions/runs")
                return json_answer({"total_count": len(ids), "workflow_runs": [w.run(base, ids[i]) for i in page]},
                                   headers=links)
            if rest == ["actions", "runners"]:
                runners = w.runners()
                page, links = self.page(len(runners), q, pairs, r + "/actions/runners")
                return json_answer({"total_count": len(runners), "runners": [runners[i] for i in page]},
                                   headers=links)
            if rest == ["dependabot", "alerts"]:
                return self.cursor_list(w.alert_numbers(), q, pairs, r + "/dependabot/alerts",
                                        lambda k: w.alert(base, k), label)
            if rest == ["stargazers"]:
                page, links = self.page(250, q, pairs, r + "/stargazers")
                return json_answer([w.stargazer(base, i + 1) for i in page], headers=links)
            if len(rest) == 2 and rest[0] == "contents" and rest[1] == "README.md":
                if param == "raw":
                    return Answer(200, W.README.encode(), content_type=f"{vnd}; charset=utf-8",
                                  headers={"X-GitHub-Media-Type": label})
                if param == "html":
                    page_html = f'<div id="file" class="md" data-path="README.md"><article class="markdown-body">' \
                                f'<h1>hello</h1>\n<p>A repository that exists only in the fake GitHub.</p></article></div>'
                    return Answer(200, page_html.encode(), content_type=f"{vnd}; charset=utf-8",
                                  headers={"X-GitHub-Media-Type": label})
                return json_answer(w.contents(base, "README.md"))
            raise HttpError(404, "Not Found")
        return self.write_route(m, rest, body, json_answer)

    def write_route(self, m, rest, body, json_answer):
        w, base = self.fake.world, self.fake.base
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            raise HttpError(400, "Problems parsing JSON")

        def issue_no(s):
            if s.isdigit() and int(s) in w.issues:
                return int(s)
            raise HttpError(404, "Not Found")

        def field(name, kind):
            v = doc.get(name) if isinstance(doc, dict) else None
            if v is not None and not isinstance(v, kind):
                raise HttpError(422, "Validation Failed",
                                extra={"errors": [{"resource": "Issue", "code": "invalid", "field": name}]})
            return v

        def created(d, url):
            return json_answer(d, status=201, headers={"Location": url})

        if m == "POST" and rest == ["issues"]:
            title = field("title", str)
            if not title:
                raise HttpError(422, "Validation Failed",
                                extra={"errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}]})
            n = w.create_issue(title, field("body", str), [str(x) for x in field("labels", list) or []])
            return created(w.issue(base, n), f"{base}/repos/{W.FULL}/issues/{n}")
        if m == "PATCH" and len(rest) == 2 and rest[0] == "issues":
            n = issue_no(rest[1])
            state = field("state", str)
            if state not in (None, "open", "closed"):
                raise HttpError(422, "Validation Failed",
                                extra={"errors": [{"resource": "Issue", "code": "invalid", "field": "state"}]})
            w.edit_issue(n, {k: v for k, v in (("title", field("title", str)), ("body", field("body", str)),
                                                ("state", state), ("labels", field("labels", list))) if v is not None})
            return json_answer(w.issue(base, n))
        if m == "POST" and len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments":
            n = issue_no(rest[1])
            text = field("body", str)
            if not text:
                raise HttpError(422, "Validation Failed",
                                extra={"errors": [{"resource": "IssueComment", "code": "missing_field", "field": "body"}]})
            cid = w.add_comment(n, text)
            return created(w.comment(base, cid), f"{base}/repos/{W.FULL}/issues/comments/{cid}")
        if m in ("POST", "PUT") and len(rest) == 3 and rest[0] == "issues" and rest[2] == "labels":
            n = issue_no(rest[1])
            names = doc if isinstance(doc, list) else field("labels", list)
            if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                raise HttpError(422, "Invalid request.\n\nFor 'links/0/schema', nil is not an array.")
            if m == "PUT":
                w.edit_issue(n, {"labels": names})
            else:
                w.add_labels(n, names)
            return json_answer([w.label(base, x) for x in w.issues[n]["labels"]])
        if m == "DELETE" and len(rest) == 4 and rest[0] == "issues" and rest[2] == "labels":
            n = issue_no(rest[1])
            name = rest[3]
            if name not in w.issues[n]["labels"]:
                raise HttpError(404, "Label does not exist")
            w.remove_label(n, name)
            return json_answer([w.label(base, x) for x in w.issues[n]["labels"]])
        raise HttpError(404, "Not Found")

    # -- lists -----------------------------------------------------------
    def page(self, total, q, pairs, path):
        """Indices of this page and the Link header (dict) of a page-numbered list."""
        per = clamp_int(q.get("per_page"), 30, 1, 100)
        page = clamp_int(q.get("page"), 1, 1, 10**9)
        last = max(1, -(-total // per))
        indices = range(min(total, (page - 1) * per), min(total, page * per))
        if last == 1 and page == 1:
            return indices, {}
        rels = []
        if page > 1:
            rels.append(("prev", min(page - 1, last)))
        if page < last:
            rels.append(("next", page + 1))
        if page < last:
            rels.append(("last", last))
        if page > 1:
            rels.append(("first", 1))
        return indices, {"Link": ", ".join(f'<{self.link(path, pairs, {"page": str(p)})}>; rel="{rel}"'
                                           for rel, p in rels)}

    def cursor_list(self, numbers, q, pairs, path, render, label):
        """A list paginated by `after`/`before` cursors; `page` is ignored."""
        per = clamp_int(q.get("per_page"), 30, 1, 100)
        if "after" in q and "before" in q:
            raise HttpError(422, "Only one of 'before' or 'after' may be specified.")
        if "after" in q or "before" in q:
            k = W.uncursor(q.get("after") or q.get("before") or "")
            if k is None:
                raise HttpError(400, "Invalid cursor.")
            if "after" in q:
                chosen = [n for n in numbers if n > k][:per]
            else:
                chosen = [n for n in numbers if n < k][-per:]
        else:
            chosen = numbers[:per]
        rels = []
        if chosen and chosen[-1] != numbers[-1]:
            rels.append(("next", {"after": W.cursor(chosen[-1])}))
        if chosen and chosen[0] != numbers[0]:
            rels.append(("prev", {"before": W.cursor(chosen[0])}))
        links = {"Link": ", ".join(f'<{self.link(path, pairs, params, drop=("after", "before", "page"))}>; rel="{rel}"'
                                   for rel, params in rels)} if rels else {}
        return Answer(200, [render(n) for n in chosen], headers={"X-GitHub-Media-Type": label, **links})

    def link(self, path, pairs, replace, drop=("page",)):
        """An absolute link to `path` on the `/repositories/<id>` form, like GitHub's."""
        path = path.replace(f"/repos/{W.FULL}", f"/repositories/{W.REPO_ID}", 1)
        kept = [(k, v) for k, v in pairs if k not in drop and k not in replace]
        return f"{self.fake.base}{path}?{urllib.parse.urlencode(kept + list(replace.items()))}"

    # -- GraphQL and hostile answers ---------------------------------------
    def graphql(self, body):
        try:
            doc = json.loads(body or b"{}")
            query, variables = doc["query"], doc.get("variables") or {}
            assert isinstance(query, str) and isinstance(variables, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise HttpError(400, "Problems parsing JSON")
        w, data = self.fake.world, {}
        if re.search(r"\bviewer\b", query):
            data["viewer"] = {"login": "octo"}
        m = re.search(r'repository\s*\(\s*owner\s*:\s*(?:"([^"]*)"|\$(\w+))\s*,\s*name\s*:\s*(?:"([^"]*)"|\$(\w+))', query)
        if m:
            owner = m.group(1) if m.group(1) is not None else variables.get(m.group(2))
            name = m.group(3) if m.group(3) is not None else variables.get(m.group(4))
            if f"{owner}/{name}" == W.FULL:
                opened = sum(1 for i in w.issues.values() if i["state"] == "open" and not i["is_pull"])
                data["repository"] = {"name": W.REPO, "nameWithOwner": W.FULL, "issues": {"totalCount": opened}}
            else:
                return Answer(200, {"data": {"repository": None}, "errors": [
                    {"type": "NOT_FOUND", "path": ["repository"],
                     "message": f"Could not resolve to a Repository with the name '{owner}/{name}'."}]},
                    resource="graphql")
        if not data:
            return Answer(200, {"errors": [{"message": "The fake GitHub answers only viewer and repository queries."}]},
                          resource="graphql")
        return Answer(200, {"data": data}, resource="graphql")

    @staticmethod
    def hostile(what):
        if what == "big-header":
            return Answer(200, {"ok": True}, headers={"X-Filler": "a" * 200_000})
        if what == "non-utf8-header":
            return Answer(200, {"ok": True}, headers={"X-Bytes": "caf\xe9 \xff\xfe"})
        if what == "huge-body":
            return Answer(200, b"[" + b"0," * (20 << 20) + b"0]")
        raise HttpError(404, "Not Found")


def clamp_int(v, default, lo, hi):
    try:
        return max(lo, min(hi, int(v)))
    except (TypeError, ValueError):
        return default


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--base-url", help="API root used in bodies and Link [http://127.0.0.1:<port>]")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    Handler.fake = Fake(args.base_url or f"http://127.0.0.1:{port}")
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
