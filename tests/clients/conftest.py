"""A running appliance in front of a real `mcp` 2.x upstream, one connection to it, and the
real client programs its configuration snippets are fed to.

mcp-remote and Claude Code's CLI come from npm (`tests/clients/package.json` pins them, the lock
file fixes every dependency): the `node_bins` fixture runs `npm ci` there once when they are
missing. Nothing here reaches beyond 127.0.0.1 once they are installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from proxy.conftest import UpstreamProcess
from support.appliance import Appliance, admin_token, api_post

from bindify_appliance.clients import Secrets, server_name

HERE = Path(__file__).resolve().parent
BIN = HERE / "node_modules" / ".bin"


@dataclass(frozen=True)
class Live:
    app: Appliance
    secrets: Secrets


@pytest.fixture(scope="session")
def node_bins() -> Path:
    """`node_modules/.bin` holding `mcp-remote` and `claude`, installed with `npm ci` if missing."""
    if not ((BIN / "mcp-remote").exists() and (BIN / "claude").exists()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("the client tests need npm to install mcp-remote (apt-get install npm)")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return BIN


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    upstream = UpstreamProcess(sys.executable, "mcp2_server.py")
    upstream.start()
    data = tmp_path_factory.mktemp("clients") / "data"
    token = admin_token(data)
    app = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
    try:
        api_post(
            app,
            token,
            "/services",
            {
                "id": "tools",
                "name": "Team Tools",
                "mcp_url": upstream.origin + "/mcp",
                "auth": {"type": "api_key", "header": "X-Api-Key", "prefix": ""},
            },
        )
        made = api_post(
            app,
            token,
            "/connections",
            {"service": "tools", "api_key": "upstream-key", "key_storage_mode": "managed"},
        )
        secrets = Secrets(
            server_name("Team Tools"),
            made["secret_url"],
            app.url + "/mcp/tools",
            made["api_key"],
        )
        yield Live(app, secrets)
    finally:
        app.stop()
        upstream.close()
