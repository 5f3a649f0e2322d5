#!/usr/bin/env python3
"""What a shared HTTP cache of GitHub owes its clients beyond replaying bytes.

Usage: cache_semantics.py PROXY_ORIGIN FAKE_ORIGIN TOKEN
  The proxy's GitHub base is PROXY_ORIGIN/github; FAKE_ORIGIN is the fake
  GitHub behind it, whose ETags differ per token (as GitHub's do) and whose
  /__requests log shows what reached it.

Prints `PASS name` / `FAIL name: detail` per check; exits with the number of
failures.
"""
import json
import sys
import urllib.error
import urllib.request

PROXY, FAKE, TOKEN = (a.rstrip("/") for a in sys.argv[1:4])
OTHER = "ghp_someoneelse00000000000000000000000"
PATH = "/repos/octo/hello/labels"
FAILS = 0


def get(url, token, headers=None):
    r = urllib.request.Request(url, headers={"Authorization": f"token {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def upstream_count():
    with urllib.request.urlopen(FAKE + "/__requests", timeout=10) as r:
        return sum(1 for x in json.load(r)["log"] if x["path"] == PATH)


def check(name, ok, detail):
    global FAILS
    FAILS += 0 if ok else 1
    print(f"PASS {name}" if ok else f"FAIL {name}: {detail}", flush=True)


def main():
    get(PROXY + "/github" + PATH, TOKEN)  # cached for TOKEN
    _, direct, _ = get(FAKE + PATH, OTHER)
    status, proxied, _ = get(PROXY + "/github" + PATH, OTHER)
    check("a client's own token: the answer GitHub gives that token, not one cached for another",
          status == 200 and proxied.get("ETag") == direct.get("ETag"),
          f"status={status} ETag={proxied.get('ETag')} (GitHub gives that token {direct.get('ETag')})")

    get(PROXY + "/github" + PATH, TOKEN)
    before = upstream_count()
    get(PROXY + "/github" + PATH, TOKEN)
    check("a fresh entry is answered from the cache", upstream_count() == before,
          f"{upstream_count() - before} upstream requests")
    before = upstream_count()
    status, _, _ = get(PROXY + "/github" + PATH, TOKEN, {"Cache-Control": "no-cache"})
    check("Cache-Control: no-cache revalidates upstream", status == 200 and upstream_count() == before + 1,
          f"status={status}, {upstream_count() - before} upstream requests (want 1)")
    before = upstream_count()
    status, _, _ = get(PROXY + "/github" + PATH, TOKEN, {"Cache-Control": "max-age=0"})
    check("Cache-Control: max-age=0 revalidates upstream", status == 200 and upstream_count() == before + 1,
          f"status={status}, {upstream_count() - before} upstream requests (want 1)")
    return FAILS


if __name__ == "__main__":
    sys.exit(main())
