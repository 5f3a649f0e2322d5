#!/usr/bin/env python3
"""A tiny fake GitHub REST API on 127.0.0.1 for manual and CI checks.

Serves JSON for any GET with an ETag, answers 304 to a matching
If-None-Match, sends x-ratelimit-* headers, and counts requests
(GET /__count answers the count). Prints the port it bound on its first
line. Never reaches the internet.

It also keeps repository Actions variables, as api.github.com answers
them (the `--discovery-github` registry lives there), in memory:

  GET    /repos/{o}/{r}/actions/variables?per_page=&page=   200, a page
         ({"total_count", "variables": [...]}, sorted by name; per_page
         10 by default, 30 at most) with a Link header (rel next/last,
         prev/first) and an ETag (304 to a matching If-None-Match)
  GET    /repos/{o}/{r}/actions/variables/{name}   200, or 404
  POST   /repos/{o}/{r}/actions/variables   {"name","value"}: 201, 409 if
         it exists, 422 for a missing field or a bad name
  PATCH  /repos/{o}/{r}/actions/variables/{name}   {"value"[, "name"]}: 204,
         404 if unknown
  DELETE /repos/{o}/{r}/actions/variables/{name}   204, 404 if unknown

Names are case-insensitive and kept upper-case (letters, digits and _, not
starting with a digit or GITHUB_). Every variables request needs an
Authorization header (401 otherwise). They are not in the /__count
count (that is the cache's upstream traffic); GET /__variables answers
how many variables requests there were.
"""
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COUNT = 0
LOCK = threading.Lock()
# {"owner/repo": {"NAME": {"value", "created_at", "updated_at"}}} (Unix s)
VARIABLES = {}
VARIABLE_REQUESTS = 0
VARIABLES_PATH = re.compile(r"^/repos/([^/]+/[^/]+)/actions/variables(?:/([^/]+))?$")
NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def rfc3339(secs):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def variable_json(name, v):
    return {"name": name, "value": v["value"], "created_at": rfc3339(v["created_at"]),
            "updated_at": rfc3339(v["updated_at"])}


def name_ok(name):
    return bool(NAME_OK.match(name)) and not name.upper().startswith("GITHUB_")


URL_FIELDS = (
    "forks keys collaborators teams hooks issue_events events assignees branches tags blobs "
    "git_tags git_refs trees statuses languages stargazers contributors subscribers subscription "
    "commits git_commits comments issue_comment contents compare merges archive downloads issues "
    "pulls milestones notifications labels releases deployments"
).split()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, doc=None, headers=()):
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        if doc is not None:
            self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def variables(self, method):
        """Answers an Actions variables request; False when the path is
        not one."""
        global VARIABLE_REQUESTS
        url = urlsplit(self.path)
        m = VARIABLES_PATH.match(url.path)
        if not m:
            return False
        repo, name = m.group(1), m.group(2)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        with LOCK:
            VARIABLE_REQUESTS += 1
        if not self.headers.get("authorization"):
            self.answer(401, {"message": "Requires authentication"})
            return True
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if method in ("POST", "PATCH") and not isinstance(body, dict):
            self.answer(400, {"message": "Problems parsing JSON"})
            return True
        name = name.upper() if name else None
        with LOCK:
            vars_ = VARIABLES.setdefault(repo, {})
            if method == "GET" and name is None:
                q = parse_qs(url.query)
                try:
                    per_page = min(max(int(q.get("per_page", ["10"])[0]), 1), 30)
                    page = max(int(q.get("page", ["1"])[0]), 1)
                except ValueError:
                    per_page, page = 10, 1
                names = sorted(vars_)
                listed = [variable_json(n, vars_[n]) for n in names[(page - 1) * per_page:page * per_page]]
                doc = {"total_count": len(names), "variables": listed}
                last = max(1, -(-len(names) // per_page))
                base = "http://%s:%d%s" % (*self.server.server_address[:2], url.path)
                links = []
                if page < last:
                    links += [f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"',
                              f'<{base}?per_page={per_page}&page={last}>; rel="last"']
                if page > 1:
                    links += [f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"',
                              f'<{base}?per_page={per_page}&page=1>; rel="first"']
                etag = 'W/"%016x"' % (hash(json.dumps(doc, sort_keys=True)) & (2**64 - 1))
                headers = [("etag", etag)] + ([("link", ", ".join(links))] if links else [])
                if self.headers.get("if-none-match") == etag:
                    status, doc = 304, None
                else:
                    status = 200
            elif method == "GET":
                status, headers = 200, []
                doc = variable_json(name, vars_[name]) if name in vars_ else None
                if doc is None:
                    status, doc = 404, {"message": "Not Found"}
            elif method == "POST" and name is None:
                new, value = body.get("name"), body.get("value")
                headers = []
                if not isinstance(new, str) or not isinstance(value, str):
                    status, doc = 422, {"message": "Invalid request: name and value are required"}
                elif not name_ok(new):
                    status, doc = 422, {"message": "Invalid name"}
                elif new.upper() in vars_:
                    status, doc = 409, {"message": "Already exists - Variable already exists"}
                else:
                    now = int(time.time())
                    vars_[new.upper()] = {"value": value, "created_at": now, "updated_at": now}
                    status, doc = 201, {}
            elif method == "PATCH" and name is not None:
                headers = []
                new = body.get("name", name)
                if name not in vars_:
                    status, doc = 404, {"message": "Not Found"}
                elif not isinstance(new, str) or not name_ok(new) or not isinstance(body.get("value", ""), str):
                    status, doc = 422, {"message": "Invalid request"}
                elif new.upper() != name and new.upper() in vars_:
                    status, doc = 409, {"message": "Already exists - Variable already exists"}
                else:
                    v = vars_.pop(name)
                    v["value"] = body.get("value", v["value"])
                    v["updated_at"] = int(time.time())
                    vars_[new.upper()] = v
                    status, doc = 204, None
            elif method == "DELETE" and name is not None:
                headers = []
                if vars_.pop(name, None) is None:
                    status, doc = 404, {"message": "Not Found"}
                else:
                    status, doc = 204, None
            else:
                status, doc, headers = 404, {"message": "Not Found"}, []
        self.answer(status, doc, headers)
        return True

    def do_POST(self):
        if not self.variables("POST"):
            self.answer(404, {"message": "Not Found"})

    def do_PATCH(self):
        if not self.variables("PATCH"):
            self.answer(404, {"message": "Not Found"})

    def do_DELETE(self):
        if not self.variables("DELETE"):
            self.answer(404, {"message": "Not Found"})

    def do_GET(self):
        global COUNT
        if self.path == "/__variables":
            self.answer(200, {"requests": VARIABLE_REQUESTS})
            return
        if self.variables("GET"):
            return
        if self.path == "/__count":
            body = json.dumps({"requests": COUNT}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with LOCK:
            COUNT += 1
        path = self.path.split("?", 1)[0]
        etag = '"fake-%d"' % len(path)
        if self.headers.get("if-none-match") == etag:
            self.send_response(304)
            self.send_header("etag", etag)
            self.end_headers()
            return
        if path == "/user":
            doc = {"login": "fake-user"}
        elif path.endswith("/actions/runners"):
            doc = {"total_count": 1, "runners": [{"id": 1, "name": "r1", "status": "online"}]}
        else:
            # About the size and shape of a real repository answer (~6 KB,
            # its *_url fields absolute URLs under this API root, which a
            # proxy in front rewrites to its own base).
            base = "http://%s:%d%s" % (*self.server.server_address[:2], path)
            doc = {"path": path, "full_name": path.removeprefix("/repos/"), "url": base}
            for name in URL_FIELDS:
                doc[name + "_url"] = base + "/" + name
            doc["description"] = "x" * 3250
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("etag", etag)
        self.send_header("x-ratelimit-limit", "5000")
        self.send_header("x-ratelimit-remaining", str(5000 - COUNT))
        self.send_header("x-ratelimit-used", str(COUNT))
        self.send_header("x-ratelimit-reset", str(int(time.time()) + 3600))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
