"""Ready-to-paste MCP client configurations: one declaration, rendered by the connection page
(with the real secrets, once) and by the README table (`docs_table()`, kept in sync by a test).

Invariants:
- Every snippet is built only from the `Secrets` it is given; nothing here logs, stores or
  formats a secret anywhere but the returned text, which the page shows once.
- Where a client can send a header, its snippet uses the service URL plus
  `Authorization: Bearer bnd_…` (the credential stays out of URLs, histories and access logs);
  only clients with no header field get the secret URL.
- A client whose only other choice is signing in (`Client.sign_in`) is offered that route on
  the page only while the appliance's OAuth server is on; the README table states the condition.
- Each client's key names follow the format document cited next to it; the tests in
  `tests/clients/` feed each snippet to the real client where one runs here (the `mcp` SDK,
  `mcp-remote`, Claude Code's CLI) and otherwise check it against a JSON Schema written from
  that document.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIENTS", "Client", "Secrets", "client_configs", "docs_table", "server_name"]


@dataclass(frozen=True)
class Secrets:
    """What a snippet is built from: the server's name in the client and the credentials."""

    name: str  # the key the client lists the server under (see `server_name`)
    secret_url: str  # `{base}/mcp/{service}/{credentials}`: a complete endpoint
    service_url: str  # `{base}/mcp/{service}`: needs the `Authorization` header
    api_key: str  # `bnd_…`

    @property
    def bearer(self) -> str:
        return f"Bearer {self.api_key}"


@dataclass(frozen=True)
class Client:
    id: str  # also the page's `cfg-{id}` element
    title: str
    file: str  # where the snippet goes (a file, a command line, a settings screen)
    credential: str  # "service URL + `bnd_` key header" or "secret URL"
    notes: str
    doc: str  # where the format is documented
    build: Callable[[Secrets], str]
    # The sign-in route (DESIGN §10) after "Or ", `{url}` the service URL; "" when not offered.
    sign_in: str = ""


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


def _http_entry(s: Secrets, url_key: str = "url") -> dict[str, Any]:
    return {url_key: s.service_url, "headers": {"Authorization": s.bearer}}


# mcp-remote (github.com/geelen/mcp-remote, README "Custom Headers"): `--header "Name:value"`,
# `${VAR}` in an argument is expanded from the server's `env`. The header lives in `env`, not in
# the arguments: other users can read a process's arguments, and Claude Desktop on Windows
# mangles spaces inside `args` (same README).
_BRIDGE_ENV = "BINDIFY_AUTHORIZATION"


def _bridge(s: Secrets) -> dict[str, Any]:
    return {
        "command": "npx",
        "args": [
            "-y",
            "mcp-remote",
            s.service_url,
            "--header",
            f"Authorization:${{{_BRIDGE_ENV}}}",
        ],
        "env": {_BRIDGE_ENV: s.bearer},
    }


def _claude_desktop(s: Secrets) -> str:
    # modelcontextprotocol.io/quickstart/user: claude_desktop_config.json, top-level
    # "mcpServers", each server {"command", "args", "env"} started over stdio.
    return _json({"mcpServers": {s.name: _bridge(s)}})


def _claude_code(s: Secrets) -> str:
    # docs.anthropic.com/en/docs/claude-code/mcp: `claude mcp add --transport http <name> <url>
    # --header "Name: value"` (checked by tests/clients against the CLI itself).
    return shlex.join(
        [
            *("claude", "mcp", "add", "--transport", "http", s.name, s.service_url),
            *("--header", f"Authorization: {s.bearer}"),
        ]
    )


def _cursor(s: Secrets) -> str:
    # cursor.com/docs/context/mcp: mcp.json, top-level "mcpServers"; a remote server is
    # {"url", "headers"} (Cursor picks Streamable HTTP or SSE itself).
    return _json({"mcpServers": {s.name: _http_entry(s)}})


def _vscode(s: Secrets) -> str:
    # code.visualstudio.com/docs/copilot/reference/mcp-configuration: top-level "servers";
    # an HTTP server is {"type": "http" | "sse", "url", "headers"?}.
    return _json({"servers": {s.name: {"type": "http", **_http_entry(s)}}})


def _windsurf(s: Secrets) -> str:
    # docs.windsurf.com/windsurf/cascade/mcp: ~/.codeium/windsurf/mcp_config.json, top-level
    # "mcpServers"; a remote HTTP server takes "serverUrl" (or "url") and "headers".
    return _json({"mcpServers": {s.name: _http_entry(s, "serverUrl")}})


def _zed(s: Secrets) -> str:
    # zed.dev/docs/ai/mcp (zed-industries/zed docs/src/ai/mcp.md): settings.json, top-level
    # "context_servers"; a remote server is {"url", "headers"}. Without an Authorization
    # header Zed would start MCP OAuth, so the header is always given.
    return _json({"context_servers": {s.name: _http_entry(s)}})


def _chatgpt(s: Secrets) -> str:
    # developers.openai.com/apps-sdk/deploy/connect-chatgpt: a connector is a name, a
    # description and the server URL; authentication is OAuth or none — no header field, so
    # the secret URL with "No authentication".
    return s.secret_url


def _mcp_remote(s: Secrets) -> str:
    # github.com/geelen/mcp-remote README: `npx mcp-remote <url> --header "Name: value"`, a
    # stdio server for any client that only starts local commands.
    return shlex.join(
        ["npx", "-y", "mcp-remote", s.service_url, "--header", f"Authorization: {s.bearer}"]
    )


def _sdk(s: Secrets) -> str:
    # MCP Streamable HTTP transport (modelcontextprotocol.io/specification, "Transports"):
    # any client that takes a URL and headers; the Python and TypeScript SDKs included.
    return _json({"url": s.service_url, "headers": {"Authorization": s.bearer}})


CLIENTS: tuple[Client, ...] = (
    Client(
        "claude-desktop",
        "Claude Desktop",
        "claude_desktop_config.json (Settings → Developer → Edit Config)",
        "service URL + `bnd_` key header",
        "Through the `mcp-remote` bridge (needs Node.js); the key sits in `env`, not in the "
        "arguments. Its Settings → Connectors screen takes only a URL: paste the secret URL.",
        "https://modelcontextprotocol.io/quickstart/user",
        _claude_desktop,
        "sign in instead (Claude web and desktop): Settings → Connectors → Add custom "
        "connector, paste {url} with no client ID, and allow this connection on the consent page.",
    ),
    Client(
        "claude-code",
        "Claude Code",
        "a terminal (writes ~/.claude.json)",
        "service URL + `bnd_` key header",
        "Add `--scope project` to share it through `.mcp.json` (the key then sits in that file).",
        "https://docs.anthropic.com/en/docs/claude-code/mcp",
        _claude_code,
    ),
    Client(
        "cursor",
        "Cursor",
        "~/.cursor/mcp.json (or .cursor/mcp.json in a project)",
        "service URL + `bnd_` key header",
        "Streamable HTTP with the header; no bridge needed.",
        "https://cursor.com/docs/context/mcp",
        _cursor,
    ),
    Client(
        "vscode",
        "VS Code",
        ".vscode/mcp.json (or MCP: Open User Configuration)",
        "service URL + `bnd_` key header",
        'The top-level key is `servers`, not `mcpServers`; `"type": "http"`.',
        "https://code.visualstudio.com/docs/copilot/reference/mcp-configuration",
        _vscode,
    ),
    Client(
        "windsurf",
        "Windsurf",
        "~/.codeium/windsurf/mcp_config.json",
        "service URL + `bnd_` key header",
        "The URL key is `serverUrl`.",
        "https://docs.windsurf.com/windsurf/cascade/mcp",
        _windsurf,
    ),
    Client(
        "zed",
        "Zed",
        "~/.config/zed/settings.json (or .zed/settings.json)",
        "service URL + `bnd_` key header",
        "Under `context_servers`; merge into the existing settings object.",
        "https://zed.dev/docs/ai/mcp",
        _zed,
    ),
    Client(
        "chatgpt",
        "ChatGPT connectors",
        "Settings → Apps & Connectors → Create (Developer mode)",
        "secret URL",
        'Choose "No authentication": ChatGPT takes no custom header, only OAuth or none.',
        "https://developers.openai.com/apps-sdk/deploy/connect-chatgpt",
        _chatgpt,
        'sign in instead: paste {url}, choose "OAuth", and allow this connection on the '
        "consent page.",
    ),
    Client(
        "mcp-remote",
        "Any stdio-only client (mcp-remote)",
        "the client's command for a local server",
        "service URL + `bnd_` key header",
        "The generic bridge: a local stdio server relaying to the appliance.",
        "https://github.com/geelen/mcp-remote",
        _mcp_remote,
    ),
    Client(
        "generic",
        "Any Streamable HTTP client or MCP SDK",
        "the client's URL and header fields",
        "service URL + `bnd_` key header",
        "Legacy HTTP+SSE clients append `/sse` to the URL.",
        "https://modelcontextprotocol.io/specification/2025-11-25/basic/transports",
        _sdk,
    ),
)


def server_name(label: str) -> str:
    """The key a client lists the server under: ASCII letters, digits, `-` and `_` only, a name
    every client above accepts unquoted (Claude Code's CLI checks it: tests/clients)."""
    slug = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in label.lower())
    return slug.strip("-")[:64] or "bindify"


def _notes(c: Client, service_url: str, sign_in: bool) -> str:
    notes = c.notes
    if sign_in and c.sign_in:
        notes += " Or " + c.sign_in.format(url=service_url)
    return notes.replace("`", "")  # Markdown for the README, plain on the page


def client_configs(
    label: str, secret_url: str, api_key: str, service_url: str, *, sign_in: bool = False
) -> list[dict[str, str]]:
    """Every client's snippet for one connection, in declaration order (shown once);
    `sign_in`: the OAuth server is on, so clients that can sign in are told how."""
    secrets = Secrets(server_name(label), secret_url, service_url, api_key)
    return [
        {
            "id": c.id,
            "title": c.title,
            "where": c.file,
            "notes": _notes(c, service_url, sign_in),
            "text": c.build(secrets),
        }
        for c in CLIENTS
    ]


def docs_table() -> str:
    """The README's client table (Markdown), from the same declaration."""
    rows = ["| Client | Where it goes | Credential | Notes |", "|---|---|---|---|"]
    for c in CLIENTS:
        notes = c.notes
        if c.sign_in:
            url = "`https://mcp.example.com/mcp/{service}`"
            notes += " Or, with `BINDIFY_OAUTH_SERVER` on (the default), " + c.sign_in.format(
                url=url
            )
        rows.append(f"| [{c.title}]({c.doc}) | {c.file} | {c.credential} | {notes} |")
    return "\n".join(rows)
