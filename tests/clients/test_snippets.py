"""Every client of `bindify_appliance.clients.CLIENTS`, its snippet fed to the real client where
one runs here, else checked against the client's documented format, and then used.

- Real clients: Claude Code's CLI (`claude mcp add …` from the snippet, read back with
  `claude mcp get`, offline), `mcp-remote` (the snippet's command, driven over stdio by the
  `mcp` SDK; Claude Desktop's snippet runs the same way, its `env` included), and the `mcp`
  SDK's Streamable HTTP client (the URL and header of the generic snippet; the bare secret URL
  of ChatGPT's).
- Configuration files (Cursor, VS Code, Windsurf, Zed, Claude Desktop): a JSON Schema written
  from the format document cited beside it, then the URL and headers it names are used by the
  `mcp` SDK, so a snippet with the right shape but a wrong value fails too.
Each path ends in a real tool call through the appliance to the upstream.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from bindify_appliance.clients import CLIENTS, Secrets
from bindify_appliance.clients import Client as Declared

from .conftest import Live

_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_URL = {"type": "string", "pattern": "^https?://"}


def _servers(top: str, server: dict[str, Any]) -> dict[str, Any]:
    """A config whose `top` key maps server names to objects of the `server` schema."""
    return {
        "type": "object",
        "required": [top],
        "properties": {
            top: {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": server,
            }
        },
    }


# https://modelcontextprotocol.io/quickstart/user — claude_desktop_config.json
CLAUDE_DESKTOP = _servers(
    "mcpServers",
    {
        "type": "object",
        "required": ["command"],
        "additionalProperties": False,
        "properties": {
            "command": {"type": "string"},
            "args": {"type": "array", "items": {"type": "string"}},
            "env": _HEADERS,
        },
    },
)
# https://cursor.com/docs/context/mcp — remote servers: "url" and optional "headers"
CURSOR = _servers(
    "mcpServers",
    {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {"url": _URL, "headers": _HEADERS},
    },
)
# https://code.visualstudio.com/docs/copilot/reference/mcp-configuration — "servers";
# HTTP servers: "type" ("http" | "sse", required), "url" (required), "headers"
VSCODE = _servers(
    "servers",
    {
        "type": "object",
        "required": ["type", "url"],
        "additionalProperties": False,
        "properties": {"type": {"enum": ["http", "sse"]}, "url": _URL, "headers": _HEADERS},
    },
)
# https://docs.windsurf.com/windsurf/cascade/mcp — remote HTTP: "serverUrl" or "url", "headers"
WINDSURF = _servers(
    "mcpServers",
    {
        "type": "object",
        "anyOf": [{"required": ["serverUrl"]}, {"required": ["url"]}],
        "additionalProperties": False,
        "properties": {"serverUrl": _URL, "url": _URL, "headers": _HEADERS},
    },
)
# https://zed.dev/docs/ai/mcp — "context_servers"; a remote server: "url" and "headers"
ZED = _servers(
    "context_servers",
    {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {"url": _URL, "headers": _HEADERS},
    },
)


def snippet(client_id: str, secrets: Secrets) -> str:
    declared = {c.id: c for c in CLIENTS}[client_id]
    return declared.build(secrets)


async def call_add(url: str, headers: dict[str, str] | None = None) -> None:
    """A real tool call through the appliance with the `mcp` SDK over Streamable HTTP."""
    async with (
        create_mcp_http_client(headers or None) as http_client,
        Client(streamable_http_client(url, http_client=http_client)) as client,
    ):
        result = await client.call_tool("add", {"a": 2, "b": 40})
    assert result.content[0].text == "42"  # type: ignore[union-attr]


async def call_add_over_stdio(
    command: str, args: list[str], env: dict[str, str], tmp: Path
) -> None:
    """A real tool call through a stdio server (mcp-remote), driven by the `mcp` SDK."""
    base = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    base.update({"HOME": str(tmp), "MCP_REMOTE_CONFIG_DIR": str(tmp / "mcp-auth")})
    params = StdioServerParameters(command=command, args=args, env={**base, **env})
    async with Client(params, read_timeout_seconds=30) as client:
        result = await client.call_tool("add", {"a": 2, "b": 40})
    assert result.content[0].text == "42"  # type: ignore[union-attr]


def local_bridge(argv: list[str], bins: Path) -> tuple[str, list[str]]:
    """`npx -y mcp-remote …` from a snippet, run with the pinned local mcp-remote instead."""
    assert argv[:3] == ["npx", "-y", "mcp-remote"], argv
    return str(bins / "mcp-remote"), argv[3:]


def http_entry(
    config: dict[str, Any], top: str, name: str, url_key: str = "url"
) -> tuple[str, dict[str, str]]:
    entry = config[top][name]
    return entry[url_key], entry.get("headers", {})


async def check_claude_desktop(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("claude-desktop", live.secrets))
    jsonschema.validate(config, CLAUDE_DESKTOP)
    entry = config["mcpServers"][live.secrets.name]
    assert live.secrets.api_key not in " ".join(entry["args"])  # the key is in env only
    command, args = local_bridge([entry["command"], *entry["args"]], bins)
    await call_add_over_stdio(command, args, entry["env"], tmp)


def claude_env(tmp: Path) -> dict[str, str]:
    """Claude Code with its own home and config, no updater or telemetry, and any request
    not for 127.0.0.1 sent to a closed port (so offline is proven, not assumed)."""
    dead = "http://127.0.0.1:9"
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "CLAUDE_CONFIG_DIR": str(tmp / ".claude"),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HTTPS_PROXY": dead,
        "HTTP_PROXY": dead,
        "NO_PROXY": "127.0.0.1",
    }


def claude(bins: Path, args: list[str], tmp: Path) -> str:
    done = subprocess.run(
        [str(bins / "claude"), *args],
        cwd=tmp,
        env=claude_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def check_claude_code(live: Live, bins: Path, tmp: Path) -> None:
    argv = shlex.split(snippet("claude-code", live.secrets))
    assert argv[:3] == ["claude", "mcp", "add"]
    claude(bins, argv[1:], tmp)
    shown = claude(bins, ["mcp", "get", live.secrets.name], tmp)
    fields = dict(
        line.strip().split(": ", 1) for line in shown.splitlines() if ": " in line.strip()
    )
    assert fields["Type"] == "http"
    assert fields["URL"] == live.secrets.service_url
    assert fields["Authorization"] == live.secrets.bearer
    # What the CLI stored (~/.claude.json), used as Claude Code would use it.
    stored = json.loads((tmp / ".claude" / ".claude.json").read_text())
    servers = [p.get("mcpServers", {}) for p in stored.get("projects", {}).values()]
    entry = next(s[live.secrets.name] for s in servers if live.secrets.name in s)
    assert entry["type"] == "http"
    await call_add(entry["url"], entry["headers"])


async def check_cursor(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("cursor", live.secrets))
    jsonschema.validate(config, CURSOR)
    await call_add(*http_entry(config, "mcpServers", live.secrets.name))


async def check_vscode(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("vscode", live.secrets))
    jsonschema.validate(config, VSCODE)
    assert config["servers"][live.secrets.name]["type"] == "http"  # Streamable HTTP, not SSE
    await call_add(*http_entry(config, "servers", live.secrets.name))


async def check_windsurf(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("windsurf", live.secrets))
    jsonschema.validate(config, WINDSURF)
    await call_add(*http_entry(config, "mcpServers", live.secrets.name, "serverUrl"))


async def check_zed(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("zed", live.secrets))
    jsonschema.validate(config, ZED)
    await call_add(*http_entry(config, "context_servers", live.secrets.name))


async def check_chatgpt(live: Live, bins: Path, tmp: Path) -> None:
    url = snippet("chatgpt", live.secrets)
    assert url == live.secrets.secret_url  # "No authentication": the URL alone must do
    await call_add(url)


async def check_mcp_remote(live: Live, bins: Path, tmp: Path) -> None:
    command, args = local_bridge(shlex.split(snippet("mcp-remote", live.secrets)), bins)
    await call_add_over_stdio(command, args, {}, tmp)


async def check_generic(live: Live, bins: Path, tmp: Path) -> None:
    config = json.loads(snippet("generic", live.secrets))
    await call_add(config["url"], config["headers"])
    # …and the same service URL without the header is refused (the header is what authorizes).
    with pytest.raises(Exception):  # noqa: B017 - any failure to connect will do
        await call_add(config["url"])


CHECKS: dict[str, Callable[[Live, Path, Path], Awaitable[None]]] = {
    "claude-desktop": check_claude_desktop,
    "claude-code": check_claude_code,
    "cursor": check_cursor,
    "vscode": check_vscode,
    "windsurf": check_windsurf,
    "zed": check_zed,
    "chatgpt": check_chatgpt,
    "mcp-remote": check_mcp_remote,
    "generic": check_generic,
}


def test_every_declared_client_has_a_check() -> None:
    assert [c.id for c in CLIENTS] == list(CHECKS)


@pytest.mark.parametrize("declared", CLIENTS, ids=[c.id for c in CLIENTS])
async def test_snippet_works_in_its_client(
    declared: Declared, live: Live, node_bins: Path, tmp_path: Path
) -> None:
    await CHECKS[declared.id](live, node_bins, tmp_path)


def test_credentials_never_reach_the_appliance_log(live: Live) -> None:
    """Runs after the snippets were used: the access log names route templates only."""
    log = live.app.stderr()
    routes = {r.get("route") for r in live.app.log_records()}
    # the requests were logged, both credential forms…
    assert {"/mcp/{service}", "/mcp/{service}/{credentials}"} <= routes
    secret = live.secrets.api_key.split("_")[-1]
    path_credentials = live.secrets.secret_url.rsplit("/", 1)[-1]
    assert secret not in log and path_credentials not in log  # …without their credentials
