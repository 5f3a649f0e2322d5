#!/usr/bin/env python3
"""Drives ghcache's dashboard (GET /) in headless Chromium through Playwright.

Usage:
  dashboard_check.py open  BASE --repo OWNER/NAME --screenshot PNG
  dashboard_check.py token BASE --token TOKEN
  dashboard_check.py fleet BASE --other BASE2 --peers ID,ID2 [--screenshot PNG]

`open`: a daemon without a token. The page loads with no console error and
no page error; the figures it shows equal what /jsonrpc gh_get_cache_stats
answers; they change after reads through /github/; the plots move; the
repository's runners and latest runs show; the invalidate button drops the
repository's entries and the activity log says so; a screenshot is saved.

`token`: a daemon with a token. The page asks for it (and nothing else
shows), refuses a wrong one, works with the right one, keeps it for the
tab (a reload does not ask again), and its invalidate POST carries it.

`fleet`: two daemons in one swarm, BASE's Peer ID first. After reads
through the other node, BASE's page lists both nodes, by Peer ID, with the
lookups and hit rates its gh_get_cache_stats `aggregate` gives; a
screenshot of that card is saved.

Prints `PASS name` / `FAIL name: why` lines; exits 1 when any failed.
"""
import argparse
import json
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20000

results = []


def check(name, ok, why=""):
    results.append(ok)
    print(("PASS " + name) if ok else ("FAIL %s: %s" % (name, why)), flush=True)
    return ok


def rpc(base, name, args=None, token=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": name, "arguments": args or {}}}).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(base + "/jsonrpc", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["result"]


def github_get(base, path):
    with urllib.request.urlopen(base + "/github" + path, timeout=30) as r:
        r.read()
        return r.status


def wait_until(page, expr, arg=None):
    """Waits until the JavaScript function `expr` returns true. Evaluated from
    outside the page (wait_for_function would compile it inside the page,
    which the page's Content-Security-Policy rightly forbids)."""
    for _ in range(WAIT_MS // 50):
        if page.evaluate(expr, arg):
            return
        page.wait_for_timeout(50)
    raise TimeoutError("still false after %d ms: %s" % (WAIT_MS, expr))


class Page:
    """One browser page, with its console errors and page errors collected."""

    def __init__(self, browser, allowed_errors=()):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors = []
        self.allowed = []
        def on_console(m):
            if m.type == "error":
                (self.allowed if any(a in m.text for a in allowed_errors) else self.errors).append(m.text)
        self.page.on("console", on_console)
        self.page.on("pageerror", lambda e: self.errors.append("page error: %s" % e))

    def polls(self):
        return int(self.page.evaluate("document.body.dataset.polls || '0'"))

    def wait_poll_after(self, n):
        """Waits until an answer newer than poll number `n` is drawn."""
        wait_until(self.page, "n => Number(document.body.dataset.polls || 0) > n", n)

    def pause(self):
        """Stops polling and waits for a poll in flight to be drawn."""
        if self.page.evaluate("document.body.dataset.paused") != "1":
            self.page.click("#pause")
        wait_until(self.page, "() => document.body.dataset.paused === '1' && document.body.dataset.inflight !== '1'")

    def resume(self):
        if self.page.evaluate("document.body.dataset.paused") == "1":
            self.page.click("#pause")

    def value(self, id_):
        return self.page.get_attribute("#" + id_, "data-value")

    def text(self, sel):
        return self.page.inner_text(sel)


def shown_vs_tool(p, base, label, token=None):
    """Compares the page's figures with gh_get_cache_stats (page paused)."""
    p.pause()
    s = rpc(base, "gh_get_cache_stats", token=token)
    rate = s.get("rate_limit") or {}
    pairs = {
        "lookups": s["lookups"], "hits": s["hits"], "saved": s["api_calls_saved"], "api-calls": s["api_calls"],
        "entries": s["entries"], "quota-remaining": rate.get("remaining"), "quota-limit": rate.get("limit"),
        "quota-reset": rate.get("reset"),
    }
    diffs = []
    for id_, want in pairs.items():
        got = p.value(id_)
        if got != ("" if want is None else str(want)):
            diffs.append("%s shows %r, the tool says %r" % (id_, got, want))
        # The visible text says the same number (with separators).
        visible = p.text("#" + id_).replace(",", "")
        if want is not None and id_ != "quota-reset" and visible != str(want):
            diffs.append("%s reads %r, want %r" % (id_, visible, want))
    ratio = "%.1f%%" % (100 * s["hits"] / s["lookups"]) if s["lookups"] else "–"
    if p.text("#hit-ratio") != ratio:
        diffs.append("hit ratio reads %r, the tool's figures give %r" % (p.text("#hit-ratio"), ratio))
    check("%s: the figures shown equal gh_get_cache_stats (%d lookups, %d hits, %s saved, quota %s)"
          % (label, s["lookups"], s["hits"], s["api_calls_saved"], rate.get("remaining")), not diffs, "; ".join(diffs))
    return s


def phase_open(browser, base, repo, screenshot):
    p = Page(browser)
    page = p.page
    r = page.goto(base + "/")
    check("GET / answers 200 with a Content-Security-Policy",
          r.status == 200 and "default-src 'none'" in (r.headers.get("content-security-policy") or ""),
          "status %s, headers %s" % (r.status, r.headers))
    p.wait_poll_after(0)
    check("the page polls /api/dashboard and says live", page.inner_text("#status") == "live",
          page.inner_text("#status"))
    before = shown_vs_tool(p, base, "before traffic")
    plot_before = page.get_attribute("#plot-rate polyline.s0", "points")

    # Traffic through the proxy: five reads, then the same five again (hits).
    paths = ["/repos/octo/hello", "/repos/octo/hello/branches", "/repos/octo/hello/issues",
             "/repos/octo/hello/pulls", "/repos/octo/hello/labels"]
    statuses = [github_get(base, path) for path in paths * 2]
    check("10 reads through /github/ answered 200", statuses == [200] * 10, str(statuses))
    n = p.polls()
    p.resume()
    p.wait_poll_after(n)
    after = shown_vs_tool(p, base, "after traffic")
    check("the figures changed with the traffic (lookups %d -> %d, hits %d -> %d)"
          % (before["lookups"], after["lookups"], before["hits"], after["hits"]),
          after["lookups"] >= before["lookups"] + 10 and after["hits"] >= before["hits"] + 5,
          "before %s, after %s" % (before, after))
    plot_after = page.get_attribute("#plot-rate polyline.s0", "points")
    check("the request-rate plot moved", plot_after and plot_after != plot_before,
          "points before %r, after %r" % (plot_before, plot_after))
    points = page.get_attribute("#plot-latency", "data-points")
    check("the latency plot has its samples (%s)" % points, points is not None and int(points) >= 1, str(points))

    # The configured repository: runners and latest runs, read through the cache.
    card = page.locator('.repo[data-repo="%s"]' % repo)
    runners = card.locator(".runners tr").all_inner_texts()
    runs = card.locator(".runs tr").all_inner_texts()
    check("%s: its %d runners show (%s)" % (repo, len(runners), ", ".join(r.split("\t")[0] for r in runners)),
          len(runners) == 3 and "build-1" in runners[0] and "offline" in runners[2], str(runners))
    check("%s: its latest %d workflow runs show, newest first" % (repo, len(runs)),
          len(runs) == 10 and "Commit 45" in runs[0] and "failure" in runs[0], str(runs[:2]))
    tool_runs = rpc(base, "gh_list_workflow_runs", {"repo": repo, "limit": 10})
    ids = [r["display_title"] for r in tool_runs["data"]["workflow_runs"]]
    check("the runs shown are the ones gh_list_workflow_runs reads",
          [r.split("\t")[1] for r in runs] == ids, "%s vs %s" % ([r.split("\t")[1] for r in runs], ids))

    hot = page.locator("#hot-keys tbody tr").all_inner_texts()
    check("the hottest keys show (%d rows)" % len(hot), len(hot) >= 5, str(hot))

    # Invalidate the repository with its button (a POST /jsonrpc).
    page.click('.repo[data-repo="%s"] button' % repo)
    result = '.repo[data-repo="%s"] .repo-result' % repo
    wait_until(page, "sel => /entries dropped/.test(document.querySelector(sel).innerText)", result)
    dropped = page.inner_text(result)
    wait_until(page, "() => document.querySelectorAll('#activity li[data-kind=invalidation]').length > 0")
    activity = page.locator("#activity li").all_inner_texts()
    check("the invalidate button dropped %s's entries (%s) and the activity log says so"
          % (repo, dropped),
          "repository " + repo in activity[0], str(activity))

    # More reads, so the screenshot shows a working cache.
    for path in paths[:3] * 3:
        github_get(base, path)
    n = p.polls()
    p.resume()
    p.wait_poll_after(n)
    shown_vs_tool(p, base, "after the invalidation and more reads")
    page.screenshot(path=screenshot, full_page=True)
    check("screenshot saved to " + screenshot, True)
    page.wait_for_timeout(500)
    check("no console errors and no page errors", not p.errors, "; ".join(p.errors[:5]))


def phase_token(browser, base, token):
    # The 401s the page meets before it has the right token are expected:
    # Chromium logs every failed resource load on the console.
    p = Page(browser, allowed_errors=("status of 401",))
    page = p.page
    page.goto(base + "/")
    page.wait_for_selector("#token-form:not([hidden])", timeout=WAIT_MS)
    check("with a token configured the page asks for it and shows nothing else",
          page.is_hidden("#main") and page.inner_text("#status") == "token needed", page.inner_text("#status"))
    page.fill("#token-input", "not-the-token")
    page.click("#token-form button")
    wait_until(page, "() => document.getElementById('token-error').innerText.includes('refused')")
    check("a wrong token is refused and asked again", page.is_visible("#token-form"),
          page.inner_text("#token-error"))
    page.fill("#token-input", token)
    page.click("#token-form button")
    p.wait_poll_after(0)
    check("the right token shows the dashboard", page.is_visible("#main") and page.is_hidden("#token-form")
          and page.inner_text("#status") == "live", page.inner_text("#status"))
    shown_vs_tool(p, base, "with a token", token=token)
    stored = page.evaluate("sessionStorage.getItem('ghcache.dashboard.token')")
    check("the token is kept in sessionStorage (this tab only)", stored == token, repr(stored))
    page.reload()
    p.wait_poll_after(0)
    check("a reload does not ask again", page.is_hidden("#token-form"), "the form shows")
    p.pause()
    rpc(base, "gh_api", {"path": "/repos/octo/hello"}, token=token)
    page.fill("#invalidate-pattern", "api:")
    page.click("#invalidate-form button")
    wait_until(page, "() => /entries dropped|refused/.test(document.getElementById('invalidate-result').innerText)")
    check("the invalidate POST carries the token (%s)" % page.inner_text("#invalidate-result"),
          page.inner_text("#invalidate-result") == "1 entries dropped", page.inner_text("#invalidate-result"))
    page.wait_for_timeout(500)
    check("no console errors and no page errors (besides %d expected 401s)" % len(p.allowed), not p.errors,
          "; ".join(p.errors[:5]))


def phase_fleet(browser, base, other, peers, screenshot):
    # Traffic on the other node, so its row differs from ours.
    paths = ["/repos/octo/hello", "/repos/octo/hello/branches"]
    for path in paths * 2:
        github_get(other, path)
    # Fleet figures are the counters members announce (every 2 s): wait
    # until this node has heard the other's traffic.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = (rpc(base, "gh_get_cache_stats").get("aggregate") or {}).get("per_peer", [])
        if any(r["peer_id"] == peers[1] and r["lookups"] >= 4 for r in rows):
            break
        time.sleep(0.25)
    p = Page(browser)
    page = p.page
    page.goto(base + "/")
    # Membership takes a moment; the page asks the fleet at most every 5 s.
    for _ in range(WAIT_MS // 250 * 3):
        rows = page.locator("#fleet tbody tr").all_inner_texts()
        if len(rows) == 2 and all(("unreachable" not in r) for r in rows):
            break
        page.wait_for_timeout(250)
    rows = page.locator("#fleet tbody tr").all_inner_texts()
    check("the fleet table lists both nodes by Peer ID, this node first",
          len(rows) == 2 and rows[0].startswith(peers[0]) and "(this node)" in rows[0] and rows[1].startswith(peers[1]),
          "%s, want %s" % (rows, peers))
    # The page shows the fleet as it last asked (at most every 5 s); the
    # figures may move in between, so compare again after a refresh.
    for attempt in range(4):
        p.pause()
        agg = rpc(base, "gh_get_cache_stats")["aggregate"]
        rows = page.locator("#fleet tbody tr").all_inner_texts()
        shown = {r.split("\t")[0].replace(" (this node)", ""): r.split("\t") for r in rows}
        diffs = []
        for peer in agg["per_peer"]:
            cells = shown.get(peer["peer_id"])
            want_rate = "%.1f%%" % (100 * peer["hits"] / peer["lookups"]) if peer["lookups"] else "–"
            if not cells:
                diffs.append("%s not shown" % peer["peer_id"])
            elif (cells[1], cells[2], cells[3].replace(",", "")) != ("answering", want_rate, str(peer["lookups"])):
                diffs.append("%s shows %s, the aggregate says %s lookups, hit rate %s" % (
                    peer["peer_id"][-8:], cells[1:4], peer["lookups"], want_rate))
        if not diffs:
            break
        p.resume()
        page.wait_for_timeout(6000)
    other_row = shown.get(peers[1], ["", "", "", "0"])
    check("each node's health, hit rate and lookups equal gh_get_cache_stats' aggregate (%d nodes; the other: %s lookups, %s)"
          % (agg["nodes"], other_row[3], other_row[2]),
          not diffs and agg["nodes"] == 2 and other_row[3] == "4", "; ".join(diffs) or str(agg))
    page.locator("#fleet").locator("xpath=..").screenshot(path=screenshot)
    check("screenshot of the fleet card saved to " + screenshot, True)
    page.wait_for_timeout(500)
    check("no console errors and no page errors", not p.errors, "; ".join(p.errors[:5]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["open", "token", "fleet"])
    ap.add_argument("base")
    ap.add_argument("--repo", default="octo/hello")
    ap.add_argument("--token")
    ap.add_argument("--other", help="fleet: the other node's base URL")
    ap.add_argument("--peers", help="fleet: Peer IDs, BASE's first")
    ap.add_argument("--screenshot", default="docs/dashboard.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS)
        try:
            if a.phase == "open":
                phase_open(browser, a.base, a.repo, a.screenshot)
            elif a.phase == "token":
                phase_token(browser, a.base, a.token)
            else:
                phase_fleet(browser, a.base, a.other, a.peers.split(","), a.screenshot)
        except Exception as e:  # a timeout or a missing element: one failure, with why
            check("%s phase ran to the end" % a.phase, False, "%s: %s" % (type(e).__name__, str(e).splitlines()[0]))
        finally:
            browser.close()
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
