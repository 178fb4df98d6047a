"""Two appliances sharing PostgreSQL and Redis (DESIGN §10): registrations, codes, grants and
tokens are shared — a code issued on one is exchanged on the other, the tokens work on both,
a refresh on one spends the token for both, and a revocation on one is seen on the other."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from peers.raw_upstream import RawUpstream
from support.inprocess import START, Server, add_token, add_user, later, start_appliance

from bindify_appliance.clock import ManualClock
from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.kv.redis import RedisKV
from oauth_server.harness import World, _connect, _service

BASE = "https://bindify.example"  # one issuer for both, as behind one load balancer


async def _instance(
    tmp_path: Path,
    pg_migrated_url: str,
    redis_url: str,
    namespace: str,
    keys: str,
    clock: ManualClock,
) -> Server:
    return await start_appliance(
        tmp_path,
        database_url=pg_migrated_url,
        base_url=BASE,
        master_keys=keys,
        clock=clock,
        kv=RedisKV(redis_url, namespace=namespace),
        instance_id=secrets.token_hex(4),
        kv_url=redis_url,
        allow_private_upstreams=True,
    )


async def test_a_grant_made_on_one_instance_works_on_the_other(
    tmp_path: Path, pg_migrated_url: str, redis_url: str
) -> None:
    keys = json.dumps([{"key": generate_master_key()}])
    namespace = f"test-oauth-{secrets.token_hex(4)}:"
    clock = ManualClock(START.timestamp())
    upstream = RawUpstream()
    await upstream.start()
    one = await _instance(tmp_path / "one", pg_migrated_url, redis_url, namespace, keys, clock)
    two = await _instance(tmp_path / "two", pg_migrated_url, redis_url, namespace, keys, clock)
    try:
        admin = add_token(one, add_user(one, "admin@example.com", "admin"))
        owner_id = add_user(one, "owner@example.com")
        owner = add_token(one, owner_id)
        await _service(one, admin, "open", upstream.url("/echo"))
        await _service(one, admin, "other", upstream.url("/echo"))
        managed = await _connect(one, owner, "managed")
        zk = await _connect(one, owner, "zero_knowledge")
        on_one = World(one, upstream, admin, owner_id, owner, managed, zk, owner_id)
        on_two = World(two, upstream, admin, owner_id, owner, managed, zk, owner_id)
        for conn in (managed, zk):
            client = await on_one.client()  # registered on one
            code, verifier = await on_one.code(client["client_id"], conn)  # issued on one
            exchanged = await on_two.exchange(client["client_id"], code, verifier)  # spent on two
            assert exchanged.status == 200, exchanged.text
            tokens = exchanged.json()
            assert (await on_one.mcp(tokens["access_token"])).status == 200
            assert (await on_two.mcp(tokens["access_token"])).status == 200
            # A refresh on two; the old refresh token reused on one ends the grant everywhere.
            form = {"grant_type": "refresh_token", "client_id": client["client_id"]}
            rotated = await on_two.token({**form, "refresh_token": tokens["refresh_token"]})
            assert rotated.status == 200
            fresh = rotated.json()["access_token"]
            assert (await on_one.mcp(fresh)).status == 200
            reused = await on_one.token({**form, "refresh_token": tokens["refresh_token"]})
            assert reused.status == 400
            later(one, seconds=2)  # past both instances' 1-second memos
            assert (await on_two.mcp(fresh)).status == 401
            assert (await on_one.mcp(fresh)).status == 401
            # The code is spent for both.
            assert (await on_one.exchange(client["client_id"], code, verifier)).status == 400
    finally:
        for server in (one, two):
            await server.app.settings["runtime"].close()
            await server.close()
        await upstream.stop()
