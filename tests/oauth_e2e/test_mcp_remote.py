"""`mcp-remote` (the TypeScript SDK's OAuth client) through its own OAuth flow, headlessly.

mcp-remote is started as a stdio MCP server for the `mcp` SDK's client, pointed at
`{base}/mcp/tools`. On the 401 it discovers the metadata, registers itself, starts its
loopback callback server and prints the authorization URL (it cannot open a browser here).
Headless Chromium (Playwright) opens that URL as the member would: the usual sign-in, the
consent page (its screenshot is the README's `docs/oauth-consent.png` when run with
`BINDIFY_UPDATE_SCREENSHOTS=1`), Allow; the browser is
sent back to mcp-remote's callback, mcp-remote exchanges the code and the SDK's tool call goes
through the proxy to the real upstream.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from support.appliance import free_port

from .conftest import EMAIL, PASSWORD, OAuthLive
from .member import consent_in_chromium, wait_for_url

ROOT = Path(__file__).resolve().parents[2]
# The README's picture is refreshed only on request (it is a tracked file).
SCREENSHOT = (
    ROOT / "docs" / "oauth-consent.png"
    if os.environ.get("BINDIFY_UPDATE_SCREENSHOTS") == "1"
    else ROOT / "test-artifacts" / "screenshots" / "oauth-consent.png"
)


async def test_mcp_remote_oauth_flow_then_a_tool_call(
    oauth_live: OAuthLive, node_bins: Path, chromium_path: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    env.update(
        {
            "HOME": str(tmp_path),
            "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"),
            # No desktop here: "opening a browser" runs `true`; the URL is read from stderr.
            "BROWSER": "true",
        }
    )
    params = StdioServerParameters(
        command=str(node_bins / "mcp-remote"),
        args=[oauth_live.resource, str(port), "--host", "127.0.0.1"],
        env=env,
    )
    log_path = tmp_path / "mcp-remote.stderr"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)

    def member_consents() -> dict[str, object]:
        url = wait_for_url(log_path, oauth_live.app.url)
        return consent_in_chromium(
            chromium_path,
            url,
            email=EMAIL,
            password=PASSWORD,
            connection_label="Shared tools",
            back_to=f"http://127.0.0.1:{port}/oauth/callback",
            screenshot=SCREENSHOT,
        )

    with log_path.open("w+", encoding="utf-8") as errlog:
        consent = asyncio.ensure_future(asyncio.to_thread(member_consents))
        try:
            async with Client(
                stdio_client(params, errlog=errlog), read_timeout_seconds=90
            ) as client:
                listed = await client.list_tools()
                result = await client.call_tool("add", {"a": 2, "b": 40})
        finally:
            outcome = await asyncio.wait_for(consent, 120)
    assert "add" in {tool.name for tool in listed.tools}
    assert result.content[0].text == "42"  # type: ignore[union-attr]
    assert outcome["errors"] == []
    assert str(outcome["title"]).startswith("Allow ")
    assert SCREENSHOT.exists()
