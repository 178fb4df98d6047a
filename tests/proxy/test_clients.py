"""Real MCP clients through the proxy to real MCP upstreams, both credential forms.

Matrix: `mcp` 2.x `Client` in auto (2026-07-28 with fallback) and legacy (initialize handshake)
modes, and its legacy SSE transport; `mcp` 1.30 `ClientSession` over Streamable HTTP and SSE
(subprocesses of `.venv-mcp1`); upstreams `mcp` 2.x `MCPServer` (stateful, stateless, SSE) and
`mcp` 1.30 `FastMCP` (Streamable HTTP, SSE). Tools, resources, prompts and ping each time;
progress timing where it is asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from support.mcp_peers import PEERS, UpstreamProcess

from .conftest import ProxyHarness

Form = Literal["path", "api_key"]


@asynccontextmanager
async def connect(
    proxy: ProxyHarness,
    service: str,
    creds: str,
    form: Form,
    *,
    mode: str = "auto",
    sse: bool = False,
) -> AsyncIterator[Client]:
    """An `mcp` 2.x client for one of the proxy's URL forms, connected."""
    suffix = "/sse" if sse else ""
    if form == "path":
        url = proxy.path_url(service, creds, suffix)
        headers: dict[str, str] = {}
    else:
        url = proxy.key_url(service, suffix)
        headers = {"Authorization": f"Bearer bnd_test_{creds}"}
    if sse:
        async with Client(sse_client(url, headers=headers or None), mode=mode) as client:
            yield client
        return
    # A client we pass in is ours to close (the transport only closes the ones it creates).
    async with create_mcp_http_client(headers) as http_client:
        transport = streamable_http_client(url, http_client=http_client)
        async with Client(transport, mode=mode) as client:
            yield client


async def exercise(client: Client, *, templates: bool = True) -> None:
    tools = await client.list_tools()
    assert {"add", "echo", "progress"} <= {t.name for t in tools.tools}
    added = await client.call_tool("add", {"a": 2, "b": 40})
    assert added.content[0].text == "42"  # type: ignore[union-attr]
    echoed = await client.call_tool("echo", {"text": "héllo ✓"})
    assert echoed.content[0].text == "héllo ✓"  # type: ignore[union-attr]
    resources = await client.list_resources()
    assert "res://greeting" in {str(r.uri) for r in resources.resources}
    read = await client.read_resource("res://greeting")
    assert read.contents[0].text.startswith("hello from upstream")  # type: ignore[union-attr]
    if templates:
        listed = await client.list_resource_templates()
        assert "res://item/{name}" in {t.uri_template for t in listed.resource_templates}
        item = await client.read_resource("res://item/x1")
        assert item.contents[0].text == "item x1"  # type: ignore[union-attr]
    prompts = await client.list_prompts()
    assert "greet" in {p.name for p in prompts.prompts}
    prompt = await client.get_prompt("greet", {"name": "Ada"})
    assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]
    if client.protocol_version != "2026-07-28":  # ping was removed in 2026-07-28
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.send_ping()  # relayed like any request (hosted quirk Q17 fixed)


@pytest.mark.parametrize("form", ["path", "api_key"])
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_mcp2_client_stateful_upstream(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess, mode: str, form: Form
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp")
    async with connect(proxy, "acme", creds, form, mode=mode) as client:
        expected = "2026-07-28" if mode == "auto" else "2025-11-25"
        assert client.protocol_version == expected
        await exercise(client)
    kinds = {u.kind for u in proxy.resolver.uses}
    assert "streamable-http:post" in kinds


@pytest.mark.parametrize("form", ["path", "api_key"])
async def test_mcp2_client_stateless_upstream(
    proxy: ProxyHarness, mcp2_stateless: UpstreamProcess, form: Form
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_stateless.origin + "/mcp")
    for mode in ("auto", "legacy"):
        async with connect(proxy, "acme", creds, form, mode=mode) as client:
            await exercise(client)


@pytest.mark.parametrize("form", ["path", "api_key"])
async def test_mcp2_sse_client_legacy_upstream(
    proxy: ProxyHarness, mcp2_sse: UpstreamProcess, form: Form
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_sse.origin + "/sse", transport="sse")
    async with connect(proxy, "acme", creds, form, mode="legacy", sse=True) as client:
        await exercise(client)
    kinds = {u.kind for u in proxy.resolver.uses}
    assert {"sse:get", "sse-messages:post"} <= kinds


async def test_mcp2_client_falls_back_to_sse_on_the_streamable_url(
    proxy: ProxyHarness, mcp2_sse: UpstreamProcess
) -> None:
    """A GET on the Streamable HTTP URL of an SSE service is the legacy stream."""
    creds, _ = proxy.resolver.add("acme", mcp2_sse.origin + "/sse", transport="sse")
    transport = sse_client(proxy.path_url("acme", creds))
    async with Client(transport, mode="legacy") as client:
        await exercise(client, templates=False)


async def test_mcp2_auto_client_falls_back_through_the_proxy_to_a_1x_upstream(
    proxy: ProxyHarness, mcp1_streamable: UpstreamProcess
) -> None:
    """The 2026 probe's 400 body passes untouched, so era detection still works."""
    creds, _ = proxy.resolver.add("acme", mcp1_streamable.origin + "/mcp")
    async with connect(proxy, "acme", creds, "path", mode="auto") as client:
        assert client.protocol_version == "2025-11-25"
        await exercise(client, templates=False)


async def test_progress_arrives_as_sent(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp")
    for mode in ("legacy", "auto"):
        stamps: list[float] = []

        async def on_progress(
            progress: float, total: float | None, message: str | None, stamps: list[float] = stamps
        ) -> None:
            stamps.append(time.monotonic())

        async with connect(proxy, "acme", creds, "api_key", mode=mode) as client:
            result = await client.call_tool(
                "progress", {"steps": 3, "interval": 1.0}, progress_callback=on_progress
            )
        assert result.content[0].text == "done 3"  # type: ignore[union-attr]
        assert len(stamps) == 3, mode
        # Sent 1 s apart: a buffering relay would hand all three over at once. What matters is
        # that they arrive spread out as sent; one event held up by a loaded machine is not that.
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert stamps[-1] - stamps[0] >= 1.6 and max(gaps) >= 0.8, (mode, gaps)


async def run_mcp1_client(
    python: Path,
    url: str,
    transport: str,
    headers: dict[str, str] | None = None,
    progress_interval: float = 0.05,
) -> dict[str, Any]:
    args = [str(python), str(PEERS / "mcp1_client.py"), url, transport]
    if headers:
        args.append(json.dumps(headers))
    env = {**os.environ, "PROGRESS_INTERVAL": str(progress_interval)}
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-2000:])
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def check_mcp1_result(result: dict[str, Any], server: str) -> None:
    assert result["server_name"] == server
    assert {"add", "echo", "progress"} <= set(result["tools"])
    assert result["add"] == "42"
    assert result["progress_result"] == "done 3"
    assert "res://greeting" in result["resources"]
    assert result["greeting"].startswith("hello from upstream")
    assert "greet" in result["prompts"]
    assert "Ada" in result["prompt"]
    assert result["ping"] is True


@pytest.mark.parametrize("form", ["path", "api_key"])
async def test_mcp1_client_streamable_http(
    proxy: ProxyHarness, mcp1_streamable: UpstreamProcess, mcp1_python: Path, form: Form
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp1_streamable.origin + "/mcp")
    if form == "path":
        result = await run_mcp1_client(mcp1_python, proxy.path_url("acme", creds), "http")
    else:
        result = await run_mcp1_client(
            mcp1_python, proxy.key_url("acme"), "http", {"Authorization": f"bnd_live_{creds}"}
        )
    assert result["protocol_version"] == "2025-11-25"
    check_mcp1_result(result, "bindify-test-upstream-1x")


@pytest.mark.parametrize("form", ["path", "api_key"])
async def test_mcp1_client_sse(
    proxy: ProxyHarness, mcp1_sse: UpstreamProcess, mcp1_python: Path, form: Form
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp1_sse.origin + "/sse", transport="sse")
    if form == "path":
        url = proxy.path_url("acme", creds, "/sse")
        result = await run_mcp1_client(mcp1_python, url, "sse")
    else:
        result = await run_mcp1_client(
            mcp1_python,
            proxy.key_url("acme", "/sse"),
            "sse",
            {"Authorization": f"Bearer bnd_live_{creds}"},
        )
    check_mcp1_result(result, "bindify-test-upstream-1x")


async def test_mcp1_client_to_a_2x_upstream_with_progress_timing(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess, mcp1_python: Path
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp")
    result = await run_mcp1_client(
        mcp1_python, proxy.path_url("acme", creds), "http", progress_interval=1.0
    )
    check_mcp1_result(result, "bindify-test-upstream")
    assert len(result["progress_gaps"]) == 2
    assert all(gap >= 0.8 for gap in result["progress_gaps"]), result["progress_gaps"]
