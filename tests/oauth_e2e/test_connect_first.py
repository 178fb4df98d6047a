"""Connecting a new account during an authorization, in headless Chromium, then tool calls.

The `mcp` SDK's OAuth provider starts the flow; the member (Chromium, real CSP) signs in,
chooses "Connect a new … account first", connects a zero-knowledge account with an API key
through the usual connect page, follows the new connection's page back to the consent page
and allows that connection without pasting its secret URL (the appliance remembered it, sealed,
for this authorization). The provider's tool calls then reach the upstream through it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata
from pydantic import AnyUrl

from .conftest import EMAIL, PASSWORD, OAuthLive
from .member import connect_first_in_chromium
from .test_sdk_provider import MemoryStorage, use_tools

REDIRECT = "http://127.0.0.1:33419/callback"


async def test_connect_a_zero_knowledge_account_during_the_authorization(
    oauth_live: OAuthLive, chromium_path: Path
) -> None:
    outcome: dict[str, object] = {}

    async def redirect_handler(url: str) -> None:
        outcome.update(
            await asyncio.to_thread(
                connect_first_in_chromium,
                chromium_path,
                url,
                email=EMAIL,
                password=PASSWORD,
                service_name="Team Tools",
                label="Made during sign-in",
                api_key="upstream-key",
                back_to=REDIRECT,
            )
        )

    async def callback_handler() -> AuthorizationCodeResult:
        landed = str(outcome["landed"])
        query = {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query["state"], iss=query["iss"])

    provider = OAuthClientProvider(
        server_url=oauth_live.resource,
        client_metadata=OAuthClientMetadata(
            client_name="Connect-first e2e",
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    await use_tools(oauth_live, provider)
    assert outcome["just_connected"] is True
    assert outcome["errors"] == []
