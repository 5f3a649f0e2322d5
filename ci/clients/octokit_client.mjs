// @octokit/rest 22 (with octokit.paginate and octokit.graphql) against a
// GitHub API base URL; prints a transcript of what it read.
//
// Usage: node octokit_client.mjs BASE_URL TOKEN reads|all
//
// `reads` makes only cacheable GETs; `all` adds what a cache must pass
// through (a secondary rate limit, GraphQL) and writes (create an issue,
// comment, label) with read-backs. Every occurrence of BASE_URL in the output
// is written `{BASE}`, so a run straight against the fake GitHub and a run
// through a proxy print the same text when the proxy is faithful. Quota
// numbers that a cache legitimately changes (remaining, used) are not printed.
import { Octokit } from "@octokit/rest";

const [BASE_ARG, TOKEN, PHASE] = process.argv.slice(2);
const BASE = BASE_ARG.replace(/\/+$/, "");
const MAX_PAGES = 60; // more pages than any list here has: a client looping, not data
const octokit = new Octokit({ auth: TOKEN, baseUrl: BASE, log: { debug() {}, info() {}, warn() {}, error() {} } });
const repo = { owner: "octo", repo: "hello" };

function out(key, value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  console.log(`${key}: ${String(text).split(BASE).join("{BASE}")}`);
}

// Runs one step; a client error becomes a transcript line, not a crash.
async function attempt(label, fn) {
  try {
    await fn();
  } catch (e) {
    const h = e.response?.headers ?? {};
    const msg = e.response?.data?.message ?? e.message;
    out(label, `${e.name} status=${e.status} retry-after=${h["retry-after"]} message=${msg}`);
  }
}

// octokit.paginate, stopped after MAX_PAGES so a proxy that loops cannot hang the gate.
async function paginate(route, params) {
  let pages = 0;
  const items = await octokit.paginate(route, params, (response, done) => {
    pages += 1;
    if (pages >= MAX_PAGES) done();
    return response.data;
  });
  return { items, pages };
}

const nums = (xs) => xs.join(" ");
const header = (r, name) => r.headers[name] ?? "(absent)";

async function reads() {
  await attempt("user", async () => out("user.login", (await octokit.rest.users.getAuthenticated()).data.login));

  let r;
  await attempt("repo", async () => {
    r = await octokit.rest.repos.get(repo);
    for (const f of ["full_name", "id", "url", "html_url", "issues_url", "pulls_url", "open_issues_count"]) {
      out(`repo.${f}`, r.data[f]);
    }
    for (const h of ["content-type", "x-github-media-type", "x-oauth-scopes", "x-accepted-oauth-scopes",
      "last-modified", "etag", "x-ratelimit-limit", "x-ratelimit-resource", "x-ratelimit-reset", "link"]) {
      out(`repo.header.${h}`, header(r, h));
    }
    out("repo.header.x-ratelimit-remaining.known", /^\d+$/.test(r.headers["x-ratelimit-remaining"] ?? ""));
    out("repo.header.x-ratelimit-used.known", /^\d+$/.test(r.headers["x-ratelimit-used"] ?? ""));
  });

  await attempt("conditional", async () => {
    const etag = r?.headers.etag ?? "\"none\"";
    const c = await octokit.request("GET /repos/{owner}/{repo}", { ...repo, headers: { "if-none-match": etag } });
    out("conditional.status", c.status);
  });

  await attempt("issues", async () => {
    const { items, pages } = await paginate(octokit.rest.issues.listForRepo, { ...repo, per_page: 30 });
    out("issues.count", items.length);
    out("issues.pages", pages);
    out("issues.numbers", nums(items.map((i) => i.number)));
    const p2 = await octokit.rest.issues.listForRepo({ ...repo, per_page: 10, page: 2 });
    out("issues.page2.link", header(p2, "link"));
    out("issues.page2.numbers", nums(p2.data.map((i) => i.number)));
  });

  await attempt("follow", async () => {
    // Code that follows the URLs GitHub put in the body (they must lead back to this base).
    const issuesUrl = r.data.issues_url.replace("{/number}", "/12");
    const issue = await octokit.request(`GET ${issuesUrl}`);
    out("follow.issue12", `${issue.data.title} labels=${issue.data.labels.map((l) => l.name).join(",")} from=${issue.url}`);
    const comments = await octokit.request(`GET ${issue.data.comments_url}`);
    out("follow.issue12.comments", `${JSON.stringify(comments.data.map((c) => c.body))} from=${comments.url}`);
    const c1 = await octokit.rest.issues.get({ ...repo, issue_number: 1 });
    const all = await paginate(`GET ${c1.data.comments_url}`, {});
    out("follow.issue1.comments.count", all.items.length);
  });

  await attempt("cap", async () => {
    const { items, pages } = await paginate(octokit.rest.activity.listStargazersForRepo, { ...repo, per_page: 150 });
    out("stargazers.per_page150.count", items.length);
    out("stargazers.per_page150.pages", pages);
  });

  await attempt("runs", async () => {
    const first = await octokit.rest.actions.listWorkflowRunsForRepo({ ...repo, per_page: 20 });
    out("runs.total_count", first.data.total_count);
    out("runs.page1.link", header(first, "link"));
    const { items, pages } = await paginate(octokit.rest.actions.listWorkflowRunsForRepo, { ...repo, per_page: 20 });
    out("runs.count", items.length);
    out("runs.pages", pages);
    out("runs.first", `${items[0].id} ${items[0].url}`);
  });

  await attempt("cursor", async () => {
    const first = await octokit.rest.dependabot.listAlertsForRepo({ ...repo, per_page: 25 });
    out("alerts.page1.link", header(first, "link"));
    const { items, pages } = await paginate(octokit.rest.dependabot.listAlertsForRepo, { ...repo, per_page: 25 });
    out("alerts.count", items.length);
    out("alerts.pages", pages);
    out("alerts.numbers", nums(items.map((a) => a.number)));
  });

  await attempt("media.diff", async () => {
    const d = await octokit.rest.pulls.get({ ...repo, pull_number: 76, mediaType: { format: "diff" } });
    out("media.diff.content-type", header(d, "content-type"));
    out("media.diff.x-github-media-type", header(d, "x-github-media-type"));
    out("media.diff.body", d.data);
  });
  await attempt("media.patch", async () => {
    const d = await octokit.rest.pulls.get({ ...repo, pull_number: 77, mediaType: { format: "patch" } });
    out("media.patch.x-github-media-type", header(d, "x-github-media-type"));
    out("media.patch.subject", String(d.data).split("\n").find((l) => l.startsWith("Subject:")));
  });
  await attempt("media.raw", async () => {
    const d = await octokit.rest.repos.getContent({ ...repo, path: "README.md", mediaType: { format: "raw" } });
    out("media.raw.x-github-media-type", header(d, "x-github-media-type"));
    out("media.raw.body", d.data);
  });
  await attempt("media.html", async () => {
    const d = await octokit.rest.issues.get({ ...repo, issue_number: 3, mediaType: { format: "html" } });
    out("media.html.x-github-media-type", header(d, "x-github-media-type"));
    out("media.html.fields", `body=${"body" in d.data} body_html=${d.data.body_html}`);
  });
  await attempt("media.text", async () => {
    const d = await octokit.rest.issues.getComment({ ...repo, comment_id: 5000001, mediaType: { format: "text" } });
    out("media.text.x-github-media-type", header(d, "x-github-media-type"));
    out("media.text.body_text", d.data.body_text);
  });
  await attempt("media.json", async () => {
    const d = await octokit.rest.pulls.get({ ...repo, pull_number: 76 });
    out("media.json.title", `${d.data.title} ${header(d, "x-github-media-type")}`);
  });

  await attempt("renamed", async () => {
    const d = await octokit.rest.repos.get({ owner: "octo", repo: "old-name" });
    out("renamed.full_name", d.data.full_name);
  });
}

async function passthroughAndWrites() {
  await attempt("secondary", async () => {
    await octokit.rest.issues.listForRepo({ owner: "octo", repo: "busy" });
    out("secondary", "no error");
  });

  await attempt("graphql", async () => {
    const d = await octokit.graphql(
      "query($owner: String!, $name: String!) { viewer { login } repository(owner: $owner, name: $name) { nameWithOwner issues { totalCount } } }",
      { owner: "octo", name: "hello" });
    out("graphql", d);
  });

  await attempt("writes", async () => {
    const created = await octokit.rest.issues.create({ ...repo, title: "Created by octokit", body: "hello", labels: ["question"] });
    const n = created.data.number;
    out("created", `${created.status} #${n} ${created.data.url} location=${header(created, "location")}`);
    const c = await octokit.rest.issues.createComment({ ...repo, issue_number: n, body: "first comment" });
    out("comment", `${c.status} ${c.data.id} ${c.data.url}`);
    const l = await octokit.rest.issues.addLabels({ ...repo, issue_number: n, labels: ["bug"] });
    out("labels", l.data.map((x) => x.name));
    const again = await octokit.rest.issues.get({ ...repo, issue_number: n });
    out("readback", `#${again.data.number} comments=${again.data.comments} labels=${again.data.labels.map((x) => x.name)}`);
    const list = await paginate(octokit.rest.issues.listForRepo, { ...repo, per_page: 100 });
    out("readback.open_issues.count", list.items.length);
    const del = await octokit.rest.issues.removeLabel({ ...repo, issue_number: n, name: "question" });
    out("readback.after_remove", del.data.map((x) => x.name));
  });
}

await reads();
if (PHASE === "all") await passthroughAndWrites();
