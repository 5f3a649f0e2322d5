// The ghcache dashboard: polls GET /api/dashboard every 2 s and draws it.
//
// - Every value from the daemon is put in the page as text (textContent,
//   SVG attributes), never as HTML; links only for http(s) URLs.
// - The token, when the daemon wants one (a 401), is asked once and kept in
//   sessionStorage (this tab only), sent as `Authorization: Bearer`.
// - State changes are POST /jsonrpc gh_invalidate_cache, with the token.
// - <body data-polls="N" data-inflight="0|1" data-paused="0|1"> says how
//   many answers were drawn, so a test can wait for a fresh one.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "ghcache.dashboard.token";
const SVG_NS = "http://www.w3.org/2000/svg";

// `results`: the last invalidation answer per button, kept across redraws.
const state = { paused: false, polls: 0, inflight: false, timer: null, last: null, results: {} };

function $(id) { return document.getElementById(id); }

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

function num(n) { return typeof n === "number" ? n.toLocaleString("en-US") : "–"; }

function setText(id, text, value) {
  const e = $(id);
  e.textContent = text;
  if (value !== undefined) e.dataset.value = value == null ? "" : String(value);
}

function duration(secs) {
  if (typeof secs !== "number") return "–";
  const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + Math.floor(secs % 60) + "s";
  return Math.floor(secs) + "s";
}

function ago(unixMs, nowMs) {
  const s = Math.max(0, Math.round((nowMs - unixMs) / 1000));
  return duration(s) + " ago";
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function httpUrl(u) { return typeof u === "string" && /^https?:\/\//.test(u) ? u : null; }

function setStatus(kind, text) {
  const s = $("status");
  s.dataset.state = kind;
  s.textContent = text;
}

// --- polling -----------------------------------------------------------------

function schedule() {
  clearTimeout(state.timer);
  if (!state.paused) state.timer = setTimeout(poll, POLL_MS);
}

/** One request and redraw; `force`: even while paused (after an action). */
async function poll(force) {
  if (state.inflight || (state.paused && !force)) return;
  state.inflight = true;
  document.body.dataset.inflight = "1";
  try {
    const r = await fetch("/api/dashboard", { headers: authHeaders(), cache: "no-store" });
    if (r.status === 401) {
      askToken(token() ? "that token was refused" : "");
      return;
    }
    if (!r.ok) {
      setStatus("error", "error " + r.status);
      return;
    }
    const data = await r.json();
    state.last = data;
    render(data);
    state.polls += 1;
    document.body.dataset.polls = String(state.polls);
    setStatus(state.paused ? "paused" : "live", state.paused ? "paused" : "live");
  } catch (e) {
    setStatus("error", "cannot reach the daemon");
  } finally {
    state.inflight = false;
    document.body.dataset.inflight = "0";
    if (!$("token-form").hidden) return;
    schedule();
  }
}

function askToken(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-form").hidden = false;
  $("main").hidden = true;
  $("token-error").textContent = why;
  setStatus("token", "token needed");
  $("token-input").focus();
}

function setupToken() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token-input").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token-input").value = "";
    $("token-form").hidden = true;
    $("main").hidden = false;
    poll();
  });
}

function setupPause() {
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    document.body.dataset.paused = state.paused ? "1" : "0";
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    if (state.paused) {
      clearTimeout(state.timer);
      setStatus("paused", "paused");
    } else {
      poll();
    }
  });
}

// --- invalidation ------------------------------------------------------------

/** POSTs gh_invalidate_cache; its answer goes to `out` and state.results[slot]. */
async function invalidate(args, out, slot) {
  const say = (text) => { out.textContent = text; state.results[slot] = text; };
  say("…");
  try {
    const body = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "gh_invalidate_cache", arguments: args } };
    const r = await fetch("/jsonrpc", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (r.status === 401) { askToken("that token was refused"); return; }
    const v = await r.json();
    if (v.error) { say("refused: " + v.error.message); return; }
    const res = v.result || {};
    say(num(res.invalidated) + " entries dropped");
    poll(true);
  } catch (e) {
    say("failed: " + e);
  }
}

function setupInvalidate() {
  $("invalidate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const pattern = $("invalidate-pattern").value.trim();
    invalidate(pattern ? { pattern } : {}, $("invalidate-result"), "pattern");
  });
}

// --- drawing -----------------------------------------------------------------

function render(d) {
  const s = d.stats || {};
  const rate = s.rate_limit || {};
  setText("version", d.version);
  setText("uptime", duration(s.uptime_secs));
  setText("peer-id", s.peer_id || "P2P off");
  const ratio = s.lookups > 0 ? (100 * s.hits / s.lookups).toFixed(1) + "%" : "–";
  setText("hit-ratio", ratio);
  setText("hits", num(s.hits), s.hits);
  setText("lookups", num(s.lookups), s.lookups);
  setText("saved", num(s.api_calls_saved), s.api_calls_saved);
  setText("api-calls", num(s.api_calls), s.api_calls);
  setText("quota-remaining", rate.remaining == null ? "unknown" : num(rate.remaining), rate.remaining);
  setText("quota-limit", rate.limit == null ? "–" : num(rate.limit), rate.limit);
  setText("quota-reset", rate.reset == null ? "–" : resetText(rate.reset, d.now_unix_ms), rate.reset);
  setText("entries", num(s.entries), s.entries);
  setText("bytes", bytes(s.bytes));
  setText("store", !s.store ? "off" : s.store.degraded ? "degraded" : "ok");
  const samples = (d.history && d.history.samples) || [];
  const interval = (d.history && d.history.interval_secs) || 10;
  drawPlot($("plot-rate"), samples, [
    (x, secs) => x.reads / secs, (x, secs) => x.hits / secs, (x, secs) => x.errors / secs,
  ], d.now_unix_ms, interval);
  drawPlot($("plot-latency"), samples, [(x) => x.mean_ms, (x) => x.p95_ms], d.now_unix_ms, interval);
  renderFleet(d.fleet);
  renderRepos(d.repos || [], d.now_unix_ms);
  renderActivity(d.activity || [], d.now_unix_ms);
  renderHot(d.hot_keys || {});
}

function resetText(resetSecs, nowMs) {
  const at = new Date(resetSecs * 1000);
  const left = resetSecs - Math.floor(nowMs / 1000);
  const when = at.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return left > 0 ? when + " (in " + duration(left) + ")" : when;
}

/**
 * Step lines of `series` (functions of a sample and its length in seconds)
 * over the last hour, or since the first sample when the daemon is younger.
 * Each sample spans its interval; the open one ends now.
 */
function drawPlot(root, samples, series, nowMs, interval) {
  const W = 600, H = 180, L = 44, R = 8, T = 8, B = 20;
  const step = interval * 1000;
  const pts = samples.filter((p) => p.start_unix_ms + step >= nowMs - 3600 * 1000);
  const x0 = pts.length ? Math.max(nowMs - 3600 * 1000, pts[0].start_unix_ms) : nowMs - 3600 * 1000;
  const span = Math.max(1000, nowMs - x0);
  const end = (j) => (j === pts.length - 1 ? nowMs : pts[j].start_unix_ms + step);
  const secs = (j) => Math.max(1, (end(j) - pts[j].start_unix_ms) / 1000);
  let max = 0;
  pts.forEach((p, j) => { for (const f of series) max = Math.max(max, f(p, secs(j)) || 0); });
  max = niceCeil(max);
  const X = (t) => L + (W - L - R) * Math.min(1, Math.max(0, (t - x0) / span));
  const Y = (v) => T + (H - T - B) * (1 - (v || 0) / max);
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, y = Y(v);
    nodes.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    nodes.push(svg("text", { class: "axis", x: L - 4, y: y + 3, "text-anchor": "end" }, shortNum(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const back = span * (4 - i) / 4;
    nodes.push(svg("text", { class: "axis", x: X(nowMs - back), y: H - 5, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
      i === 4 ? "now" : "-" + duration(Math.round(back / 1000))));
  }
  series.forEach((f, i) => {
    const coords = [];
    pts.forEach((p, j) => {
      const y = Y(f(p, secs(j))).toFixed(1);
      coords.push(X(p.start_unix_ms).toFixed(1) + "," + y, X(end(j)).toFixed(1) + "," + y);
    });
    if (coords.length) nodes.push(svg("polyline", { class: "s" + i, points: coords.join(" ") }));
  });
  root.replaceChildren(...nodes);
  root.dataset.points = String(pts.length);
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function shortNum(v) {
  if (v >= 1000) return String(+(v / 1000).toFixed(v >= 10000 ? 0 : 1)) + "k";
  if (v >= 10 || Number.isInteger(v)) return v.toFixed(0);
  return String(+v.toFixed(2));
}

function hitRate(p) {
  return p.lookups > 0 ? (100 * p.hits / p.lookups).toFixed(1) + "%" : "–";
}

function renderFleet(f) {
  const body = $("fleet").tBodies[0];
  $("fleet").hidden = !f;
  if (!f) {
    $("fleet-summary").textContent = "P2P is off: this node alone.";
    body.replaceChildren();
    return;
  }
  $("fleet-summary").textContent = num(f.nodes) + " nodes answered (" + num(f.peers) + (f.peers === 1 ? " peer" : " peers") +
    " connected); fleet hit rate " +
    hitRate(f) + ", " + num(f.api_calls_saved) + " upstream requests saved.";
  const rows = (f.per_peer || []).map((p, i) => el("tr", {},
    el("td", { class: "key" }, p.peer_id + (i === 0 ? " (this node)" : "")),
    el("td", {}, el("span", { class: "badge ok" }, "answering")),
    el("td", {}, hitRate(p)), el("td", {}, num(p.lookups)), el("td", {}, num(p.api_calls)),
    el("td", {}, num(p.api_calls_saved)), el("td", {}, num(p.entries))));
  for (const u of f.unreachable || []) {
    rows.push(el("tr", {}, el("td", { class: "key" }, u.peer_id),
      el("td", { title: String(u.error || "") }, el("span", { class: "badge bad" }, "unreachable")),
      el("td", { colspan: "5", class: "muted" }, String(u.error || ""))));
  }
  body.replaceChildren(...rows);
}

function conclusionBadge(run) {
  const c = run.conclusion || run.status || "?";
  const cls = c === "success" ? "ok" : ["failure", "cancelled", "timed_out", "startup_failure"].includes(c) ? "bad" : "warn";
  return el("span", { class: "badge " + cls }, c);
}

function readNote(r) {
  if (!r) return "";
  if (r.error) return "";
  return r.cache_mode + ", " + duration(r.age_secs) + " old";
}

function renderRepos(repos, nowMs) {
  const root = $("repos");
  root.replaceChildren(...repos.map((rp) => {
    const card = el("div", { class: "card repo", "data-repo": rp.repo });
    card.append(el("h3", {}, rp.repo));
    const runners = el("div", { class: "runners" }, el("h2", {}, "Runners"));
    if (rp.runners.error) {
      runners.append(el("p", { class: "error" }, rp.runners.error));
    } else {
      const rows = rp.runners.items.map((r) => el("tr", {},
        el("td", {}, r.name), el("td", {}, r.os || ""),
        el("td", {}, el("span", { class: "badge " + (r.status === "online" ? "ok" : "bad") }, r.status || "?")),
        el("td", {}, r.busy ? "busy" : "idle"), el("td", { class: "muted wrap" }, (r.labels || []).join(", "))));
      runners.append(rows.length ? el("table", {}, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "no self-hosted runners"));
      runners.append(el("p", { class: "muted" }, readNote(rp.runners)));
    }
    const runs = el("div", { class: "runs" }, el("h2", {}, "Latest workflow runs"));
    if (rp.runs.error) {
      runs.append(el("p", { class: "error" }, rp.runs.error));
    } else {
      const rows = rp.runs.items.map((r) => {
        const url = httpUrl(r.html_url);
        const title = r.display_title || r.name || String(r.id);
        return el("tr", {},
          el("td", {}, conclusionBadge(r)),
          el("td", { class: "wrap" }, url ? el("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, title) : title),
          el("td", { class: "muted" }, (r.name || "") + " #" + (r.run_number == null ? "?" : r.run_number)),
          el("td", {}, r.head_branch || ""), el("td", { class: "muted" }, r.event || ""),
          el("td", { class: "muted" }, r.updated_at ? ago(Date.parse(r.updated_at), nowMs) : ""));
      });
      runs.append(rows.length ? el("table", {}, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "no runs"));
      runs.append(el("p", { class: "muted" }, readNote(rp.runs)));
    }
    const slot = "repo:" + rp.repo;
    const out = el("span", { class: "muted repo-result" }, state.results[slot] || "");
    const button = el("button", { type: "button" }, "Invalidate " + rp.repo);
    button.addEventListener("click", () => invalidate({ repo: rp.repo }, out, slot));
    card.append(el("div", { class: "repo-grid" }, runners, runs), el("p", { class: "repo-actions" }, button, " ", out));
    return card;
  }));
}

function renderActivity(events, nowMs) {
  const items = events.slice().reverse().map((e) => el("li", { "data-kind": e.kind },
    el("span", { class: "when" }, ago(e.at_unix_ms, nowMs)),
    el("span", { class: "badge" }, e.kind === "webhook" ? "webhook" : "invalidation"), " ", e.detail));
  $("activity").replaceChildren(...items);
  if (!items.length) $("activity").append(el("li", { class: "muted" }, "nothing yet"));
}

function renderHot(h) {
  const rows = (h.keys || []).map((k) => el("tr", {}, el("td", { class: "key" }, k.key),
    el("td", { title: "may overstate by " + k.error }, num(k.count))));
  $("hot-keys").tBodies[0].replaceChildren(...rows);
  $("hot-note").textContent = "Approximate (space-saving, 32 counters)" +
    (h.skipped ? "; " + num(h.skipped) + " reads not counted while the table was busy." : ".");
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.dataset.polls = "0";
  document.body.dataset.paused = "0";
  setupToken();
  setupPause();
  setupInvalidate();
  poll();
});
