"""Per-connection rate limit, per-IP unknown-credential limit, and the client address they are
keyed on (the rules themselves: tests/test_clientaddr.py)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from peers.raw_upstream import RawUpstream

from bindify_appliance.clock import ManualClock
from bindify_appliance.kv import MemoryKV, RedisKV
from bindify_appliance.proxy import ProxyConfig
from bindify_appliance.proxy.limits import ConnectionRateLimiter, UnknownCredentialLimiter

from .conftest import close_proxy, make_proxy

CALL = b'{"jsonrpc":"2.0","id":11,"method":"tools/list"}'


async def test_per_connection_rate_limit(raw: RawUpstream, http: Any) -> None:
    harness = await make_proxy(settings={"rate_limit_per_hour": 2})
    try:
        creds, _ = harness.resolver.add("acme", raw.url("/echo"))
        other, _ = harness.resolver.add("acme", raw.url("/echo"))
        for _ in range(2):
            async with http.post(harness.path_url("acme", creds), data=CALL) as resp:
                assert resp.status == 200
                await resp.read()
        async with http.post(harness.path_url("acme", creds), data=CALL) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["id"] == 11
        assert body["error"]["code"] == -31029
        assert 1 <= body["error"]["data"]["retry_after"] <= 3600
        assert len(raw.requests) == 2
        # Another connection has its own budget.
        async with http.post(harness.path_url("acme", other), data=CALL) as resp:
            assert "error" not in json.loads(await resp.read())
    finally:
        await close_proxy(harness)


async def test_rate_limit_off_by_default(raw: RawUpstream, http: Any) -> None:
    harness = await make_proxy()
    try:
        creds, _ = harness.resolver.add("acme", raw.url("/echo"))
        for _ in range(5):
            async with http.post(harness.path_url("acme", creds), data=CALL) as resp:
                assert "error" not in json.loads(await resp.read())
    finally:
        await close_proxy(harness)


async def test_rate_limiter_buckets_by_clock_hour() -> None:
    clock = ManualClock(start=3600 * 1000 + 3000)  # 600 s before the hour ends
    limiter = ConnectionRateLimiter(MemoryKV(clock=clock), clock, per_hour=1)
    assert await limiter.hit("c") is None
    assert await limiter.hit("c") == 600
    clock.advance(600)
    assert await limiter.hit("c") is None


async def test_instances_sharing_redis_share_the_limit(redis_url: str) -> None:
    """Several instances (one Redis) count every request of a connection together."""
    clock = ManualClock(start=3600 * 1000 + 3000)
    namespace = f"bindify-test-{secrets.token_hex(4)}:"
    stores = [RedisKV(redis_url, namespace=namespace) for _ in range(2)]
    try:
        first, second = (ConnectionRateLimiter(kv, clock, per_hour=3) for kv in stores)
        assert await first.hit("c") is None
        assert await second.hit("c") is None
        assert await first.hit("c") is None
        assert await second.hit("c") == 600
    finally:
        for kv in stores:
            await kv.close()


async def test_unknown_credential_hits_are_limited_per_ip(raw: RawUpstream, http: Any) -> None:
    harness = await make_proxy(
        config=ProxyConfig(keepalive_interval=0.3, unknown_credential_limit=3)
    )
    try:
        creds, _ = harness.resolver.add("acme", raw.url("/echo"))
        for i in range(3):
            async with http.post(harness.path_url("acme", f"{i}" * 86), data=CALL) as resp:
                assert resp.status == 404
        calls = harness.resolver.resolve_calls
        async with http.post(harness.path_url("acme", "9" * 86), data=CALL) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) > 0
            assert await resp.read() == b""
        # A valid credential from that address is never refused by the block (DESIGN §9): the
        # block applies to misses, decided after resolving.
        async with http.post(harness.path_url("acme", creds), data=CALL) as resp:
            assert resp.status == 200
        assert harness.resolver.resolve_calls == calls + 2  # the blocked miss was resolved too
        assert len(raw.requests) == 1
    finally:
        await close_proxy(harness)


async def test_unknown_credential_block_ends_with_the_window() -> None:
    clock = ManualClock(start=600 * 5000)
    limiter = UnknownCredentialLimiter(MemoryKV(clock=clock), clock, limit=2, window=600)
    await limiter.record_miss("198.51.100.7")
    assert limiter.retry_after("198.51.100.7") is None
    await limiter.record_miss("198.51.100.7")
    assert limiter.retry_after("198.51.100.7") == 600
    assert limiter.retry_after("198.51.100.8") is None
    clock.advance(600)
    assert limiter.retry_after("198.51.100.7") is None


async def test_trusted_proxy_address_is_what_gets_limited(raw: RawUpstream, http: Any) -> None:
    harness = await make_proxy(
        config=ProxyConfig(keepalive_interval=0.3, unknown_credential_limit=1),
        settings={"trusted_proxies": ("127.0.0.0/8",)},
    )
    try:
        creds, _ = harness.resolver.add("acme", raw.url("/echo"))
        bad = {"X-Forwarded-For": "198.51.100.20"}
        async with http.post(harness.path_url("acme", "x" * 86), data=CALL, headers=bad) as r:
            assert r.status == 404
        async with http.post(harness.path_url("acme", "y" * 86), data=CALL, headers=bad) as r:
            assert r.status == 429
        async with http.post(harness.path_url("acme", creds), data=CALL, headers=bad) as r:
            assert r.status == 200  # the block never refuses a valid credential
        good = {"X-Forwarded-For": "198.51.100.21"}
        async with http.post(harness.path_url("acme", "y" * 86), data=CALL, headers=good) as r:
            assert r.status == 404
    finally:
        await close_proxy(harness)
