"""Several `serve` processes on one PostgreSQL database with Redis as their KV.

The appliance that seeds the connection runs in-process on the ManualClock at START (hours
before the real clock), so the stored token is already expired for the real `serve`
processes: their first requests must refresh. The OAuth upstream runs on the real clock in this
test's event loop, so every HTTP call here is asynchronous.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from peers.oauth_upstream import OAuthUpstream
from support.appliance import Appliance as Serve
from support.inprocess import Appliance, add_token, add_user, start_appliance
from support.managed import Connected, add_service, connect_managed, events, refresh_calls, row, rpc

from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.store.models import Connection

pytestmark = pytest.mark.slow
SECRET = secrets.token_urlsafe(32)  # a strong cookie key (DESIGN §9)


@pytest.fixture
def keys() -> str:
    return json.dumps([{"key": generate_master_key()}])


@pytest.fixture
async def seeded(
    tmp_path: Path, pg_url: str, keys: str
) -> AsyncIterator[tuple[Appliance, OAuthUpstream, Connected]]:
    app = await start_appliance(
        tmp_path / "seed",
        allow_private_upstreams=True,
        database_url=pg_url,
        master_keys=keys,
        environ={"BINDIFY_SINGLE_INSTANCE": "true", "BINDIFY_SECRET_KEY": SECRET},
    )
    async with OAuthUpstream(access_ttl=3600) as up:
        admin = add_user(app, "admin@example.com", "admin")
        member = add_user(app, "member@example.com", "member")
        await add_service(app, add_token(app, admin, "admin"), up)
        connected = await connect_managed(app, member)
        yield app, up, connected
    await app.close()


def _serve(
    tmp_path: Path, name: str, pg_url: str, redis_url: str, keys: str, **extra: str
) -> Serve:
    data = tmp_path / name
    data.mkdir(parents=True)
    env = {
        "BINDIFY_DATABASE_URL": pg_url,
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": keys,
        "BINDIFY_SECRET_KEY": SECRET,
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
        **extra,
    }
    serve = Serve(data, env)
    serve.env["BINDIFY_BASE_URL"] = serve.url
    return serve


async def _start(*serves: Serve) -> None:
    for serve in serves:
        serve.start(wait=False)
    for serve in serves:
        await asyncio.to_thread(serve.wait_ready)


@pytest.mark.parametrize("kv_lock", ["on", "off"])
async def test_two_processes_refresh_exactly_once(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    keys: str,
    seeded: tuple[Appliance, OAuthUpstream, Connected],
    kv_lock: str,
) -> None:
    app, up, connected = seeded
    hook = {"BINDIFY_TEST_REFRESH_KV_LOCK": kv_lock}
    a = _serve(tmp_path, "a", pg_url, redis_url, keys, **hook)
    b = _serve(tmp_path, "b", pg_url, redis_url, keys, **hook)
    try:
        await _start(a, b)
        calls = [
            rpc(serve.url + connected.secret_path, rid=i + 1) for i in range(15) for serve in (a, b)
        ]
        answers = await asyncio.gather(*calls)
        assert all("result" in x for x in answers), [x for x in answers if "result" not in x][:2]
        assert refresh_calls(up) == 1
        assert up.revoked_families == set()  # the provider's reuse detection never fired
        stored = row(app, connected.connection_id)
        assert stored.token_generation == 1 and stored.refresh_started_at is None
        assert [e for e in events(app, connected.connection_id) if e[0] == "token_refresh"] == [
            ("token_refresh", "success", "Refreshed for acme")
        ]
    finally:
        codes = [await asyncio.to_thread(serve.stop) for serve in (a, b)]
    assert codes == [0, 0]  # graceful shutdown stops the jobs and exits cleanly


@pytest.mark.parametrize("instances", [1, 2])
async def test_short_lived_tokens_refresh_once_per_lifetime_under_load(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    keys: str,
    seeded: tuple[Appliance, OAuthUpstream, Connected],
    instances: int,
) -> None:
    """8-second tokens, real clock, steady concurrent load on one instance or two: a refresh
    when 75 % of each token's lifetime has passed (every 6 s), never one per request."""
    _, up, connected = seeded
    up.access_ttl = 8  # from the first refresh on (the seeded token is already expired)
    serves = [_serve(tmp_path, f"s{i}", pg_url, redis_url, keys) for i in range(instances)]
    try:
        await _start(*serves)
        loop = asyncio.get_running_loop()
        started = loop.time()
        duration = 20.0
        answers: list[dict[str, object]] = []
        while loop.time() - started < duration:
            calls = [
                rpc(s.url + connected.secret_path, rid=i + 1) for i in range(3) for s in serves
            ]
            answers += await asyncio.gather(*calls)
            await asyncio.sleep(0.2)
        assert all("result" in x for x in answers), [x for x in answers if "result" not in x][:2]
        assert len(answers) >= 40 * instances  # the load was real
        times = [c.at for c in up.token_requests if c.form.get("grant_type") == "refresh_token"]
        # The first refresh replaces the expired seed; then one per 6 s of the 20 s.
        assert 3 <= len(times) <= 1 + int(duration // 6) + 1, len(times)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 6 s apart, less up to 1 s: the stored times are whole seconds.
        assert all(gap >= 4.9 for gap in gaps), gaps
        assert up.revoked_families == set()
    finally:
        codes = [await asyncio.to_thread(serve.stop) for serve in serves]
    assert codes == [0] * instances


async def test_sigkill_between_provider_answer_and_commit_is_never_silent(
    tmp_path: Path,
    pg_url: str,
    redis_url: str,
    keys: str,
    seeded: tuple[Appliance, OAuthUpstream, Connected],
) -> None:
    app, up, connected = seeded
    doomed = _serve(
        tmp_path, "doomed", pg_url, redis_url, keys, BINDIFY_TEST_FAULT="refresh:after_provider"
    )
    try:
        await _start(doomed)
        with pytest.raises(aiohttp.ClientError):
            await rpc(doomed.url + connected.secret_path)
        assert doomed.proc is not None
        assert await asyncio.to_thread(doomed.proc.wait, 10) == -signal.SIGKILL
    finally:
        doomed.stop()
    # The provider answered (and rotated); the commit never happened; the marker says so.
    assert refresh_calls(up) == 1
    stored = row(app, connected.connection_id)
    marker = stored.refresh_started_at
    assert marker is not None and stored.token_generation == 0
    # Minutes later (moved back in the row rather than waited for) a restart flags it.
    backdated = marker - timedelta(minutes=3)
    app.store.call(
        lambda: (
            Connection.update(refresh_started_at=backdated)
            .where(Connection.id == connected.connection_id)
            .execute()
        )
    )
    again = _serve(tmp_path, "again", pg_url, redis_url, keys)
    try:
        await _start(again)
        answer = await rpc(again.url + connected.secret_path, rid=5)
        assert answer["error"]["code"] == -32003, answer
        assert f"/connections/{connected.connection_id}" in answer["error"]["message"]
    finally:
        await asyncio.to_thread(again.stop)
    stored = row(app, connected.connection_id)
    assert stored.status == "needs_reconnect" and stored.refresh_started_at is None
    assert ("token_refresh", "interrupted") in {e[:2] for e in events(app, connected.connection_id)}
    # The stale refresh token was never replayed: no reuse detection, no second refresh.
    assert refresh_calls(up) == 1 and up.revoked_families == set()
