#!/usr/bin/env python3
"""Talks to ghcache's /mcp with the official Python MCP SDK (PyPI `mcp`).

Two sessions: the high-level `mcp.Client` (newest protocol it negotiates)
and a classic `ClientSession.initialize()` over the streamable-HTTP
transport. Each lists the tools and calls gh_get_cache_stats and
gh_get_repo. Exits non-zero on any mismatch.
"""
import asyncio
import json
import sys

import mcp
from mcp.client.streamable_http import streamable_http_client

EXPECTED = {
    "gh_get_cache_stats", "gh_invalidate_cache", "gh_api", "gh_list_repos", "gh_get_repo",
    "gh_list_workflow_runs", "gh_get_workflow_run", "gh_list_runners", "gh_list_issues",
    "gh_list_pull_requests", "gh_get_rate_limit", "gh_get_auth_status",
}


def structured(result):
    data = getattr(result, "structured_content", None)
    if data is None:
        data = getattr(result, "structuredContent", None)
    if data is None:
        data = json.loads(result.content[0].text)
    return data


def check(names, stats, repo, label):
    missing = EXPECTED - set(names)
    assert not missing, f"{label}: tools missing: {missing}"
    assert "peer_id" in stats and "hits" in stats, f"{label}: bad stats {stats}"
    assert repo["cache_mode"] in ("miss", "hit", "revalidated"), f"{label}: bad repo result {repo}"
    print(f"{label}: {len(names)} tools; gh_get_cache_stats lookups={stats['lookups']} "
          f"peer_id={stats['peer_id']}; gh_get_repo cache_mode={repo['cache_mode']}")


async def high_level(url):
    async with mcp.Client(url) as client:
        tools = await client.list_tools()
        names = [t.name for t in tools.tools]
        stats = structured(await client.call_tool("gh_get_cache_stats", {}))
        repo = structured(await client.call_tool("gh_get_repo", {"repo": "octo/hello"}))
        check(names, stats, repo, f"mcp.Client (protocol {client.protocol_version})")


async def classic(url):
    async with streamable_http_client(url) as streams:
        read, write = streams[0], streams[1]
        async with mcp.ClientSession(read, write) as session:
            init = await session.initialize()
            print(f"ClientSession: protocol {init.protocol_version}, server {init.server_info.name}")
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            stats = structured(await session.call_tool("gh_get_cache_stats", {}))
            repo = structured(await session.call_tool("gh_get_repo", {"repo": "octo/hello"}))
            check(names, stats, repo, "ClientSession")
            assert repo["cache_mode"] == "hit", f"second read should hit: {repo}"
            # Bad arguments come back as a tool error the model can read.
            bad = await session.call_tool("gh_get_repo", {"repo": "no-slash"})
            assert bad.is_error, f"bad arguments should be isError: {bad}"
            assert "owner/name" in bad.content[0].text, f"the error should say why: {bad}"
            print("ClientSession: bad arguments -> isError with the reason")


async def main(url):
    await high_level(url)
    await classic(url)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
    print("mcp client check: ok")
