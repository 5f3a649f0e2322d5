// Every example payload of @octokit/webhooks-examples, signed by
// @octokit/webhooks-methods (not by ghcache), POSTed to a running daemon's
// /webhook. Run by ci/webhooks-check, which starts the daemon.
//
// Usage: node check.mjs BASE_URL SECRET
// Prints one `PASS name` / `FAIL name: why` line per check and a summary of
// the answers per event; exits non-zero when anything failed.
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { sign } from "@octokit/webhooks-methods";

const require = createRequire(import.meta.url);
const examples = require("@octokit/webhooks-examples");
const version = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;
const examplesVersion = version("@octokit/webhooks-examples");
const methodsVersion = version("@octokit/webhooks-methods");

const [base, secret] = process.argv.slice(2);
if (!base || !secret) {
  console.error("usage: node check.mjs BASE_URL SECRET");
  process.exit(2);
}

let failed = 0;
const pass = (msg) => console.log(`PASS ${msg}`);
const fail = (msg) => {
  failed += 1;
  console.log(`FAIL ${msg}`);
};

async function deliver(event, body, { id = randomUUID(), signature } = {}) {
  const sig = signature ?? (await sign(secret, body));
  const r = await fetch(`${base}/webhook`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "user-agent": "GitHub-Hookshot/ghcache-check",
      "x-github-event": event,
      "x-github-delivery": id,
      "x-hub-signature-256": sig,
    },
    body,
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // reported below with the status
  }
  return { status: r.status, json, text, id };
}

// 0. Prime the cache: a few reads of every repository the examples name,
// through the daemon's /github/ proxy (the fake GitHub answers them, 404
// included, and the proxy caches the answers).
const PRIMED = ["", "/commits", "/issues", "/actions/runs"];
const repos = [...new Set(examples.flatMap((e) => e.examples.map((p) => p.repository?.full_name).filter(Boolean)))];
const read = async (path) => (await fetch(`${base}/github${path}`)).headers.get("x-cache-mode");
for (const repo of repos) {
  for (const area of PRIMED) await read(`/repos/${repo}${area}`);
}
let primedHits = 0;
for (const repo of repos) {
  for (const area of PRIMED) primedHits += (await read(`/repos/${repo}${area}`)) === "hit" ? 1 : 0;
}
if (primedHits === repos.length * PRIMED.length) {
  pass(`primed ${primedHits} reads of ${repos.length} repositories (each a hit when read again)`);
} else {
  fail(`priming: ${primedHits} of ${repos.length * PRIMED.length} reads were hits on the second read`);
}

// 1. Every example: 2xx (200 applied or 202 ignored).
let total = 0;
const byStatus = {};
const perEvent = [];
let dropped = 0;
let first = null;
for (const { name, examples: payloads } of examples) {
  const counts = {};
  for (const [i, payload] of payloads.entries()) {
    const body = JSON.stringify(payload);
    const answer = await deliver(name, body);
    total += 1;
    byStatus[answer.status] = (byStatus[answer.status] ?? 0) + 1;
    counts[answer.status] = (counts[answer.status] ?? 0) + 1;
    if (answer.status < 200 || answer.status > 299) {
      fail(`${name}[${i}] (${payload.action ?? "-"}): ${answer.status} ${answer.text.slice(0, 300)}`);
    } else if (answer.status === 200 && !Array.isArray(answer.json?.invalidated)) {
      fail(`${name}[${i}]: 200 without an "invalidated" list: ${answer.text.slice(0, 300)}`);
    } else if (answer.status === 200) {
      dropped += answer.json.dropped;
    }
    first ??= { name, body };
  }
  perEvent.push(`${name}: ${Object.entries(counts).map(([s, n]) => `${n}x${s}`).join(" ")}`);
}
const events = examples.length;
if (failed === 0) {
  pass(`every example answered 2xx: ${total} payloads of ${events} events ` +
    `(@octokit/webhooks-examples ${examplesVersion}, signed by @octokit/webhooks-methods ${methodsVersion})`);
}
console.log(`    answers: ${Object.entries(byStatus).map(([s, n]) => `${s}: ${n}`).join(", ")}`);
for (const line of perEvent) console.log(`    ${line}`);

// 2. A tampered signature (one hex digit changed) and a tampered body: 401.
{
  const good = await sign(secret, first.body);
  const last = good.at(-1);
  const tampered = good.slice(0, -1) + (last === "0" ? "1" : "0");
  const a = await deliver(first.name, first.body, { signature: tampered });
  const b = await deliver(first.name, first.body + " ", { signature: good });
  const c = await deliver(first.name, first.body, { signature: await sign(secret + "x", first.body) });
  if (a.status === 401 && b.status === 401 && c.status === 401) {
    pass("tampered signature, tampered body and wrong secret: 401");
  } else {
    fail(`tampering: expected 401 x3, got ${a.status} ${b.status} ${c.status}`);
  }
}

// 3. A replayed delivery id: duplicate, nothing applied.
{
  const body = JSON.stringify({ action: "completed", repository: { full_name: "octo-org/octo-repo" } });
  const id = randomUUID();
  const once = await deliver("workflow_job", body, { id });
  const again = await deliver("workflow_job", body, { id });
  if (once.status === 200 && !once.json?.duplicate && again.status === 200 && again.json?.duplicate === true) {
    pass("a replayed X-GitHub-Delivery is answered {duplicate: true}");
  } else {
    fail(`replay: ${once.status} ${once.text} then ${again.status} ${again.text}`);
  }
}

// 4. /metrics counted them.
{
  const text = await (await fetch(`${base}/metrics`)).text();
  const count = (result) =>
    Number(text.match(new RegExp(`^ghcache_webhook_deliveries_total\\{result="${result}"\\} (\\d+)$`, "m"))?.[1]);
  const got = {
    accepted: count("accepted"),
    ignored: count("ignored"),
    duplicate: count("duplicate"),
    bad_signature: count("bad_signature"),
  };
  const want = {
    accepted: (byStatus[200] ?? 0) + 1,
    ignored: byStatus[202] ?? 0,
    duplicate: 1,
    bad_signature: 3,
  };
  if (JSON.stringify(got) === JSON.stringify(want)) {
    pass(`/metrics: ${JSON.stringify(got)}`);
  } else {
    fail(`/metrics: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

// 5. The invalidations were real: primed reads went upstream again.
{
  let again = 0;
  for (const repo of repos) {
    for (const area of PRIMED) again += (await read(`/repos/${repo}${area}`)) === "hit" ? 0 : 1;
  }
  if (dropped > 0 && again > 0) {
    pass(`the examples dropped ${dropped} cached entries; ${again} of ${repos.length * PRIMED.length} primed reads went to GitHub again`);
  } else {
    fail(`nothing was invalidated: dropped ${dropped}, primed reads not hits afterwards ${again}`);
  }
}
process.exit(failed ? 1 : 0);
