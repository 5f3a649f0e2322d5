#!/usr/bin/env bash
# The GitHub CLI (`gh api`, Debian package `gh`) against a GitHub API base
# URL; prints a transcript of what it read.
#
# Usage: gh_client.sh BASE_URL TOKEN reads|all
#
# How gh reaches a plain-http base (tried with gh 2.23): `gh api` accepts a
# full URL as its endpoint and then uses it as is, scheme and port included;
# the token for a host other than github.com comes from GH_ENTERPRISE_TOKEN
# (GH_TOKEN is only for github.com, and `-H Authorization:` alone is refused
# before any request as "not logged in"). GH_HOST=127.0.0.1:PORT does not
# work: gh builds https://HOST/api/v3/ from it. `--paginate` follows
# Link rel="next" as given, and adds per_page=100 when the URL has none.
#
# `reads` makes only cacheable GETs; `all` adds what a cache must pass through
# (a secondary rate limit, GraphQL) and writes. Every occurrence of BASE_URL
# in the output is written `{BASE}`.
set -uo pipefail
BASE=${1%/}
export GH_ENTERPRISE_TOKEN=$2
PHASE=$3
GH_CONFIG_DIR=$(mktemp -d)
export GH_CONFIG_DIR GH_NO_UPDATE_NOTIFIER=1 GH_PROMPT_DISABLED=1 NO_COLOR=1 GH_PAGER=cat
trap 'rm -rf "$GH_CONFIG_DIR"' EXIT
R="$BASE/repos/octo/hello"

# step LABEL gh-api-args...: one `gh api` call; its output, or its exit code
# and error text, as transcript lines (gh is stopped after 60 s: a looping
# --paginate must not hang the gate).
step() {
  local label=$1 outf errf rc
  shift
  outf=$(mktemp) errf=$(mktemp)
  timeout 60 gh api "$@" >"$outf" 2>"$errf"
  rc=$?
  if [[ $rc -eq 124 ]]; then
    echo "$label: still running after 60 s (a pagination loop?), stopped"
  elif [[ $rc -eq 0 ]]; then
    sed "s|$BASE|{BASE}|g; s|^|$label: |" "$outf"
    [[ -n $(tail -c1 "$outf") ]] && echo  # gh leaves some answers without a final newline
  else
    echo "$label: exit=$rc $(tr '\n' ' ' <"$errf" | sed "s|$BASE|{BASE}|g")"
  fi
  rm -f "$outf" "$errf"
}

# headers LABEL URL NAMES...: the named response headers of a GET, in order.
headers() {
  local label=$1 url=$2
  shift 2
  local resp
  resp=$(timeout 60 gh api -i "$url" 2>&1 | tr -d '\r')
  for h in "$@"; do
    echo "$label.$h: $(grep -i "^$h:" <<<"$resp" | head -1 | cut -d' ' -f2- | sed "s|$BASE|{BASE}|g")"
  done
}

step user "$BASE/user" --jq .login
step repo "$R" --jq '[.full_name, .id, .url, .html_url, .issues_url] | join(" ")'
headers repo "$R" Content-Type X-GitHub-Media-Type X-OAuth-Scopes X-Accepted-OAuth-Scopes Last-Modified ETag \
  X-RateLimit-Limit X-RateLimit-Resource Link
headers issues.page2 "$R/issues?per_page=10&page=2" Link
step issues.paginate --paginate "$R/issues?per_page=30" --jq 'map(.number) | join(" ")'
step issues.paginate100 --paginate "$R/issues" --jq 'length'
step comments.paginate --paginate "$R/issues/1/comments?per_page=10" --jq '"\(length) \(.[0].id) \(.[0].url)"'
step branches.paginate --paginate "$R/branches?per_page=15" --jq 'map(.name) | join(" ")'
step runs.paginate --paginate "$R/actions/runs?per_page=20" --jq '.total_count, (.workflow_runs | map(.id) | join(" "))'
step alerts.cursor --paginate "$R/dependabot/alerts?per_page=25" --jq 'map(.number) | join(" ")'
step stargazers.cap --paginate "$R/stargazers?per_page=150" --jq 'length'
step media.diff -H 'Accept: application/vnd.github.diff' "$R/pulls/76"
step media.patch -H 'Accept: application/vnd.github.patch' "$R/pulls/77"
step media.raw -H 'Accept: application/vnd.github.raw+json' "$R/contents/README.md"
step media.html -H 'Accept: application/vnd.github.html+json' "$R/issues/3" --jq '[has("body"), .body_html] | @json'
step renamed "$BASE/repos/octo/old-name" --jq .full_name

if [[ $PHASE == all ]]; then
  step secondary "$BASE/repos/octo/busy/issues"
  step graphql -X POST "$BASE/graphql" \
    -f query='query { viewer { login } repository(owner: "octo", name: "hello") { nameWithOwner issues { totalCount } } }'
  n=$(timeout 60 gh api -X POST "$R/issues" -f title='Created by gh' -f body='hello from gh' --jq .number 2>&1)
  if [[ ! $n =~ ^[0-9]+$ ]]; then
    echo "created: failed: $(tr '\n' ' ' <<<"$n" | sed "s|$BASE|{BASE}|g")"
    exit 0
  fi
  echo "created: #$n"
  step comment -X POST "$R/issues/$n/comments" -f body='first comment' --jq '"\(.id) \(.url)"'
  step labels -X POST "$R/issues/$n/labels" -f 'labels[]=bug' -f 'labels[]=client-gate' --jq 'map(.name) | join(",")'
  step readback "$R/issues/$n" --jq '"#\(.number) comments=\(.comments) labels=\(.labels | map(.name) | join(","))"'
  step readback.open --paginate "$R/issues" --jq 'length'
  step close -X PATCH "$R/issues/$n" -f state=closed --jq .state
fi
