"""DESIGN §9: with Redis, start-up warns (one line naming `maxmemory-policy`) when Redis may
evict keys, since an evicting Redis would drop claims and OAuth state the budgets protect.

Runs against the real test Redis. `CONFIG SET maxmemory-policy` is server-wide, so the fixture
restores the original value in a `finally`, whatever the test does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from support.appliance import Appliance
from support.keys import STRONG_MASTER_KEY, STRONG_SECRET_KEY

from bindify_appliance.kv import MemoryKV, RedisKV
from bindify_appliance.kv.redis import eviction_policy_warning

SetPolicy = Callable[[str], None]


@pytest.fixture
def set_policy(redis_url: str) -> Iterator[SetPolicy]:
    """Set Redis's maxmemory-policy for the test; the original comes back afterwards."""
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    original = str(raw.config_get("maxmemory-policy")["maxmemory-policy"])

    def set_to(policy: str) -> None:
        raw.config_set("maxmemory-policy", policy)

    try:
        yield set_to
    finally:
        raw.config_set("maxmemory-policy", original)
        raw.close()


@pytest.fixture
async def redis_kv(redis_url: str) -> AsyncIterator[RedisKV]:
    kv = RedisKV(redis_url)
    yield kv
    await kv.close()


async def test_an_evicting_policy_is_named_in_one_line(
    redis_kv: RedisKV, set_policy: SetPolicy
) -> None:
    set_policy("allkeys-lru")
    warning = await eviction_policy_warning(redis_kv)
    assert warning is not None
    assert "maxmemory-policy" in warning and "allkeys-lru" in warning
    assert "noeviction" in warning
    assert "\n" not in warning


async def test_noeviction_and_the_in_process_store_raise_no_warning(
    redis_kv: RedisKV, set_policy: SetPolicy
) -> None:
    set_policy("noeviction")
    assert await eviction_policy_warning(redis_kv) is None
    assert await eviction_policy_warning(MemoryKV()) is None


def _startup_warnings(tmp_path: Path, redis_url: str) -> list[str]:
    env = {
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": json.dumps([{"key": STRONG_MASTER_KEY}]),
        "BINDIFY_SECRET_KEY": STRONG_SECRET_KEY,
    }
    tmp_path.mkdir()
    app = Appliance(tmp_path / "data", env).start()
    assert app.stop() == 0
    return [
        str(r.get("message", r.get("msg", "")))
        for r in app.log_records()
        if r.get("event") == "kv_eviction_policy"
    ]


def test_start_up_warns_once_when_redis_may_evict(
    tmp_path: Path, redis_url: str, set_policy: SetPolicy
) -> None:
    set_policy("volatile-ttl")
    warnings = _startup_warnings(tmp_path / "evicting", redis_url)
    assert len(warnings) == 1, warnings
    assert "maxmemory-policy is volatile-ttl" in warnings[0]
    set_policy("noeviction")
    assert _startup_warnings(tmp_path / "safe", redis_url) == []
