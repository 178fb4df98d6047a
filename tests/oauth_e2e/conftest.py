"""A running appliance (`bindify serve`) in front of a real `mcp` 2.x upstream, with an
administrator who signs in with a password, an API-key service `tools` and two connections to
it (managed and zero-knowledge), for OAuth clients to reach through sign-in and consent.

`chromium` is module-scoped like tests/browser's: Playwright's sync API runs in a worker thread
here (the async tests keep the event loop), so each test launches its own browser there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.appliance import Appliance, serving_tools
from support.mcp_peers import running_peer

EMAIL = "ops@example.com"
PASSWORD = "a long enough password"
CHROMIUM = Path("/usr/bin/chromium")


@dataclass(frozen=True)
class OAuthLive:
    app: Appliance
    token: str  # the administrator's personal token (API calls)
    managed_id: str
    zk_id: str
    zk_secret_url: str

    @property
    def resource(self) -> str:
        return self.app.url + "/mcp/tools"


@pytest.fixture(scope="module")
def oauth_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthLive]:
    data = tmp_path_factory.mktemp("oauth-e2e") / "data"
    with running_peer("mcp2_server.py") as peer, serving_tools(data, peer.origin) as served:
        managed = served.connect("managed", "Shared tools")
        zk = served.connect("zero_knowledge", "Private tools")
        yield OAuthLive(
            app=served.app,
            token=served.token,
            managed_id=managed["connection"]["id"],
            zk_id=zk["connection"]["id"],
            zk_secret_url=zk["secret_url"],
        )


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            "these tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
        )
    return CHROMIUM
