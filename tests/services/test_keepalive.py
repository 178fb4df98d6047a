"""Keep-alive of a non-expiring grant: the built-in Todoist, pointed at the OAuth upstream
stand-in only through `BINDIFY_TODOIST_*` overrides, kept alive by the background job.

The upstream issues tokens without expiry and without a refresh token (as Todoist does). The
job must send an MCP `initialize` with the stored token and never a refresh request; a 401
flags the connection needs-reconnect with an event. ManualClock throughout, no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.inprocess import START, Appliance, add_user, start_appliance
from support.managed import Connected, connect_managed, events, payload, row, runtime_of

from bindify_appliance.clock import ManualClock
from bindify_appliance.jobs import lifecycle_jobs
from bindify_appliance.scheduler import Job
from bindify_appliance.services.refresh import OAuthRefresher

CLIENT_ID = "todoist-app"
CLIENT_SECRET = "todoist-app-secret"


@dataclass
class McpCall:
    """One HTTP request to the MCP endpoint, and what the upstream answered."""

    http_method: str
    rpc_method: str | None
    authorization: str
    session_id: str | None  # the Mcp-Session-Id request header
    protocol_version: str | None
    status: int | None = None
    issued_session: str | None = None  # the Mcp-Session-Id response header


@dataclass
class RecordingUpstream(OAuthUpstream):
    """The stand-in, also noting each MCP request (`mcp_calls`); `stateless` runs its MCP
    server without sessions (no `Mcp-Session-Id` is ever issued)."""

    stateless: bool = False
    mcp_calls: list[McpCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stateless:
            self._mcp_app = self._build_mcp().streamable_http_app(
                json_response=self.json_response, stateless_http=True, host="127.0.0.1"
            )

    def calls(self, http_method: str) -> list[McpCall]:
        return [c for c in self.mcp_calls if c.http_method == http_method]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/mcp"):
            await super().__call__(scope, receive, send)
            return
        messages = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        try:
            method = json.loads(body).get("method") if body else None
        except (ValueError, AttributeError):
            method = None
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        call = McpCall(
            scope["method"],
            method,
            headers.get("authorization", ""),
            headers.get("mcp-session-id"),
            headers.get("mcp-protocol-version"),
        )
        self.mcp_calls.append(call)
        replay = iter(messages)

        async def receive_again() -> Any:
            nxt = next(replay, None)
            return nxt if nxt is not None else await receive()

        async def send_noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                answer = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                call.issued_session = answer.get("mcp-session-id")
            await send(message)

        await super().__call__(scope, receive_again, send_noting)


@pytest.fixture
async def todoist(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Appliance, RecordingUpstream]]:
    clock = ManualClock(START.timestamp())
    up = RecordingUpstream(
        stateless=getattr(request, "param", {}).get("stateless", False),
        clock=clock,
        access_ttl=None,  # Todoist tokens do not expire
        refresh=False,  # … and come without a refresh token
        require_pkce=False,
        static_clients={CLIENT_ID: CLIENT_SECRET},
        scopes=("data:read_write",),
    )
    environ = {
        "BINDIFY_TODOIST_MCP_URL": up.mcp_url,
        "BINDIFY_TODOIST_AUTHORIZE_URL": up.authorize_url,
        "BINDIFY_TODOIST_TOKEN_URL": up.token_url,
        "BINDIFY_TODOIST_CLIENT_ID": CLIENT_ID,
        "BINDIFY_TODOIST_CLIENT_SECRET": CLIENT_SECRET,
    }
    async with up:
        app = await start_appliance(
            tmp_path, allow_private_upstreams=True, proxy=True, environ=environ, clock=clock
        )
        try:
            yield app, up
        finally:
            await app.close()
            await runtime_of(app).upstream.close()


def _job(app: Appliance) -> Job:
    refresher = OAuthRefresher(app.ctx, app.connect.registry, app.connect.outbound)
    jobs = lifecycle_jobs(app.ctx, refresher, app.connect.registry)
    return next(job for job in jobs if job.name == "token-refresh")


async def _connect(app: Appliance) -> Connected:
    member = add_user(app, "member@example.com", "member")
    return await connect_managed(app, member, "todoist")


async def test_job_keeps_todoist_alive_with_initialize_and_no_refresh(
    todoist: tuple[Appliance, RecordingUpstream],
) -> None:
    app, up = todoist
    connected = await _connect(app)
    token = payload(app, connected.connection_id)["access_token"]
    assert not payload(app, connected.connection_id).get("refresh_token")
    grants = len(up.token_requests)  # the code exchange
    job = _job(app)
    assert (await job.run() or "").startswith("0 refreshed, 0 kept alive")  # just connected
    assert up.mcp_calls == []
    app.clock.advance(24 * 3600)
    assert (await job.run() or "").startswith("0 refreshed, 1 kept alive, 0 failed")
    assert [(c.rpc_method, c.authorization) for c in up.calls("POST")] == [
        ("initialize", f"Bearer {token}")
    ]
    assert len(up.token_requests) == grants  # never a refresh request
    stored = row(app, connected.connection_id)
    assert stored.last_refreshed_at == app.clock.now().replace(microsecond=0)
    assert stored.status == "active"
    assert ("keepalive", "success") in {e[:2] for e in events(app, connected.connection_id)}
    # Kept alive just now: not due again for a day.
    calls = len(up.mcp_calls)
    assert (await job.run() or "").startswith("0 refreshed, 0 kept alive")
    assert len(up.mcp_calls) == calls


async def test_keepalive_401_flags_needs_reconnect_with_event(
    todoist: tuple[Appliance, RecordingUpstream],
) -> None:
    app, up = todoist
    connected = await _connect(app)
    up.access_tokens.clear()  # the user revoked the app at Todoist: the token is refused
    grants = len(up.token_requests)
    app.clock.advance(24 * 3600)
    assert (await _job(app).run() or "").startswith("0 refreshed, 0 kept alive, 1 failed")
    assert [(c.http_method, c.rpc_method, c.status) for c in up.mcp_calls] == [
        ("POST", "initialize", 401)
    ]  # a refused initialize opened no session: nothing to end
    assert len(up.token_requests) == grants
    stored = row(app, connected.connection_id)
    assert stored.status == "needs_reconnect" and stored.needs_reconnect_at is not None
    found = [
        e for e in events(app, connected.connection_id) if e[:2] == ("keepalive", "auth_failed")
    ]
    assert len(found) == 1 and "401" in (found[0][2] or "")
    # Flagged connections are not probed again.
    app.clock.advance(24 * 3600)
    assert (await _job(app).run() or "").startswith("0 refreshed, 0 kept alive, 0 failed")
    assert len(up.mcp_calls) == 1


# -- ending the session the keep-alive opened (MCP Streamable HTTP: DELETE) ------------------


async def test_keepalive_ends_the_session_it_opened(
    todoist: tuple[Appliance, RecordingUpstream],
) -> None:
    app, up = todoist
    connected = await _connect(app)
    token = payload(app, connected.connection_id)["access_token"]
    app.clock.advance(24 * 3600)
    assert (await _job(app).run() or "").startswith("0 refreshed, 1 kept alive, 0 failed")
    [initialize] = up.calls("POST")
    assert initialize.status == 200 and initialize.issued_session  # the SDK opened a session
    [delete] = up.calls("DELETE")
    assert delete.session_id == initialize.issued_session
    assert delete.authorization == f"Bearer {token}"
    assert delete.protocol_version == "2025-06-18"  # the version the server negotiated
    assert delete.status == 200  # the real MCP server accepted and ended it
    assert up.mcp_calls == [initialize, delete]  # initialize, then DELETE, nothing else


@pytest.mark.parametrize("todoist", [{"stateless": True}], indirect=True)
async def test_keepalive_sends_no_delete_without_a_session(
    todoist: tuple[Appliance, RecordingUpstream],
) -> None:
    app, up = todoist
    connected = await _connect(app)
    app.clock.advance(24 * 3600)
    assert (await _job(app).run() or "").startswith("0 refreshed, 1 kept alive, 0 failed")
    [initialize] = up.mcp_calls
    assert (initialize.http_method, initialize.rpc_method) == ("POST", "initialize")
    assert initialize.status == 200 and initialize.issued_session is None
    assert row(app, connected.connection_id).status == "active"


SESSION = "keepalive-session-7f3a"
NEGOTIATED = "2025-03-26"  # older than what keep-alive asks for: the DELETE must carry this one


class BareMcp:
    """A bare HTTP/1.1 MCP endpoint on 127.0.0.1 (asyncio streams), for what an SDK server
    will not do: a POST (`initialize`) answers 200 with a JSON result and `Mcp-Session-Id:
    SESSION`; a DELETE is recorded, then answered with status `delete` or, for "drop", by
    closing the connection without an answer."""

    def __init__(self, delete: str) -> None:
        self.delete = delete
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/mcp"

    async def __aenter__(self) -> BareMcp:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # one connection may carry both requests (pooled keep-alive)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                method = first.split(" ", 1)[0]
                self.requests.append((method, headers))
                if method == "POST":
                    result = {"protocolVersion": NEGOTIATED, "capabilities": {}}
                    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()
                    status = 200
                    extra = f"Content-Type: application/json\r\nMcp-Session-Id: {SESSION}\r\n"
                elif self.delete == "drop":
                    return  # the finally closes the socket: no answer at all
                else:
                    body, status, extra = b"", int(self.delete), ""
                reason = HTTPStatus(status).phrase
                start = f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
                writer.write(start.encode("latin-1") + body)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.mark.parametrize("delete", ["405", "500", "drop"])
async def test_a_failed_session_end_leaves_the_keepalive_a_success(
    todoist: tuple[Appliance, RecordingUpstream], delete: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = todoist
    connected = await _connect(app)
    token = payload(app, connected.connection_id)["access_token"]
    service = await app.connect.registry.get("todoist")
    assert service is not None
    refresher = OAuthRefresher(app.ctx, app.connect.registry, app.connect.outbound)
    caplog.set_level(logging.DEBUG)
    app.clock.advance(24 * 3600)
    async with BareMcp(delete) as bare:
        ok = await refresher.keep_alive(connected.connection_id, replace(service, mcp_url=bare.url))
    assert ok is True
    methods = [method for method, _ in bare.requests]
    # aiohttp retries an idempotent request once when a reused connection drops under it.
    assert methods == ["POST", "DELETE"] or (
        delete == "drop" and methods == ["POST"] + ["DELETE"] * 2
    )
    for _, sent in bare.requests[1:]:
        assert sent["mcp-session-id"] == SESSION
        assert sent["authorization"] == f"Bearer {token}"
        assert sent["mcp-protocol-version"] == NEGOTIATED
    stored = row(app, connected.connection_id)
    assert stored.status == "active" and stored.needs_reconnect_at is None
    assert stored.last_refreshed_at == app.clock.now().replace(microsecond=0)
    kinds = [e[:2] for e in events(app, connected.connection_id)]
    assert kinds.count(("keepalive", "success")) == 1
    assert not [k for k in kinds if k[0] == "keepalive" and k[1] != "success"]
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert token not in logged and SESSION not in logged
    if delete != "405":  # a refused or failed end is noted (a 405 is the server's right)
        assert "keep-alive session not ended" in logged
