"""Tool policies (DESIGN §13) with real MCP clients through the proxy to annotated upstreams.

The peers' `add` and `echo` carry `readOnlyHint: true`, `wipe` `readOnlyHint: false` (and
destructive); the others carry no annotations. Clients: `mcp` 2.x in auto (2026-07-28) and
legacy (2025-11-25) modes, its legacy SSE transport, and `mcp` 1.30's `ClientSession`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError
from support.mcp_peers import UpstreamProcess

from bindify_appliance.proxy.policy import ToolPolicy, effective
from bindify_appliance.proxy.tool_gate import DENIED_CODE

from .conftest import ProxyHarness
from .test_clients import connect, run_mcp1_client

DENY_WIPE = effective(ToolPolicy(deny=("wipe",)), None)
READ_ONLY = effective(None, ToolPolicy(read_only=True))


async def _refused(call: object) -> int:
    with pytest.raises(MCPError) as caught:
        await call  # type: ignore[misc]
    return caught.value.error.code


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp2_client_sees_no_denied_tool_and_cannot_call_it(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess, mode: str
) -> None:
    creds, target = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp", policy=DENY_WIPE)
    async with connect(proxy, "acme", creds, "path", mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "wipe" not in names
        assert {"add", "echo", "progress", "whoami"} <= names
        assert await _refused(client.call_tool("wipe", {})) == DENIED_CODE
        added = await client.call_tool("add", {"a": 1, "b": 2})
        assert added.content[0].text == "3"  # type: ignore[union-attr]
    assert proxy.resolver.denials == [(target.connection_id, "wipe")]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp2_client_read_only_keeps_only_read_only_annotated_tools(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess, mode: str
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp", policy=READ_ONLY)
    async with connect(proxy, "acme", creds, "api_key", mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"add", "echo"}  # no annotation = not read-only (fail closed)
        assert await _refused(client.call_tool("wipe", {})) == DENIED_CODE
        assert await _refused(client.call_tool("progress", {"steps": 1, "interval": 0})) == (
            DENIED_CODE
        )
        echoed = await client.call_tool("echo", {"text": "ok"})
        assert echoed.content[0].text == "ok"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_read_only_call_before_any_listing_fetches_the_list_first(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess, mode: str
) -> None:
    """The catalog is empty: the proxy asks the upstream (with the member's session and
    revision) before deciding, for the allowed tool and the refused one alike."""
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp", policy=READ_ONLY)
    async with connect(proxy, "acme", creds, "path", mode=mode) as client:
        added = await client.call_tool("add", {"a": 20, "b": 22})
        assert added.content[0].text == "42"  # type: ignore[union-attr]
        assert await _refused(client.call_tool("wipe", {})) == DENIED_CODE


async def test_mcp2_legacy_sse_client_list_is_filtered_on_the_stream(
    proxy: ProxyHarness, mcp2_sse: UpstreamProcess
) -> None:
    creds, _ = proxy.resolver.add(
        "acme", mcp2_sse.origin + "/sse", transport="sse", policy=READ_ONLY
    )
    async with connect(proxy, "acme", creds, "path", mode="legacy", sse=True) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"add", "echo"}
        added = await client.call_tool("add", {"a": 1, "b": 1})  # learnt from the stream
        assert added.content[0].text == "2"  # type: ignore[union-attr]


@pytest.mark.parametrize("upstream", ["mcp1_streamable", "mcp2_stateful"])
async def test_mcp1_client_through_a_policy(
    proxy: ProxyHarness,
    mcp1_python: Path,
    upstream: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peer: UpstreamProcess = request.getfixturevalue(upstream)
    creds, _ = proxy.resolver.add("acme", peer.origin + "/mcp", policy=READ_ONLY)
    monkeypatch.setenv("MCP1_CLIENT_MODE", "policy")
    result = await run_mcp1_client(mcp1_python, proxy.path_url("acme", creds), "http")
    assert result["tools"] == ["add", "echo"]
    assert result["add"] == "42"
    assert result["wipe"]["code"] == DENIED_CODE
    assert "tool not allowed by policy" in result["wipe"]["message"]
