"""The `mcp` Python SDK's OAuth client provider against a running appliance, end to end.

The provider discovers the protected-resource and authorization-server metadata from the 401,
registers itself (RFC 7591), sends the member to `/oauth/authorize` with PKCE S256; the member
(plain HTTP forms, `member.FormMember`) signs in with the usual login and allows one
connection on the consent page; the provider exchanges the code and calls the tools of a real
MCP server upstream through the proxy with its `bndat_` token.

- managed connection: nothing to paste;
- zero-knowledge connection: the member pastes its secret URL on the consent page, and the
  tool call works because the token carries what opens the connection;
- "Connected apps" on the connection page lists the client with its last use; revoking it
  there (POST + CSRF) ends its token at once (401 with `WWW-Authenticate`).
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from .conftest import EMAIL, PASSWORD, OAuthLive
from .member import FormMember

REDIRECT = "http://127.0.0.1:33418/callback"


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def provider_for(
    live: OAuthLive, member: FormMember, name: str, connection_id: str, secret: str | None
) -> tuple[OAuthClientProvider, MemoryStorage]:
    answers: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        assert url.startswith(live.app.url + "/oauth/authorize?")
        answers["location"] = await asyncio.to_thread(member.authorize, url, connection_id, secret)

    async def callback_handler() -> AuthorizationCodeResult:
        location = answers.pop("location")
        assert location.startswith(REDIRECT + "?")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        return AuthorizationCodeResult(code=query["code"], state=query["state"], iss=query["iss"])

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=live.resource,
        client_metadata=OAuthClientMetadata(
            client_name=name,
            redirect_uris=[AnyUrl(REDIRECT)],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    return provider, storage


async def use_tools(live: OAuthLive, provider: OAuthClientProvider) -> None:
    async with (
        create_mcp_http_client(auth=provider) as http_client,
        Client(streamable_http_client(live.resource, http_client=http_client)) as client,
    ):
        listed = await client.list_tools()
        assert "add" in {tool.name for tool in listed.tools}
        result = await client.call_tool("add", {"a": 2, "b": 40})
    assert result.content[0].text == "42"  # type: ignore[union-attr]


async def initialize_status(live: OAuthLive, token: str) -> httpx2.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    async with httpx2.AsyncClient() as raw:
        return await raw.post(
            live.resource,
            json=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
            },
        )


async def test_sdk_provider_with_a_managed_connection(oauth_live: OAuthLive) -> None:
    member = FormMember(oauth_live.app.url, EMAIL, PASSWORD)
    provider, storage = provider_for(
        oauth_live, member, "SDK managed e2e", oauth_live.managed_id, None
    )
    await use_tools(oauth_live, provider)
    assert storage.client is not None and storage.client.client_id.startswith("bndc_")
    assert storage.tokens is not None
    access = storage.tokens.access_token
    assert access.startswith("bndat_")
    assert (storage.tokens.refresh_token or "").startswith("bndrt_")

    # "Connected apps" on the connection page names the client and its last use.
    status, _, page = await asyncio.to_thread(
        member.request, "GET", f"/connections/{oauth_live.managed_id}"
    )
    assert status == 200 and "SDK managed e2e" in page
    revoke = re.search(rf'action="(/connections/{oauth_live.managed_id}/apps/[^/"]+/revoke)"', page)
    assert revoke, page[-3000:]
    # Revoking it (the page's form: POST + CSRF) ends the token at once.
    status, location, _ = await asyncio.to_thread(
        member.request, "POST", revoke.group(1), {"back": ""}
    )
    assert status == 303 and location == f"/connections/{oauth_live.managed_id}?done=app-revoked"
    # Within the proxy's 1 s memo of token rows (oauth_server.bearer.MEMO_TTL).
    for _ in range(50):
        refused = await initialize_status(oauth_live, access)
        if refused.status_code != 200:
            break
        await asyncio.sleep(0.1)
    assert refused.status_code == 401
    assert "resource_metadata=" in refused.headers["WWW-Authenticate"]
    _, _, page = await asyncio.to_thread(
        member.request, "GET", f"/connections/{oauth_live.managed_id}"
    )
    assert "SDK managed e2e" not in page


async def test_sdk_provider_with_a_zero_knowledge_connection(oauth_live: OAuthLive) -> None:
    member = FormMember(oauth_live.app.url, EMAIL, PASSWORD)
    provider, storage = provider_for(
        oauth_live, member, "SDK zero-knowledge e2e", oauth_live.zk_id, oauth_live.zk_secret_url
    )
    await use_tools(oauth_live, provider)
    assert storage.tokens is not None and storage.tokens.access_token.startswith("bndat_")
    # The secret pasted on the consent page is in no log line of the appliance.
    credentials = oauth_live.zk_secret_url.rsplit("/", 1)[1]
    assert credentials not in oauth_live.app.stderr()
