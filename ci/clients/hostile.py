#!/usr/bin/env python3
"""Hostile input against a GitHub proxy, with the fake GitHub behind it.

Usage: hostile.py PROXY_ORIGIN FAKE_ORIGIN TOKEN
  PROXY_ORIGIN  e.g. http://127.0.0.1:9000 (the proxy's GitHub base is PROXY_ORIGIN/github)
  FAKE_ORIGIN   the fake GitHub behind it (its /__requests log is read)

Each check prints one line `PASS name: detail` or `FAIL name: detail`; the
exit status is the number of failures (0 = all passed). Requests are written
as raw bytes on a socket so that nothing on the client side cleans them up.

What passes: a clear answer (4xx, or 502 where the fault is upstream's), the
proxy still answering /healthz afterwards, no request leaving the API root or
carrying a decoded CR/LF upstream, and no hostile upstream answer served from
the cache (the fake sees the second request too).
"""
import json
import socket
import sys
import urllib.parse
import urllib.request

PROXY, FAKE, TOKEN = (a.rstrip("/") for a in sys.argv[1:4])
P = urllib.parse.urlsplit(PROXY)
FAILS = 0


def report(ok, name, detail):
    global FAILS
    FAILS += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def raw(target: bytes, method=b"GET", body_len=0, chunk=65536, extra=b""):
    """Sends one request; returns (status or None, header bytes, error text)."""
    s = socket.create_connection((P.hostname, P.port), timeout=15)
    try:
        head = (method + b" " + target + b" HTTP/1.1\r\nHost: " + P.netloc.encode() +
                b"\r\nAuthorization: token " + TOKEN.encode() + b"\r\nConnection: close\r\n" + extra)
        if body_len:
            head += b"Content-Type: application/json\r\nContent-Length: " + str(body_len).encode() + b"\r\n"
        s.sendall(head + b"\r\n")
        sent = 0
        s.settimeout(0.05)
        while sent < body_len:  # stop sending as soon as the server answers
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                break
            try:
                s.settimeout(15)
                s.sendall(b" " * min(chunk, body_len - sent))
                sent += min(chunk, body_len - sent)
            except OSError:
                break
            s.settimeout(0.05)
        s.settimeout(15)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                part = s.recv(65536)
            except OSError as e:
                return None, data, f"{type(e).__name__} after {sent} body bytes"
            if not part:
                break
            data += part
        line = data.split(b"\r\n", 1)[0]
        try:
            return int(line.split()[1]), data.split(b"\r\n\r\n", 1)[0], ""
        except (IndexError, ValueError):
            return None, data[:200], f"no status line (got {data[:80]!r}) after {sent} body bytes"
    finally:
        s.close()


def fake_log():
    with urllib.request.urlopen(FAKE + "/__requests", timeout=10) as r:
        return json.load(r)["log"]


def healthy():
    try:
        with urllib.request.urlopen(PROXY + "/healthz", timeout=10) as r:
            return r.status == 200
    except OSError:
        return False


def clear(status):
    return status is not None and (400 <= status < 500 or status == 502)


def check_request(name, target, forbidden_upstream=(), **kw):
    """A bad request: a clear answer, and none of `forbidden_upstream` (substrings
    of a path) reaching the fake."""
    before = len(fake_log())
    status, _, err = raw(target, **kw)
    log = fake_log()[before:]
    leaked = [r["path"] for r in log if r.get("injected")
              or any(f.lower() in r["path"].lower() for f in forbidden_upstream)]
    ok = clear(status) and not leaked and healthy()
    upstream = [r["path"][:80] for r in log[:3]]
    report(ok, name, f"status={status} {err} upstream={upstream}" + (f" LEAKED={leaked}" if leaked else ""))


def check_upstream(name, path, accept_passthrough=None):
    """A hostile upstream answer: 502 each time (nothing cached), or, where
    passing it through is faithful, the same bytes as upstream sent."""
    before = len(fake_log())
    first, h1, e1 = raw(path.encode())
    second, h2, e2 = raw(path.encode())
    hits = sum(1 for r in fake_log()[before:] if r["path"] == path.removeprefix("/github"))
    if accept_passthrough and first == 200 and second == 200:
        ok = accept_passthrough(h1) and accept_passthrough(h2)
        detail = "passed through unchanged" if ok else f"passed through altered: {h1[:300]!r}"
    else:
        ok = first == 502 and second == 502 and hits == 2
        detail = f"status={first},{second} upstream_requests={hits} {e1} {e2}"
    report(ok and healthy(), name, detail)


def main():
    check_request("crlf-in-path-encoded", b"/github/repos/octo/hello%0d%0aX-Injected:%20yes",
                  forbidden_upstream=["\r", "\n"])
    check_request("crlf-in-path-raw", b"/github/repos/octo/hello\r\nX-Injected: yes")
    check_request("crlf-in-query-encoded", b"/github/repos/octo/hello/issues?per_page=5%0d%0aX-Injected:%20yes",
                  forbidden_upstream=["\r", "\n"])
    check_request("lf-in-query-raw", b"/github/repos/octo/hello/issues?per_page=5\nX-Injected: yes")
    check_request("dot-dot", b"/github/repos/octo/hello/../../../user", forbidden_upstream=["/user", ".."])
    check_request("dot-dot-encoded", b"/github/repos/octo/hello/%2e%2e/%2E%2E/%2e./user",
                  forbidden_upstream=["/user", "%2e", ".."])
    check_request("dot-dot-out-of-github", b"/github/../metrics", forbidden_upstream=["metrics"])
    check_request("encoded-slash", b"/github/repos/octo%2fhello", forbidden_upstream=["octo/hello"])
    check_request("encoded-slash-dot-dot", b"/github/repos/octo/hello%2f..%2f..%2fuser",
                  forbidden_upstream=["/user"])
    check_request("path-100kb", b"/github/repos/octo/" + b"a" * 100_000)
    check_request("query-100kb", b"/github/repos/octo/hello/issues?q=" + b"a" * 100_000)

    status, head, err = raw(b"/github/repos/octo/hello/issues", method=b"POST", body_len=64 << 20)
    report(status == 413 and healthy(), "body-over-limit",
           f"status={status} (want 413) {err}")

    check_upstream("upstream-header-200kb", "/github/repos/octo/hostile/big-header")
    check_upstream("upstream-header-not-utf8", "/github/repos/octo/hostile/non-utf8-header",
                   accept_passthrough=lambda h: b"X-Bytes: caf\xe9 \xff\xfe" in h or b"x-bytes: caf\xe9 \xff\xfe" in h)
    check_upstream("upstream-body-40mib", "/github/repos/octo/hostile/huge-body")
    return FAILS


if __name__ == "__main__":
    sys.exit(main())
