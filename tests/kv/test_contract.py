"""One contract suite for every `KVStore`: the in-process store (on a ManualClock) and a real
Redis server (each test in a random namespace, its keys removed afterwards).

TTL expiry is driven by `backend.advance(seconds)`: it moves the ManualClock for memory and
really waits for Redis, so Redis TTLs in these tests stay short (`SHORT` = 150 ms).
Both stores are built with a small anonymous budget (`ANON_CAP`) for the budget tests (§9).
The end of the file holds Redis-only behaviour (namespacing, failures, credentials never shown)
and `open_kv`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.ports import free_port, free_socket

from bindify_appliance.clock import ManualClock
from bindify_appliance.errors import ConfigError, KVError, KVFullError
from bindify_appliance.kv import ANONYMOUS, KVStore, MemoryKV, RedisKV, open_kv

SHORT = 0.15  # a TTL that must still be alive right after the write
PAST_SHORT = 0.3  # advancing this far expires SHORT with margin for a busy machine
LONG = 60.0  # a TTL that must survive the whole test
N_RACERS = 50
ANON_CAP = 3  # the anonymous budget of the stores under test


@dataclass
class Backend:
    name: str
    kv: KVStore
    advance: Callable[[float], Awaitable[None]]


async def _drop_namespace(redis_url: str, namespace: str) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in raw.scan_iter(match=namespace + "*")]
        if keys:
            await raw.delete(*keys)
    finally:
        await raw.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = ManualClock()

        async def advance_clock(seconds: float) -> None:
            clock.advance(seconds)

        memory = MemoryKV(clock=clock, anonymous_records=ANON_CAP)
        yield Backend("memory", memory, advance_clock)
        await memory.close()
        return

    namespace = f"bindify-test-{secrets.token_hex(8)}:"
    store = RedisKV(redis_url, namespace=namespace, anonymous_records=ANON_CAP)

    async def advance_real_time(seconds: float) -> None:
        await asyncio.sleep(seconds)

    try:
        yield Backend("redis", store, advance_real_time)
    finally:
        await store.close()
        await _drop_namespace(redis_url, namespace)


# -- get / set ------------------------------------------------------------------------------------


async def test_get_missing_is_none(backend: Backend) -> None:
    assert await backend.kv.get("nothing-here") is None


async def test_set_then_get_and_overwrite(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v1")
    assert await kv.get("k") == "v1"
    await kv.set("k", "v2")
    assert await kv.get("k") == "v2"


async def test_empty_string_is_a_value_not_absence(backend: Backend) -> None:
    await backend.kv.set("k", "")
    assert await backend.kv.get("k") == ""


async def test_set_with_ttl_expires(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v", ttl=SHORT)
    assert await kv.get("k") == "v"
    remaining = await kv.ttl("k")
    assert remaining is not None and 0 < remaining <= SHORT
    await backend.advance(PAST_SHORT)
    assert await kv.get("k") is None
    assert await kv.ttl("k") is None


async def test_integer_ttl_is_accepted(backend: Backend) -> None:
    await backend.kv.set("k", "v", ttl=30)
    remaining = await backend.kv.ttl("k")
    assert remaining is not None and 29 < remaining <= 30


async def test_set_without_ttl_removes_previous_ttl(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v1", ttl=SHORT)
    await kv.set("k", "v2")
    assert await kv.ttl("k") is None
    await backend.advance(PAST_SHORT)
    assert await kv.get("k") == "v2"


async def test_ttl_is_none_for_missing_and_for_persistent_keys(backend: Backend) -> None:
    kv = backend.kv
    assert await kv.ttl("missing") is None
    await kv.set("forever", "v")
    assert await kv.ttl("forever") is None
    assert await kv.get("forever") == "v"


@pytest.mark.parametrize("bad_ttl", [0, -1, -0.5, float("nan"), float("inf"), 10.0**12])
async def test_invalid_ttl_raises_value_error_and_writes_nothing(
    backend: Backend, bad_ttl: float
) -> None:
    kv = backend.kv
    with pytest.raises(ValueError):
        await kv.set("k", "v", ttl=bad_ttl)
    with pytest.raises(ValueError):
        await kv.set_if_absent("k", "v", ttl=bad_ttl)
    with pytest.raises(ValueError):
        await kv.incr("k", ttl=bad_ttl)
    assert await kv.get("k") is None
    await kv.set("k", "v")
    with pytest.raises(ValueError):
        await kv.expire("k", bad_ttl)
    assert await kv.ttl("k") is None


async def test_bool_ttl_and_non_str_value_are_type_errors(backend: Backend) -> None:
    kv = backend.kv
    with pytest.raises(TypeError):
        await kv.set("k", "v", ttl=True)
    bad_value: Any = 42
    with pytest.raises(TypeError):
        await kv.set("k", bad_value)
    assert await kv.get("k") is None


# -- set_if_absent --------------------------------------------------------------------------------


async def test_set_if_absent_only_when_absent(backend: Backend) -> None:
    kv = backend.kv
    assert await kv.set_if_absent("lock", "owner-a", LONG) is True
    assert await kv.set_if_absent("lock", "owner-b", LONG) is False
    assert await kv.get("lock") == "owner-a"


async def test_set_if_absent_succeeds_again_after_expiry(backend: Backend) -> None:
    kv = backend.kv
    assert await kv.set_if_absent("lock", "owner-a", SHORT) is True
    await backend.advance(PAST_SHORT)
    assert await kv.set_if_absent("lock", "owner-b", LONG) is True
    assert await kv.get("lock") == "owner-b"


async def test_set_if_absent_without_ttl_persists(backend: Backend) -> None:
    kv = backend.kv
    assert await kv.set_if_absent("k", "v", None) is True
    assert await kv.ttl("k") is None


async def test_set_if_absent_race_has_exactly_one_winner(backend: Backend) -> None:
    kv = backend.kv
    tokens = [f"owner-{i}-{secrets.token_hex(4)}" for i in range(N_RACERS)]
    results = await asyncio.gather(*(kv.set_if_absent("lease", t, LONG) for t in tokens))
    assert results.count(True) == 1
    winner = tokens[results.index(True)]
    assert await kv.get("lease") == winner


# -- delete / get_and_delete ----------------------------------------------------------------------


async def test_delete(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v")
    assert await kv.delete("k") is True
    assert await kv.get("k") is None
    assert await kv.delete("k") is False


async def test_delete_of_expired_key_reports_false(backend: Backend) -> None:
    await backend.kv.set("k", "v", ttl=SHORT)
    await backend.advance(PAST_SHORT)
    assert await backend.kv.delete("k") is False


async def test_get_and_delete_is_one_shot(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("state", "s1", ttl=LONG)
    assert await kv.get_and_delete("state") == "s1"
    assert await kv.get_and_delete("state") is None
    assert await kv.get("state") is None
    assert await kv.get_and_delete("never-set") is None


async def test_get_and_delete_of_expired_key_is_none(backend: Backend) -> None:
    await backend.kv.set("state", "s1", ttl=SHORT)
    await backend.advance(PAST_SHORT)
    assert await backend.kv.get_and_delete("state") is None


async def test_get_and_delete_under_concurrency_has_exactly_one_taker(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("claim", "the-claim", ttl=LONG)
    results = await asyncio.gather(*(kv.get_and_delete("claim") for _ in range(N_RACERS)))
    assert results.count("the-claim") == 1
    assert results.count(None) == N_RACERS - 1


# -- incr -----------------------------------------------------------------------------------------


async def test_incr_counts_from_one_and_stores_decimal_text(backend: Backend) -> None:
    kv = backend.kv
    assert [await kv.incr("n") for _ in range(3)] == [1, 2, 3]
    assert await kv.get("n") == "3"
    await kv.set("m", "41")
    assert await kv.incr("m") == 42
    await kv.set("neg", "-2")
    assert await kv.incr("neg") == -1
    await kv.set("min", str(-(2**63)))
    assert await kv.incr("min") == -(2**63) + 1


async def test_incr_ttl_applies_only_when_the_key_is_created(backend: Backend) -> None:
    kv = backend.kv
    assert await kv.incr("rate", ttl=SHORT) == 1
    # A later TTL must not extend the window (INCR + EXPIRE NX semantics).
    assert await kv.incr("rate", ttl=LONG) == 2
    remaining = await kv.ttl("rate")
    assert remaining is not None and remaining <= SHORT
    await backend.advance(PAST_SHORT)
    assert await kv.get("rate") is None
    assert await kv.incr("rate", ttl=LONG) == 1
    remaining = await kv.ttl("rate")
    assert remaining is not None and remaining > SHORT


async def test_incr_ttl_does_not_touch_an_existing_persistent_key(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("n", "5")
    assert await kv.incr("n", ttl=SHORT) == 6
    assert await kv.ttl("n") is None
    await backend.advance(PAST_SHORT)
    assert await kv.get("n") == "6"


async def test_incr_without_ttl_keeps_the_existing_ttl(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("n", "5", ttl=SHORT)
    assert await kv.incr("n") == 6
    assert await kv.ttl("n") is not None
    await backend.advance(PAST_SHORT)
    assert await kv.get("n") is None


@pytest.mark.parametrize(
    "stored",
    ["abc", "1.5", "", " 1", "1 ", "+1", "01", "-0", "1_000", "\u0661", "99999999999999999999"],
)
async def test_incr_of_a_non_integer_raises_and_changes_nothing(
    backend: Backend, stored: str
) -> None:
    kv = backend.kv
    await kv.set("n", stored, ttl=LONG)
    with pytest.raises(KVError):
        await kv.incr("n", ttl=SHORT)
    assert await kv.get("n") == stored
    remaining = await kv.ttl("n")
    assert remaining is not None and remaining > SHORT


async def test_incr_overflow_raises_and_changes_nothing(backend: Backend) -> None:
    kv = backend.kv
    top = str(2**63 - 1)
    await kv.set("n", top)
    with pytest.raises(KVError):
        await kv.incr("n")
    assert await kv.get("n") == top


async def test_incr_under_concurrency_loses_no_update(backend: Backend) -> None:
    kv = backend.kv
    results = await asyncio.gather(*(kv.incr("n", ttl=LONG) for _ in range(N_RACERS)))
    assert sorted(results) == list(range(1, N_RACERS + 1))
    assert await kv.get("n") == str(N_RACERS)


# -- delete_if_value ------------------------------------------------------------------------------


async def test_delete_if_value_releases_only_what_we_own(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("lease", "mine", ttl=LONG)
    assert await kv.delete_if_value("lease", "theirs") is False
    assert await kv.get("lease") == "mine"
    assert await kv.delete_if_value("lease", "mine") is True
    assert await kv.get("lease") is None
    assert await kv.delete_if_value("lease", "mine") is False


async def test_delete_if_value_after_expiry_and_takeover(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("lease", "mine", ttl=SHORT)
    await backend.advance(PAST_SHORT)
    assert await kv.set_if_absent("lease", "theirs", LONG) is True
    # Our lease expired and someone else took it: releasing must not delete theirs.
    assert await kv.delete_if_value("lease", "mine") is False
    assert await kv.get("lease") == "theirs"


async def test_delete_if_value_is_exact(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("lease", "token")
    assert await kv.delete_if_value("lease", "toke") is False
    assert await kv.delete_if_value("lease", "token ") is False
    assert await kv.delete_if_value("lease", "TOKEN") is False
    assert await kv.get("lease") == "token"


# -- expire / ttl ---------------------------------------------------------------------------------


async def test_expire_missing_key_is_false(backend: Backend) -> None:
    assert await backend.kv.expire("missing", LONG) is False
    assert await backend.kv.get("missing") is None


async def test_expire_renews_a_lease(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("lease", "mine", ttl=SHORT)
    assert await kv.expire("lease", LONG) is True
    await backend.advance(PAST_SHORT)
    assert await kv.get("lease") == "mine"
    remaining = await kv.ttl("lease")
    assert remaining is not None and SHORT < remaining <= LONG


async def test_expire_gives_a_persistent_key_a_ttl(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v")
    assert await kv.expire("k", SHORT) is True
    assert await kv.get("k") == "v"
    await backend.advance(PAST_SHORT)
    assert await kv.get("k") is None


async def test_expire_after_expiry_is_false(backend: Backend) -> None:
    await backend.kv.set("k", "v", ttl=SHORT)
    await backend.advance(PAST_SHORT)
    assert await backend.kv.expire("k", LONG) is False
    assert await backend.kv.get("k") is None


# -- budgets: anonymous writes are capped and never evict (DESIGN §9) ----------------------------


async def _fill_anonymous(kv: KVStore, ttl: float = LONG) -> list[str]:
    keys = [f"anon-{i}" for i in range(ANON_CAP)]
    for key in keys:
        await kv.set(key, "one-time", ttl=ttl, budget=ANONYMOUS)
    return keys


async def test_anonymous_writes_need_a_ttl_and_a_known_budget(backend: Backend) -> None:
    kv = backend.kv
    with pytest.raises(ValueError):
        await kv.set("k", "v", budget=ANONYMOUS)
    with pytest.raises(ValueError):
        await kv.set_if_absent("k", "v", None, budget=ANONYMOUS)
    with pytest.raises(ValueError):
        await kv.incr("k", budget=ANONYMOUS)
    bad: Any = "guest"
    with pytest.raises(ValueError):
        await kv.set("k", "v", ttl=LONG, budget=bad)
    assert await kv.get("k") is None


async def test_a_full_anonymous_budget_refuses_new_keys_and_evicts_nothing(
    backend: Backend,
) -> None:
    kv = backend.kv
    await kv.set("claim", "member-claim", ttl=SHORT * 10)  # expires before the anonymous ones
    held = await _fill_anonymous(kv)
    with pytest.raises(KVFullError):
        await kv.set("flood", "x", ttl=SHORT, budget=ANONYMOUS)
    with pytest.raises(KVFullError):
        await kv.set_if_absent("flood", "x", SHORT, budget=ANONYMOUS)
    with pytest.raises(KVFullError):
        await kv.incr("flood", ttl=SHORT, budget=ANONYMOUS)
    assert await kv.get("flood") is None
    for key in held:
        assert await kv.get(key) == "one-time"
    # The member budget is separate: a full anonymous budget never refuses a member's write.
    assert await kv.get("claim") == "member-claim"
    await kv.set("state", "member-state", ttl=LONG)
    assert await kv.set_if_absent("lease", "me", LONG) is True
    assert await kv.incr("member-counter", ttl=LONG) == 1
    assert await kv.get_and_delete("state") == "member-state"


async def test_a_full_anonymous_budget_still_updates_its_own_keys(backend: Backend) -> None:
    kv = backend.kv
    await kv.incr("window", ttl=LONG, budget=ANONYMOUS)
    await kv.set("a", "1", ttl=LONG, budget=ANONYMOUS)
    await kv.set("b", "1", ttl=LONG, budget=ANONYMOUS)
    assert await kv.incr("window", ttl=LONG, budget=ANONYMOUS) == 2
    await kv.set("a", "2", ttl=LONG, budget=ANONYMOUS)
    assert await kv.set_if_absent("b", "other", LONG, budget=ANONYMOUS) is False
    assert await kv.get("a") == "2" and await kv.get("b") == "1"


async def test_expiry_and_deletes_give_anonymous_places_back(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("short", "s", ttl=SHORT, budget=ANONYMOUS)
    await kv.set("taken", "t", ttl=LONG, budget=ANONYMOUS)
    await kv.set("released", "r", ttl=LONG, budget=ANONYMOUS)
    with pytest.raises(KVFullError):
        await kv.set("x", "x", ttl=LONG, budget=ANONYMOUS)
    await backend.advance(PAST_SHORT)
    await kv.set("x", "x", ttl=LONG, budget=ANONYMOUS)  # "short" expired: its place is free
    assert await kv.get_and_delete("taken") == "t"
    await kv.set("y", "y", ttl=LONG, budget=ANONYMOUS)
    assert await kv.delete_if_value("released", "r") is True
    assert await kv.incr("z", ttl=LONG, budget=ANONYMOUS) == 1
    assert await kv.delete("z") is True
    assert await kv.set_if_absent("w", "w", LONG, budget=ANONYMOUS) is True
    with pytest.raises(KVFullError):
        await kv.set("v", "v", ttl=LONG, budget=ANONYMOUS)


async def test_set_moves_a_key_between_budgets(backend: Backend) -> None:
    kv = backend.kv
    held = await _fill_anonymous(kv)
    await kv.set("member-key", "m", ttl=LONG)
    # Turning a member key anonymous needs a place the full budget does not have.
    with pytest.raises(KVFullError):
        await kv.set("member-key", "now-anonymous", ttl=LONG, budget=ANONYMOUS)
    assert await kv.get("member-key") == "m"
    # A member write of an anonymous key takes it out of the anonymous budget.
    await kv.set(held[0], "member-now", ttl=LONG)
    await kv.set("member-key", "now-anonymous", ttl=LONG, budget=ANONYMOUS)
    assert await kv.get("member-key") == "now-anonymous"
    assert await kv.get(held[0]) == "member-now"


async def test_expire_moves_an_anonymous_keys_end(backend: Backend) -> None:
    kv = backend.kv
    held = await _fill_anonymous(kv)
    assert await kv.expire(held[0], SHORT) is True
    with pytest.raises(KVFullError):
        await kv.set("x", "x", ttl=LONG, budget=ANONYMOUS)
    await backend.advance(PAST_SHORT)
    await kv.set("x", "x", ttl=LONG, budget=ANONYMOUS)
    assert await kv.get("x") == "x"


async def test_anonymous_budget_race_admits_exactly_the_capacity(backend: Backend) -> None:
    kv = backend.kv

    async def attempt(i: int) -> bool:
        try:
            await kv.set(f"racer-{i}", "v", ttl=LONG, budget=ANONYMOUS)
        except KVFullError:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(N_RACERS)))
    assert results.count(True) == ANON_CAP


# -- unicode, ping, close -------------------------------------------------------------------------


async def test_unicode_keys_and_values_round_trip(backend: Backend) -> None:
    kv = backend.kv
    key = "ключ:🔑:中文"
    value = "значение — 🔐 ✓ \u00e9\u0301 \U0001f600 \x00 end"
    await kv.set(key, value, ttl=LONG)
    assert await kv.get(key) == value
    assert await kv.delete_if_value(key, value[:-1]) is False
    assert await kv.delete_if_value(key, value) is True
    await kv.set(key, value)
    assert await kv.get_and_delete(key) == value
    assert await kv.set_if_absent("é", "ü", LONG) is True
    assert await kv.get("é") == "ü"
    assert await kv.get("e\u0301") is None  # no normalisation: different key


async def test_ping_answers(backend: Backend) -> None:
    await backend.kv.ping()


async def test_operations_after_close_raise_kv_error(backend: Backend) -> None:
    kv = backend.kv
    await kv.set("k", "v")
    await kv.close()
    await kv.close()  # idempotent
    with pytest.raises(KVError):
        await kv.ping()
    with pytest.raises(KVError):
        await kv.get("k")
    with pytest.raises(KVError):
        await kv.set("k", "v")


# -- the two backends agree -----------------------------------------------------------------------


async def test_random_operation_sequences_agree_across_backends(redis_url: str) -> None:
    """Differential check: the same operations give the same answers on both (TTLs long, so
    only whether a key has one is compared; two anonymous places for three keys)."""
    namespace = f"bindify-test-{secrets.token_hex(8)}:"
    memory = MemoryKV(clock=ManualClock(), anonymous_records=2)
    shared = RedisKV(redis_url, namespace=namespace, anonymous_records=2)
    rng = random.Random(20261129)
    names = ["get", "set", "set_if_absent", "delete", "get_and_delete", "incr"]
    names += ["delete_if_value", "ttl", "anonymous_set", "anonymous_incr", "anonymous_nx"]
    keys = ["a", "b", "c"]
    values = ["0", "1", "-7", "x", "", "01", "9223372036854775807", "ü"]
    steps = [(rng.choice(names), rng.choice(keys), rng.choice(values)) for _ in range(400)]

    async def outcome(kv: KVStore, name: str, key: str, value: str) -> object:
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: kv.get(key),
            "set": lambda: kv.set(key, value),
            "set_if_absent": lambda: kv.set_if_absent(key, value, None),
            "delete": lambda: kv.delete(key),
            "get_and_delete": lambda: kv.get_and_delete(key),
            "incr": lambda: kv.incr(key),
            "delete_if_value": lambda: kv.delete_if_value(key, value),
            "ttl": lambda: kv.ttl(key),
            "anonymous_set": lambda: kv.set(key, value, ttl=LONG, budget=ANONYMOUS),
            "anonymous_incr": lambda: kv.incr(key, ttl=LONG, budget=ANONYMOUS),
            "anonymous_nx": lambda: kv.set_if_absent(key, value, LONG, budget=ANONYMOUS),
        }
        try:
            answer = await calls[name]()
        except KVFullError:
            return "KVFullError"
        except KVError:
            return "KVError"
        return ("has a ttl" if answer is not None else None) if name == "ttl" else answer

    try:
        for i, step in enumerate(steps):
            expected, actual = await outcome(memory, *step), await outcome(shared, *step)
            assert expected == actual, f"step {i} {step}: memory={expected!r} redis={actual!r}"
    finally:
        await memory.close()
        await shared.close()
        await _drop_namespace(redis_url, namespace)


# -- Redis only -----------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    return free_port()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts TCP connections but never answers."""
    sockets, port = free_socket()  # listening, never accepted from
    try:
        yield port
    finally:
        for sock in sockets:
            sock.close()


PASSWORD = "s3cr@t-Pa55"  # a test value that must never surface
PASSWORD_IN_URL = "s3cr%40t-Pa55"

DEAD_OPS: list[tuple[str, Callable[[KVStore], Awaitable[object]]]] = [
    ("ping", lambda kv: kv.ping()),
    ("get", lambda kv: kv.get("k")),
    ("set", lambda kv: kv.set("k", "v", ttl=1)),
    ("set_if_absent", lambda kv: kv.set_if_absent("k", "v", 1)),
    ("delete", lambda kv: kv.delete("k")),
    ("get_and_delete", lambda kv: kv.get_and_delete("k")),
    ("incr", lambda kv: kv.incr("k", ttl=1)),
    ("delete_if_value", lambda kv: kv.delete_if_value("k", "v")),
    ("expire", lambda kv: kv.expire("k", 1)),
    ("ttl", lambda kv: kv.ttl("k")),
]


def _assert_no_credentials(exc: BaseException) -> None:
    chain: BaseException | None = exc
    while chain is not None:
        for text in (str(chain), repr(chain)):
            assert PASSWORD not in text
            assert PASSWORD_IN_URL not in text
        chain = chain.__cause__ or chain.__context__


@pytest.mark.parametrize(("name", "op"), DEAD_OPS, ids=[name for name, _ in DEAD_OPS])
async def test_dead_redis_raises_kv_error_without_credentials(
    closed_port: int, name: str, op: Callable[[KVStore], Awaitable[object]]
) -> None:
    kv = RedisKV(f"redis://bindify:{PASSWORD_IN_URL}@127.0.0.1:{closed_port}/0")
    try:
        with pytest.raises(KVError) as caught:
            await op(kv)
        message = str(caught.value)
        assert f"127.0.0.1:{closed_port}" in message
        assert name in message
        assert "bindify:" not in message  # nor the user name
        _assert_no_credentials(caught.value)
    finally:
        await kv.close()


async def test_unanswering_redis_times_out_as_kv_error(silent_server: int) -> None:
    kv = RedisKV(
        f"redis://:{PASSWORD_IN_URL}@127.0.0.1:{silent_server}/0",
        connect_timeout=0.2,
        command_timeout=0.2,
    )
    try:
        with pytest.raises(KVError) as caught:
            await asyncio.wait_for(kv.ping(), timeout=5)
        _assert_no_credentials(caught.value)
    finally:
        await kv.close()


async def test_missing_unix_socket_raises_kv_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.sock"
    kv = RedisKV(f"unix://{path}?password={PASSWORD_IN_URL}")
    try:
        with pytest.raises(KVError) as caught:
            await kv.ping()
        assert str(path) in str(caught.value)
        _assert_no_credentials(caught.value)
    finally:
        await kv.close()


async def test_keys_live_under_the_namespace(redis_url: str) -> None:
    ns_a = f"bindify-test-{secrets.token_hex(8)}:"
    ns_b = f"bindify-test-{secrets.token_hex(8)}:"
    kv_a, kv_b = RedisKV(redis_url, namespace=ns_a), RedisKV(redis_url, namespace=ns_b)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await kv_a.set("shared-name", "from-a")
        await kv_a.incr("counter")
        assert await raw.get(ns_a + "shared-name") == "from-a"
        assert await raw.get(ns_a + "counter") == "1"
        assert await raw.get("shared-name") is None
        assert await kv_b.get("shared-name") is None
        assert await kv_b.set_if_absent("shared-name", "from-b", LONG) is True
        assert await kv_a.get("shared-name") == "from-a"
        assert kv_a.namespace == ns_a
    finally:
        await raw.aclose()
        await kv_a.close()
        await kv_b.close()
        await _drop_namespace(redis_url, ns_a)
        await _drop_namespace(redis_url, ns_b)


def test_default_namespace() -> None:
    assert RedisKV("redis://127.0.0.1:6379/0").namespace == "bindify:"


def test_malformed_redis_url_is_config_error_without_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        RedisKV(f"redis://:{PASSWORD_IN_URL}@127.0.0.1:notaport/0")
    assert "BINDIFY_KV_URL" in str(caught.value)
    _assert_no_credentials(caught.value)


# -- open_kv --------------------------------------------------------------------------------------


async def test_open_kv_memory_uses_the_given_clock() -> None:
    clock = ManualClock()
    kv = open_kv("memory://", clock=clock)
    assert isinstance(kv, MemoryKV)
    await kv.set("k", "v", ttl=10)
    clock.advance(11)
    assert await kv.get("k") is None
    await kv.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        f"redis://:{PASSWORD_IN_URL}@127.0.0.1:6379/0",
        "rediss://cache.example:6380/1",
        "unix:///run/redis/redis.sock?db=2",
        "REDIS://127.0.0.1:6379",
    ],
)
async def test_open_kv_redis_schemes(url: str) -> None:
    kv = open_kv(url)
    assert isinstance(kv, RedisKV)
    await kv.close()


async def test_open_kv_redis_talks_to_the_server(redis_url: str) -> None:
    kv = open_kv(redis_url)
    try:
        await kv.ping()
    finally:
        await kv.close()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://admin:{PASSWORD_IN_URL}@db.example/bindify",
        f"http://u:{PASSWORD_IN_URL}@cache.example",
        f"admin:{PASSWORD_IN_URL}@cache.example:6379",
        "",
        "memory",
        "memory://somewhere",
        "memory://?max_entries=10",
        "redis://[::1",
    ],
)
def test_open_kv_refuses_other_urls_naming_the_option(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_kv(url)
    message = str(caught.value)
    assert "BINDIFY_KV_URL" in message
    assert "admin" not in message
    _assert_no_credentials(caught.value)
