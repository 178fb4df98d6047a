"""The real `bindify serve` process (or the frozen executable) proxying a real MCP upstream.

An admin-added API-key service pointing at an `mcp` 2.x server, a managed connection made
through the admin API, and an `mcp` 2.x client using the `bnd_` key: tools work and progress
notifications sent 0.5 s apart upstream arrive spread out, not buffered.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from support.appliance import serving_tools
from support.mcp_peers import UpstreamProcess


@pytest.mark.binary
async def test_api_key_connection_with_progress_through_serve(
    tmp_path: Path, mcp2_stateful: UpstreamProcess
) -> None:
    with serving_tools(tmp_path / "data", mcp2_stateful.origin) as served:
        api_key = served.connect("managed")["api_key"]
        stamps: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            stamps.append(time.monotonic())

        headers = {"Authorization": f"Bearer {api_key}"}
        async with create_mcp_http_client(headers) as http_client:
            transport = streamable_http_client(served.resource, http_client=http_client)
            async with Client(transport) as client:
                added = await client.call_tool("add", {"a": 2, "b": 3})
                assert added.content[0].text == "5"  # type: ignore[union-attr]
                result = await client.call_tool(
                    "progress", {"steps": 3, "interval": 0.5}, progress_callback=on_progress
                )
        assert result.content[0].text == "done 3"  # type: ignore[union-attr]
        assert len(stamps) == 3
        assert all(b - a >= 0.4 for a, b in itertools.pairwise(stamps)), stamps
