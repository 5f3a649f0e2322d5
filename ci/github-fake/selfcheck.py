#!/usr/bin/env python3
"""Checks the fake GitHub itself, on what the client scripts do not reach.

Usage: selfcheck.py BASE_URL   (a running server.py; its state is reset first)

Prints `PASS name` / `FAIL name: detail` per check; exits with the number of
failures. Standard library only.
"""
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

BASE = sys.argv[1].rstrip("/")
TOKEN = "selfcheck-token"
FAILS = 0


def req(path, method="GET", headers=None, body=None, token=TOKEN):
    h = {"Authorization": f"token {token}"} if token else {}
    h.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(r, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def check(name, cond, detail=""):
    global FAILS
    FAILS += 0 if cond else 1
    print(f"PASS {name}" if cond else f"FAIL {name}: {detail}", flush=True)


def links(headers):
    out = {}
    for part in (headers.get("Link") or "").split(", "):
        if part:
            url, rel = part.split("; rel=")
            out[rel.strip('"')] = url.strip("<>")
    return out


def main():
    req("/__reset", method="POST", token=None)

    s, h, b = req("/repos/octo/hello", token=None)
    check("401 without a token", s == 401 and json.loads(b)["message"] == "Requires authentication", f"{s} {b[:100]}")
    s, _, _ = req("/repos/octo/hello", headers={"Authorization": "Basic eDp5"}, token=None)
    check("401 for a scheme other than token/Bearer", s == 401, str(s))
    s, _, _ = req("/repos/octo/hello", headers={"Authorization": "Bearer abc"}, token=None)
    check("Bearer accepted", s == 200, str(s))

    s, h, b = req("/repos/octo/hello/issues?per_page=500&page=1")
    check("per_page capped at 100", s == 200 and len(json.loads(b)) == 78 and "Link" not in h, f"{s} {len(json.loads(b))}")
    s, h, b = req("/repos/octo/hello/stargazers?per_page=500&page=2")
    ln = links(h)
    check("page 2 of 3 at the cap: all four rels", len(json.loads(b)) == 100 and set(ln) == {"prev", "next", "last", "first"}
          and ln["last"].endswith("per_page=500&page=3"), f"{ln}")
    s, h, b = req("/repos/octo/hello/stargazers?per_page=100&page=3")
    check("last page: prev and first only", set(links(h)) == {"prev", "first"} and len(json.loads(b)) == 50, f"{links(h)}")

    s, h, b = req("/repos/octo/hello/dependabot/alerts?per_page=30&page=2")
    first = [a["number"] for a in json.loads(b)]
    ln = links(h)
    keys = [k for k, _ in urllib.parse.parse_qsl(urllib.parse.urlsplit(ln.get("next", "")).query)]
    check("cursor list ignores page", first == list(range(1, 31)) and set(ln) == {"next"}
          and keys == ["per_page", "after"], f"{first[:3]} {ln}")
    s, h, b = req(ln["next"].removeprefix(BASE))
    second = [a["number"] for a in json.loads(b)]
    ln2 = links(h)
    check("cursor next page", second == list(range(31, 61)) and set(ln2) == {"next", "prev"}, f"{second[:3]} {ln2}")
    s, h, b = req(ln2["prev"].removeprefix(BASE))
    check("cursor prev page (before=)", [a["number"] for a in json.loads(b)] == list(range(1, 31)), str(b[:80]))
    s, _, _ = req("/repos/octo/hello/dependabot/alerts?after=bogus")
    check("bad cursor is a 400", s == 400, str(s))

    s, h, b = req("/repos/octo/hello")
    etag, lm = h["ETag"], h["Last-Modified"]
    check("ETag and Last-Modified on a repository", etag.startswith('W/"') and lm.endswith("GMT"), f"{etag} {lm}")
    used = int(h["X-RateLimit-Used"])
    s, h, b = req("/repos/octo/hello", headers={"If-None-Match": etag})
    check("304 for a matching If-None-Match, free", s == 304 and b == b"" and int(h["X-RateLimit-Used"]) == used,
          f"{s} used={h['X-RateLimit-Used']} before={used}")
    s, h, b = req("/repos/octo/hello", headers={"If-Modified-Since": lm})
    check("304 for If-Modified-Since", s == 304, str(s))
    s, h, b = req("/repos/octo/hello", headers={"If-None-Match": etag}, token="another-token")
    check("ETag differs per token", s == 200, str(s))
    check("rate limit per token", h["X-RateLimit-Used"] == "1" and h["X-RateLimit-Remaining"] == "4999"
          and h["X-RateLimit-Resource"] == "core", f"{dict(h)}")
    check("scopes headers", h["X-OAuth-Scopes"] == "repo, workflow, read:org" and h["X-Accepted-OAuth-Scopes"] == "repo",
          f"{dict(h)}")

    s, h, b = req("/repos/octo/hello", method="HEAD")
    check("HEAD: headers, no body", s == 200 and b == b"" and "ETag" in h, f"{s} {b[:50]}")

    s, h, b = req("/repos/octo/old-name/issues?per_page=5")
    check("301 for the renamed repository", s == 301 and h["Location"] == f"{BASE}/repositories/1001/issues?per_page=5",
          f"{s} {h.get('Location')}")

    s, h, b = req("/repos/octo/busy/pulls")
    check("403 secondary rate limit with Retry-After", s == 403 and h["Retry-After"] == "60"
          and "secondary rate limit" in json.loads(b)["message"], f"{s} {dict(h)}")

    for accept, media, start in (("application/vnd.github.diff", "github.v3; param=diff", b"diff --git"),
                                 ("application/vnd.github.v3.patch", "github.v3; param=patch", b"From ")):
        s, h, b = req("/repos/octo/hello/pulls/76", headers={"Accept": accept})
        check(f"media {accept}", s == 200 and h["X-GitHub-Media-Type"] == media and b.startswith(start)
              and h["Content-Type"].startswith(accept), f"{s} {dict(h)} {b[:40]}")
    s, h, b = req("/repos/octo/hello/contents/README.md", headers={"Accept": "application/vnd.github.raw+json"})
    check("media raw+json of a file", b.startswith(b"# hello") and h["X-GitHub-Media-Type"] == "github.v3; param=raw; format=json",
          f"{dict(h)}")
    s, h, b = req("/repos/octo/hello/issues/3", headers={"Accept": "application/vnd.github.full+json"})
    d = json.loads(b)
    check("media full+json: body, body_text, body_html", {"body", "body_text", "body_html"} <= set(d), f"{sorted(d)}")
    s, h, b = req("/repos/octo/hello/issues/3", headers={"Accept": "application/vnd.github.text+json"})
    d = json.loads(b)
    check("media text+json: body_text only", "body_text" in d and "body" not in d, f"{sorted(d)}")

    s, h, b = req("/repos/octo/hello/issues", method="POST", body={"body": "no title"})
    check("422 for an issue without a title", s == 422, str(s))
    s, h, b = req("/repos/octo/hello/issues", method="POST", body={"title": "t", "labels": ["new-label"]})
    n = json.loads(b)["number"]
    check("create an issue: 201 + Location", s == 201 and h["Location"] == f"{BASE}/repos/octo/hello/issues/{n}" and n == 79,
          f"{s} {dict(h)}")
    s, h, b = req(f"/repos/octo/hello/issues/{n}/comments", method="POST", body={"body": "c"})
    check("comment: 201", s == 201, str(s))
    s, h, b = req(f"/repos/octo/hello/issues/{n}/labels", method="POST", body={"labels": ["bug"]})
    check("add a label", [x["name"] for x in json.loads(b)] == ["new-label", "bug"], str(b[:200]))
    s, h, b = req(f"/repos/octo/hello/issues/{n}")
    d = json.loads(b)
    check("later GET sees the writes", d["comments"] == 1 and [x["name"] for x in d["labels"]] == ["new-label", "bug"],
          str(d)[:200])
    s, h, b = req("/repos/octo/hello/issues?state=all&per_page=1")
    check("the list sees the new issue", json.loads(b)[0]["number"] == n and links(h)["last"].endswith("page=79"),
          f"{links(h)}")

    s, h, b = req("/graphql", method="POST", body={"query": "query { viewer { login } }"})
    check("graphql viewer", json.loads(b) == {"data": {"viewer": {"login": "octo"}}}
          and h["X-RateLimit-Resource"] == "graphql", str(b[:200]))
    s, h, b = req("/graphql", method="POST", body={"query": 'query { repository(owner: "octo", name: "nope") { name } }'})
    check("graphql NOT_FOUND", json.loads(b)["errors"][0]["type"] == "NOT_FOUND", str(b[:200]))

    s, _, b = req("/__requests", token=None)
    log = json.loads(b)
    check("requests are counted", log["count"] == len(log["log"]) and log["gets"] > 10, str(log["count"]))
    return FAILS


if __name__ == "__main__":
    sys.exit(main())
