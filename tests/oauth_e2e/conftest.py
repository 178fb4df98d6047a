"""A running appliance (`bindify serve`) in front of a real `mcp` 2.x upstream, with an
administrator who signs in with a password, an API-key service `tools` and two connections to
it (managed and zero-knowledge), for OAuth clients to reach through sign-in and consent.

`chromium` is module-scoped like tests/browser's: Playwright's sync API runs in a worker thread
here (the async tests keep the event loop), so each test launches its own browser there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clients.conftest import node_bins  # noqa: F401 - mcp-remote, installed by npm
from proxy.conftest import UpstreamProcess
from support.appliance import Appliance, admin_token, api_post

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
    upstream = UpstreamProcess(sys.executable, "mcp2_server.py")
    upstream.start()
    data = tmp_path_factory.mktemp("oauth-e2e") / "data"
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
        managed = api_post(
            app,
            token,
            "/connections",
            {
                "service": "tools",
                "api_key": "upstream-key",
                "key_storage_mode": "managed",
                "label": "Shared tools",
            },
        )
        zk = api_post(
            app,
            token,
            "/connections",
            {
                "service": "tools",
                "api_key": "upstream-key",
                "key_storage_mode": "zero_knowledge",
                "label": "Private tools",
            },
        )
        yield OAuthLive(
            app=app,
            token=token,
            managed_id=managed["connection"]["id"],
            zk_id=zk["connection"]["id"],
            zk_secret_url=zk["secret_url"],
        )
    finally:
        app.stop()
        upstream.close()


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            "these tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
        )
    return CHROMIUM
