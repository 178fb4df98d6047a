"""A running appliance in front of a real `mcp` 2.x upstream, one connection to it, and the
real client programs its configuration snippets are fed to.

mcp-remote and Claude Code's CLI come from npm: the shared `node_bins` fixture
(`support/client_programs.py`) installs them here. Nothing here reaches beyond 127.0.0.1 once
they are installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.appliance import Appliance, serving_tools
from support.mcp_peers import running_peer

from bindify_appliance.clients import Secrets, server_name


@dataclass(frozen=True)
class Live:
    app: Appliance
    secrets: Secrets


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data = tmp_path_factory.mktemp("clients") / "data"
    with running_peer("mcp2_server.py") as peer, serving_tools(data, peer.origin) as served:
        made = served.connect("managed")
        secrets = Secrets(
            server_name("Team Tools"), made["secret_url"], served.resource, made["api_key"]
        )
        yield Live(served.app, secrets)
