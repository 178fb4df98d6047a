"""A refresh at expiry across the workers of one `serve --workers 2` is made once.

The seeding appliance runs in-process on the ManualClock at START (hours before the real clock)
on the same SQLite data directory the workers then share, so the stored token is already expired
for them: the first calls, spread by the kernel over both workers (30 fresh connections), race
to refresh. The compare-and-swap on the token generation lets exactly one refresh reach the
provider, as it does across instances.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis
from peers.oauth_upstream import OAuthUpstream
from support.appliance import Appliance as Serve
from support.inprocess import add_token, add_user, start_appliance
from support.keys import STRONG_SECRET_KEY
from support.managed import add_service, connect_managed, events, refresh_calls, row, rpc

from bindify_appliance.crypto.keyring import generate_master_key

pytestmark = pytest.mark.slow
SECRET = STRONG_SECRET_KEY


async def test_refresh_at_expiry_across_two_workers_is_made_once(
    tmp_path: Path, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    keys = json.dumps([{"key": generate_master_key()}])
    app = await start_appliance(
        data, allow_private_upstreams=True, master_keys=keys, environ={"BINDIFY_SECRET_KEY": SECRET}
    )
    async with OAuthUpstream(access_ttl=3600) as up:
        admin = add_user(app, "admin@example.com", "admin")
        member = add_user(app, "member@example.com", "member")
        await add_service(app, add_token(app, admin, "admin"), up)
        connected = await connect_managed(app, member)
        serve = Serve(
            data,
            {
                "BINDIFY_WORKERS": "2",
                "BINDIFY_KV_URL": redis_url,
                "BINDIFY_MASTER_KEYS": keys,
                "BINDIFY_SECRET_KEY": SECRET,
                "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
            },
        )
        serve.start(wait=False)
        try:
            await asyncio.to_thread(serve.wait_ready)
            for _ in range(300):  # the second worker too
                if any(r.get("event") == "workers_ready" for r in serve.log_records()):
                    break
                await asyncio.sleep(0.1)
            calls = [rpc(serve.url + connected.secret_path, rid=i + 1) for i in range(30)]
            answers = await asyncio.gather(*calls)
            assert all("result" in x for x in answers), [x for x in answers if "result" not in x][
                :2
            ]
            assert refresh_calls(up) == 1
            assert up.revoked_families == set()  # the provider's reuse detection never fired
            stored = row(app, connected.connection_id)
            assert stored.token_generation == 1 and stored.refresh_started_at is None
            refreshes = [e for e in events(app, connected.connection_id) if e[0] == "token_refresh"]
            assert refreshes == [("token_refresh", "success", "Refreshed for acme")]
            serving = {
                r.get("worker") for r in serve.log_records() if r.get("event") == "listening"
            }
            assert serving == {0, 1}
        finally:
            code = await asyncio.to_thread(serve.stop)
    await app.close()
    assert code == 0
