"""An in-process appliance with the OAuth server on, two auth-`none` services on a recording
upstream, a member with a managed and a zero-knowledge connection, and helpers that drive the
token endpoint with codes made by `issue_code` (the authorize page's job, done directly here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from peers.raw_upstream import RawUpstream
from support.inprocess import Response, Server, add_token, add_user, api, fetch, start_appliance

from bindify_appliance.oauth_server.codes import issue_code

REDIRECT = "http://127.0.0.1:33418/callback"
INIT = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


@dataclass
class Conn:
    id: str
    credentials: str  # the 86 characters of its secret URL
    mode: str


@dataclass
class World:
    server: Server
    upstream: RawUpstream
    admin_token: str
    owner_id: str
    owner_token: str
    managed: Conn
    zk: Conn
    other_id: str  # another member

    @property
    def url(self) -> str:
        return self.server.url

    async def register(self, **metadata: Any) -> Response:
        body = {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **metadata}
        return await fetch(
            self.url + "/oauth/register",
            "POST",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )

    async def client(self, **metadata: Any) -> dict[str, Any]:
        registered = await self.register(**metadata)
        assert registered.status == 201, registered.text
        answer: dict[str, Any] = registered.json()
        return answer

    async def code(
        self,
        client_id: str,
        conn: Conn,
        *,
        service: str = "open",
        redirect_uri: str = REDIRECT,
        resource: str | None = None,
        challenge: str | None = None,
    ) -> tuple[str, str]:
        """(code, verifier) for `conn`, as the consent page would issue it."""
        verifier, made = pkce()
        code = await issue_code(
            self.server.ctx,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=challenge or made,
            service=service,
            resource=resource,
            connection_id=conn.id,
            user_id=self.owner_id,
            opener=conn.credentials.encode() if conn.mode == "zero_knowledge" else None,
        )
        return code, verifier

    async def token(self, form: dict[str, str], headers: dict[str, str] | None = None) -> Response:
        return await fetch(
            self.url + "/oauth/token",
            "POST",
            body=urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )

    async def exchange(self, client_id: str, code: str, verifier: str, /, **extra: str) -> Response:
        return await self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": REDIRECT,
                "client_id": client_id,
                **extra,
            }
        )

    async def tokens(self, conn: Conn, client_id: str | None = None) -> dict[str, Any]:
        """A fresh grant's token response for `conn` (a new public client unless given)."""
        client_id = client_id or (await self.client())["client_id"]
        code, verifier = await self.code(client_id, conn)
        answered = await self.exchange(client_id, code, verifier)
        assert answered.status == 200, answered.text
        body: dict[str, Any] = answered.json()
        body["client_id"] = client_id
        return body

    async def mcp(self, access_token: str | None, service: str = "open") -> Response:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if access_token is not None:
            headers["Authorization"] = f"Bearer {access_token}"
        return await fetch(
            f"{self.url}/mcp/{service}", "POST", body=json.dumps(INIT), headers=headers
        )

    async def close(self) -> None:
        await self.server.app.settings["runtime"].close()
        await self.server.close()
        await self.upstream.stop()


async def _service(server: Server, token: str, service_id: str, mcp_url: str) -> None:
    body = {
        "id": service_id,
        "name": service_id.title(),
        "mcp_url": mcp_url,
        "auth": {"type": "none"},
    }
    created = await api(server, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


async def _connect(server: Server, token: str, mode: str) -> Conn:
    made = await api(
        server,
        "POST",
        "/api/v1/connections",
        {"service": "open", "key_storage_mode": mode},
        token=token,
    )
    assert made.status == 201, made.text
    answer = made.json()
    return Conn(answer["connection"]["id"], answer["secret_url"].rsplit("/", 1)[1], mode)


async def build_world(tmp_path: Path, **settings: Any) -> World:
    upstream = RawUpstream()
    await upstream.start()
    server = await start_appliance(tmp_path, allow_private_upstreams=True, **settings)
    admin_id = add_user(server, "admin@example.com", "admin")
    owner_id = add_user(server, "owner@example.com")
    other_id = add_user(server, "other@example.com")
    admin_token = add_token(server, admin_id)
    owner_token = add_token(server, owner_id)
    await _service(server, admin_token, "open", upstream.url("/echo"))
    await _service(server, admin_token, "other", upstream.url("/echo"))
    managed = await _connect(server, owner_token, "managed")
    zk = await _connect(server, owner_token, "zero_knowledge")
    return World(server, upstream, admin_token, owner_id, owner_token, managed, zk, other_id)
