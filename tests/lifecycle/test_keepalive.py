"""Keep-alive of a non-expiring grant: the built-in Todoist, pointed at the OAuth upstream
stand-in only through `BINDIFY_TODOIST_*` overrides, kept alive by the background job.

The upstream issues tokens without expiry and without a refresh token (as Todoist does). The
job must send an MCP `initialize` with the stored token and never a refresh request; a 401
flags the connection needs-reconnect with an event. ManualClock throughout, no sleeps.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from accounts.harness import START, add_user
from peers.oauth_upstream import OAuthUpstream
from upstream.harness import Appliance, start_appliance

from bindify_appliance.clock import ManualClock
from bindify_appliance.jobs import lifecycle_jobs
from bindify_appliance.scheduler import Job
from bindify_appliance.services.refresh import OAuthRefresher

from .support import Connected, connect_managed, events, payload, row, runtime_of

CLIENT_ID = "todoist-app"
CLIENT_SECRET = "todoist-app-secret"


class RecordingUpstream(OAuthUpstream):
    """The stand-in, also noting each MCP request's JSON-RPC method and bearer token."""

    mcp_calls: list[tuple[str | None, str]]

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
        self.mcp_calls.append((method, headers.get("authorization", "")))
        replay = iter(messages)

        async def receive_again() -> Any:
            nxt = next(replay, None)
            return nxt if nxt is not None else await receive()

        await super().__call__(scope, receive_again, send)


@pytest.fixture
async def todoist(tmp_path: Path) -> AsyncIterator[tuple[Appliance, RecordingUpstream]]:
    clock = ManualClock(START.timestamp())
    up = RecordingUpstream(
        clock=clock,
        access_ttl=None,  # Todoist tokens do not expire
        refresh=False,  # … and come without a refresh token
        require_pkce=False,
        static_clients={CLIENT_ID: CLIENT_SECRET},
        scopes=("data:read_write",),
    )
    up.mcp_calls = []
    environ = {
        "BINDIFY_TODOIST_MCP_URL": up.mcp_url,
        "BINDIFY_TODOIST_AUTHORIZE_URL": up.authorize_url,
        "BINDIFY_TODOIST_TOKEN_URL": up.token_url,
        "BINDIFY_TODOIST_CLIENT_ID": CLIENT_ID,
        "BINDIFY_TODOIST_CLIENT_SECRET": CLIENT_SECRET,
    }
    async with up:
        app = await start_appliance(tmp_path, proxy=True, environ=environ, clock=clock)
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
    member = add_user(app, "member@example.com", "member")  # type: ignore[arg-type]
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
    assert up.mcp_calls == [("initialize", f"Bearer {token}")]
    assert len(up.token_requests) == grants  # never a refresh request
    stored = row(app, connected.connection_id)
    assert stored.last_refreshed_at == app.clock.now().replace(microsecond=0)
    assert stored.status == "active"
    assert ("keepalive", "success") in {e[:2] for e in events(app, connected.connection_id)}
    # Kept alive just now: not due again for a day.
    assert (await job.run() or "").startswith("0 refreshed, 0 kept alive")
    assert len(up.mcp_calls) == 1


async def test_keepalive_401_flags_needs_reconnect_with_event(
    todoist: tuple[Appliance, RecordingUpstream],
) -> None:
    app, up = todoist
    connected = await _connect(app)
    up.access_tokens.clear()  # the user revoked the app at Todoist: the token is refused
    grants = len(up.token_requests)
    app.clock.advance(24 * 3600)
    assert (await _job(app).run() or "").startswith("0 refreshed, 0 kept alive, 1 failed")
    assert [m for m, _ in up.mcp_calls] == ["initialize"]
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
