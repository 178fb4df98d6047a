"""The payload canary's one-off allowance (DESIGN §12): with private upstreams OFF, the canary's
temporary service reaches the canary's own echo on 127.0.0.1 — and nothing else does.

Attacks, each against the real application on loopback with `BINDIFY_ALLOW_PRIVATE_UPSTREAMS`
off: another admin-added service pointing at the same loopback port while the allowance lives;
the canary's own service moved to another loopback port; a member asking for an allowance; an
admin naming a port where no canary echo answers (a local database, say); the allowance after
it expired or was ended; and a service id in the reserved `canary-` prefix through the ordinary
service API. The in-memory KV scan (`POST /api/v1/ops/kv-scan`) finds a planted marker, never
returns a key or value, refuses markers that are not a canary's, and is limited per admin.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.inprocess import Appliance, add_token, add_user, api, start_appliance

from bindify_appliance.connections.create import create_connection
from bindify_appliance.ops.canary import new_marker
from bindify_appliance.ops.canary_echo import EchoUpstream
from bindify_appliance.store.services import ServiceSpec, insert_service


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Appliance]:
    appliance = await start_appliance(tmp_path, allow_private_upstreams=False)
    yield appliance
    await appliance.close()


@pytest.fixture
def admin(app: Appliance) -> str:
    return add_token(app, add_user(app, "admin@example.com", "admin"))


@pytest.fixture
def member(app: Appliance) -> str:
    return add_token(app, add_user(app, "member@example.com", "member"))


@pytest.fixture
def echo() -> Any:
    with EchoUpstream() as upstream:
        yield upstream


async def _call(app: Appliance, token: str, method: str, path: str, body: Any = None) -> Any:
    return await api(app, method, "/api/v1" + path, body, token=token)


async def _allow(app: Appliance, admin: str, echo: EchoUpstream, **extra: Any) -> str:
    answer = await _call(
        app, admin, "POST", "/ops/canary", {"port": echo.port, "proof": echo.proof, **extra}
    )
    assert answer.status == 201, answer.text
    service = answer.json()["service"]
    assert service["id"].startswith("canary-")
    assert service["mcp_url"] == f"http://127.0.0.1:{echo.port}/mcp"
    return str(service["id"])


async def _connect(app: Appliance, token: str, service: str) -> str:
    answer = await _call(app, token, "POST", "/connections", {"service": service})
    assert answer.status == 201, answer.text
    return str(answer.json()["secret_url"])


async def _send(secret_url: str, marker: str) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": marker}},
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(secret_url, json=body, headers={"Accept": "application/json"}) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = json.loads(await response.text())
        return answer


def _relayed(answer: dict[str, Any], marker: str) -> bool:
    return "result" in answer and marker in json.dumps(answer["result"])


def _refused(answer: dict[str, Any]) -> bool:
    return answer.get("error", {}).get("code") == -32603


async def _other_service(app: Appliance, service_id: str, url: str) -> str:
    """A service row pointing at `url` as an older version (or a changed override) could have
    saved it, and an admin's connection to it; returns the secret URL."""
    spec = ServiceSpec(
        id=service_id, name="Other", mcp_url=url, transport="streamable-http", auth={"type": "none"}
    )
    now = app.clock.now()
    app.store.call(
        lambda: insert_service(spec, client_secret_sealed=None, key_fingerprint="", now=now)
    )
    app.connect.registry.invalidate()
    definition = await app.connect.registry.get(service_id)
    assert definition is not None
    owner = add_user(app, f"{service_id}@example.com", "admin")
    created = await create_connection(
        app.ctx, user_id=owner, service=definition, auth_type="none", payload={}
    )
    return created.secret_url


async def test_the_canary_reaches_its_echo_and_nothing_else_does(
    app: Appliance, admin: str, echo: EchoUpstream
) -> None:
    service = await _allow(app, admin, echo)
    marker = new_marker()
    canary_url = await _connect(app, admin, service)
    assert _relayed(await _send(canary_url, marker), marker)

    # Another service at the very same loopback address and port: refused while it lives.
    other_url = await _other_service(app, "intruder", echo.url)
    assert _refused(await _send(other_url, marker))
    # Nor can the ordinary service API save that URL, or a service in the reserved prefix.
    for body in (
        {"id": "intruder2", "name": "I", "mcp_url": echo.url, "auth": {"type": "none"}},
        {
            "id": "canary-1234",
            "name": "I",
            "mcp_url": "https://x.example/mcp",
            "auth": {"type": "none"},
        },
    ):
        saved = await _call(app, admin, "POST", "/services", body)
        assert saved.status == 400, saved.text
    # The canary's own connection still works: the refusals did not end the allowance.
    assert _relayed(await _send(canary_url, marker), marker)


async def test_the_allowance_is_for_its_port_only(app: Appliance, admin: str) -> None:
    with EchoUpstream() as first, EchoUpstream() as second:
        service = await _allow(app, admin, first)
        secret_url = await _connect(app, admin, service)
        # Move the canary's service to another loopback port behind the API's back.
        from bindify_appliance.store.models import Service

        app.store.call(
            lambda: Service.update(mcp_url=second.url).where(Service.id == service).execute()
        )
        app.connect.registry.invalidate()
        assert _refused(await _send(secret_url, new_marker()))


async def test_a_member_cannot_create_or_end_an_allowance(
    app: Appliance, admin: str, member: str, echo: EchoUpstream
) -> None:
    body = {"port": echo.port, "proof": echo.proof}
    assert (await _call(app, member, "POST", "/ops/canary", body)).status == 403
    assert (await api(app, "POST", "/api/v1/ops/canary", body)).status == 401
    service = await _allow(app, admin, echo)
    assert (await _call(app, member, "DELETE", f"/ops/canary/{service}")).status == 403
    marker = new_marker()
    assert _relayed(await _send(await _connect(app, admin, service), marker), marker)
    scan = await _call(app, member, "POST", "/ops/kv-scan", {"marker": new_marker()})
    assert scan.status == 403


async def test_a_port_without_the_canary_echo_is_refused(app: Appliance, admin: str) -> None:
    """An admin cannot point the allowance at a local database: the port must prove it is the
    canary's echo by answering with the proof the canary gave it."""
    with EchoUpstream() as echo:
        wrong = await _call(
            app, admin, "POST", "/ops/canary", {"port": echo.port, "proof": "x" * 43}
        )
        assert wrong.status == 400, wrong.text
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        silent = await _call(app, admin, "POST", "/ops/canary", {"port": port, "proof": "y" * 43})
        assert silent.status == 400, silent.text
    finally:
        listener.close()
    for bad in ({"port": 0, "proof": "z" * 43}, {"port": 70000, "proof": "z" * 43}, {"port": 80}):
        assert (await _call(app, admin, "POST", "/ops/canary", bad)).status == 400
    services = await _call(app, admin, "GET", "/services")
    assert not [s for s in services.json()["items"] if s["id"].startswith("canary-")]


async def test_the_allowance_expires_on_its_own(
    app: Appliance, admin: str, echo: EchoUpstream
) -> None:
    service = await _allow(app, admin, echo, seconds=60)
    secret_url = await _connect(app, admin, service)
    marker = new_marker()
    assert _relayed(await _send(secret_url, marker), marker)
    app.clock.advance(61)
    assert _refused(await _send(secret_url, marker))
    too_long = await _call(
        app, admin, "POST", "/ops/canary", {"port": echo.port, "proof": echo.proof, "seconds": 601}
    )
    assert too_long.status == 400


async def test_ending_the_allowance_refuses_at_once(
    app: Appliance, admin: str, echo: EchoUpstream
) -> None:
    service = await _allow(app, admin, echo)
    secret_url = await _connect(app, admin, service)
    marker = new_marker()
    assert _relayed(await _send(secret_url, marker), marker)
    assert (await _call(app, admin, "DELETE", f"/ops/canary/{service}")).status == 204
    assert _refused(await _send(secret_url, marker))
    assert (await _call(app, admin, "DELETE", f"/ops/canary/{service}")).status == 404


# -- the in-memory KV scan --------------------------------------------------------------------


async def test_the_kv_scan_finds_a_planted_marker_without_showing_it(
    app: Appliance, admin: str
) -> None:
    marker = new_marker()
    secret_key = "proxy:" + secrets.token_urlsafe(32)
    await app.ctx.kv.set(secret_key, f"before {marker} after", 60)
    await app.ctx.kv.set("claim:" + marker, "x", 60)
    answer = await _call(app, admin, "POST", "/ops/kv-scan", {"marker": marker})
    assert answer.status == 200, answer.text
    found = answer.json()
    assert found["scanned"] >= 2
    assert len(found["hits"]) == 2
    assert {hit["prefix"] for hit in found["hits"]} == {"proxy", "claim"}
    assert secret_key not in answer.text and secret_key[6:] not in answer.text
    assert "before" not in answer.text and marker not in answer.text
    clean = await _call(app, admin, "POST", "/ops/kv-scan", {"marker": new_marker()})
    assert clean.status == 200 and clean.json()["hits"] == []


async def test_the_kv_scan_is_no_oracle(app: Appliance, admin: str) -> None:
    await app.ctx.kv.set("claim:abc", '{"connection_id": "secret-value"}', 60)
    for guess in ('{"connection_id": "s', "secret-value", "bndcanary-" + "0" * 31, ""):
        answer = await _call(app, admin, "POST", "/ops/kv-scan", {"marker": guess})
        assert answer.status == 400, answer.text
        assert "secret-value" not in answer.text
    # Limited per admin per minute (the refused guesses above did not count).
    statuses = [
        (await _call(app, admin, "POST", "/ops/kv-scan", {"marker": new_marker()})).status
        for _ in range(7)
    ]
    assert statuses[:6] == [200] * 6 and statuses[6] == 429


async def test_the_allowance_is_shared_through_the_kv(tmp_path: Path, redis_url: str) -> None:
    """Two instances on one database and one Redis: the allowance granted on one is honoured,
    and its end seen, by the other that serves the proxied request."""
    from bindify_appliance.crypto.keyring import generate_master_key
    from bindify_appliance.kv.redis import RedisKV

    keys = json.dumps([{"key": generate_master_key()}])
    first = await start_appliance(
        tmp_path, allow_private_upstreams=False, master_keys=keys, kv=RedisKV(redis_url)
    )
    second = await start_appliance(
        tmp_path, allow_private_upstreams=False, master_keys=keys, kv=RedisKV(redis_url)
    )
    try:
        admin = add_token(first, add_user(first, "admin@example.com", "admin"))
        with EchoUpstream() as echo:
            service = await _allow(first, admin, echo)
            secret_url = await _connect(first, admin, service)
            via_second = secret_url.replace(first.url, second.url)
            marker = new_marker()
            assert _relayed(await _send(via_second, marker), marker)
            assert (await _call(first, admin, "DELETE", f"/ops/canary/{service}")).status == 204
            assert _refused(await _send(via_second, marker))
    finally:
        await second.close()
        await first.close()
