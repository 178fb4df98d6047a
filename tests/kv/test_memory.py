"""MemoryKV beyond the shared contract: the member size bound (a full store refuses a new key and
evicts nothing), the anonymous count, lazy expiry, `sweep()` counts and the background sweeper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bindify_appliance.clock import ManualClock
from bindify_appliance.errors import KVError, KVFullError
from bindify_appliance.kv import ANONYMOUS, MemoryKV
from bindify_appliance.kv.base import counter_in_range, parse_counter


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def kv(clock: ManualClock) -> AsyncIterator[MemoryKV]:
    store = MemoryKV(clock=clock)
    yield store
    await store.close()


def _small(clock: ManualClock, max_entries: int) -> MemoryKV:
    return MemoryKV(clock=clock, max_entries=max_entries)


async def _snapshot(kv: MemoryKV, keys: list[str]) -> dict[str, tuple[str | None, float | None]]:
    return {key: (await kv.get(key), await kv.ttl(key)) for key in keys}


# -- size bound: refuse, never evict ---------------------------------------------------------------


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryKV(max_entries=0)
    with pytest.raises(ValueError):
        MemoryKV(anonymous_records=0)


async def test_full_store_refuses_and_evicts_nothing(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry closest to expiry (a claim, say) is exactly what a flood must not push out."""
    kv = _small(clock, 3)
    await kv.set("key-record", "r")
    await kv.set("key-later", "l", ttl=100)
    await kv.set("key-sooner", "s", ttl=50)
    with (
        caplog.at_level(logging.WARNING, logger="bindify_appliance.kv.memory"),
        pytest.raises(KVFullError),
    ):
        await kv.set("key-new", "n", ttl=10)
    assert await kv.get("key-sooner") == "s"
    assert await kv.get("key-record") == "r"
    assert await kv.get("key-later") == "l"
    assert await kv.get("key-new") is None
    assert kv.refusals == 1
    assert len(kv) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for secret_word in ("key-record", "key-later", "key-sooner", "key-new"):
        assert secret_word not in warnings[0].getMessage()


async def test_full_warning_is_throttled(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    kv = _small(clock, 1)
    await kv.set("k", "v", ttl=1000)
    with caplog.at_level(logging.WARNING, logger="bindify_appliance.kv.memory"):
        for i in range(5):
            with pytest.raises(KVFullError):
                await kv.set(f"k{i}", "v", ttl=1000)
        clock.advance(61)
        with pytest.raises(KVFullError):
            await kv.set("k-late", "v", ttl=1000)
    assert kv.refusals == 6
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


async def test_full_store_sweeps_expired_entries_before_refusing(clock: ManualClock) -> None:
    kv = _small(clock, 3)
    await kv.set("record", "r")
    await kv.set("long", "l", ttl=100)
    await kv.set("short", "s", ttl=1)
    clock.advance(2)
    await kv.set("new", "n", ttl=100)
    assert kv.refusals == 0
    assert await kv.get("long") == "l"
    assert await kv.get("new") == "n"


async def test_renewed_lease_is_not_swept_by_its_old_deadline(clock: ManualClock) -> None:
    kv = _small(clock, 2)
    await kv.set("lease", "mine", ttl=1)
    await kv.set("cache", "c", ttl=50)
    assert await kv.expire("lease", 100) is True  # its old deadline (1 s) is now stale
    clock.advance(2)
    with pytest.raises(KVFullError):
        await kv.set("new", "n")
    assert await kv.get("lease") == "mine"
    assert await kv.get("cache") == "c"


async def test_overwriting_a_key_needs_no_room(clock: ManualClock) -> None:
    kv = _small(clock, 2)
    await kv.set("a", "1", ttl=1)
    await kv.set("b", "2", ttl=50)
    await kv.set("a", "1b", ttl=100)  # same key, same budget: no growth, no refusal
    assert kv.refusals == 0
    assert await kv.get("a") == "1b"


async def test_full_store_refuses_every_creating_write_and_changes_nothing(
    clock: ManualClock,
) -> None:
    kv = _small(clock, 2)
    await kv.set("a", "1")
    await kv.set("b", "2", ttl=10)
    new_key = "oauth-state:Zx9-secret-looking"
    keys = ["a", "b", new_key]
    before = await _snapshot(kv, keys)
    with pytest.raises(KVFullError) as caught:
        await kv.set(new_key, "3", ttl=10)
    assert new_key not in str(caught.value)
    assert isinstance(caught.value, KVError)
    with pytest.raises(KVFullError):
        await kv.set(new_key, "3")
    with pytest.raises(KVFullError):
        await kv.set_if_absent(new_key, "3", 10)
    with pytest.raises(KVFullError):
        await kv.incr(new_key, ttl=10)
    assert await _snapshot(kv, keys) == before
    assert len(kv) == 2


async def test_full_store_still_updates_existing_keys(clock: ManualClock) -> None:
    kv = _small(clock, 2)
    await kv.set("a", "1")
    await kv.set("n", "5")
    await kv.set("a", "1b", ttl=10)
    assert await kv.incr("n") == 6
    assert await kv.expire("n", 10) is True
    assert await kv.set_if_absent("a", "other", 10) is False
    assert await kv.get("a") == "1b"


async def test_deleting_makes_room_again(clock: ManualClock) -> None:
    kv = _small(clock, 1)
    await kv.set("a", "1")
    with pytest.raises(KVFullError):
        await kv.set("b", "2")
    assert await kv.get_and_delete("a") == "1"
    await kv.set("b", "2")
    assert await kv.get("b") == "2"


async def test_expired_rival_does_not_count(clock: ManualClock) -> None:
    """An expired key whose name is written again is replaced in place, not refused."""
    kv = _small(clock, 2)
    await kv.set("a", "1")
    await kv.set("b", "2", ttl=1)
    clock.advance(2)
    await kv.set("b", "2b")
    assert await kv.get("b") == "2b"
    assert kv.refusals == 0


async def test_anonymous_count_follows_every_removal(clock: ManualClock) -> None:
    """Swept, lazily expired, deleted and moved keys all give their anonymous place back."""
    kv = MemoryKV(clock=clock, anonymous_records=4)
    for key in ("swept", "lazy", "deleted", "moved"):
        await kv.set(key, "v", ttl=1 if key in ("swept", "lazy") else 100, budget=ANONYMOUS)
    with pytest.raises(KVFullError):
        await kv.set("fifth", "v", ttl=100, budget=ANONYMOUS)
    clock.advance(2)
    assert kv.sweep() == 2  # "swept" and "lazy" both expired
    assert await kv.delete("deleted") is True
    await kv.set("moved", "v", ttl=100)  # a member write takes it out of the anonymous budget
    for i in range(4):
        await kv.set(f"again{i}", "v", ttl=100, budget=ANONYMOUS)
    with pytest.raises(KVFullError):
        await kv.set("one-too-many", "v", ttl=100, budget=ANONYMOUS)


# -- lazy expiry and sweep ------------------------------------------------------------------------


async def test_reading_an_expired_entry_removes_it(kv: MemoryKV, clock: ManualClock) -> None:
    await kv.set("k", "v", ttl=1)
    clock.advance(1)  # the deadline itself counts as expired
    assert len(kv) == 1
    assert await kv.get("k") is None
    assert len(kv) == 0


async def test_sweep_removes_only_expired_entries_and_counts_them(
    kv: MemoryKV, clock: ManualClock
) -> None:
    await kv.set("one", "1", ttl=1)
    await kv.set("two", "2", ttl=2)
    await kv.set("three", "3", ttl=3)
    await kv.set("forever", "f")
    assert kv.sweep() == 0
    clock.advance(2.5)
    assert kv.sweep() == 2
    assert len(kv) == 2
    assert kv.sweep() == 0
    assert await kv.get("three") == "3"
    assert await kv.get("forever") == "f"
    clock.advance(1)
    assert kv.sweep() == 1
    assert len(kv) == 1


async def test_sweep_ignores_entries_rewritten_deleted_or_renewed(
    kv: MemoryKV, clock: ManualClock
) -> None:
    await kv.set("rewritten", "a", ttl=1)
    await kv.set("rewritten", "b", ttl=10)
    await kv.set("made-permanent", "a", ttl=1)
    await kv.set("made-permanent", "b")
    await kv.set("deleted", "a", ttl=1)
    await kv.delete("deleted")
    await kv.set("renewed", "a", ttl=1)
    await kv.expire("renewed", 10)
    await kv.set("counted", "1", ttl=1)
    await kv.incr("counted")  # keeps its deadline
    clock.advance(2)
    assert kv.sweep() == 1
    assert await kv.get("counted") is None
    assert await kv.get("rewritten") == "b"
    assert await kv.get("made-permanent") == "b"
    assert await kv.get("renewed") == "a"
    clock.advance(10)
    assert kv.sweep() == 2


async def test_renewing_one_lease_forever_keeps_memory_bounded(
    kv: MemoryKV, clock: ManualClock
) -> None:
    await kv.set("lease", "mine", ttl=10)
    for _ in range(5_000):
        clock.advance(1)
        assert await kv.expire("lease", 10)
    # Stale heap items are compacted away instead of piling up (implementation detail: heap).
    assert len(kv._heap) <= 2 * len(kv) + 1024 + 1
    clock.advance(11)
    assert kv.sweep() == 1


async def test_close_empties_and_refuses(kv: MemoryKV) -> None:
    await kv.set("k", "v")
    await kv.close()
    assert len(kv) == 0
    with pytest.raises(KVError):
        await kv.get("k")


# -- background sweeper ---------------------------------------------------------------------------


async def _wait_for(condition: object, timeout: float = 2.0) -> bool:
    """Poll a callable condition on the running loop (the sweeper runs on loop time)."""
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.005)
    return bool(condition())


async def test_sweeper_sweeps_until_stopped(kv: MemoryKV, clock: ManualClock) -> None:
    kv.start_sweeper(0.01)
    assert kv.sweeper_running
    await kv.set("k", "v", ttl=1)
    clock.advance(2)
    assert await _wait_for(lambda: len(kv) == 0)

    await kv.stop_sweeper()
    assert not kv.sweeper_running
    await kv.set("k2", "v", ttl=1)
    clock.advance(2)
    await asyncio.sleep(0.1)  # ten sweeper intervals: a live sweeper would have removed it
    assert len(kv) == 1


async def test_sweeper_start_twice_is_refused_and_stop_is_idempotent(kv: MemoryKV) -> None:
    await kv.stop_sweeper()  # nothing running: no-op
    kv.start_sweeper(60)
    with pytest.raises(RuntimeError):
        kv.start_sweeper(60)
    await kv.stop_sweeper()
    await kv.stop_sweeper()
    kv.start_sweeper(60)  # can start again after a stop
    assert kv.sweeper_running
    await kv.stop_sweeper()


async def test_close_stops_the_sweeper(clock: ManualClock) -> None:
    kv = MemoryKV(clock=clock)
    kv.start_sweeper(0.01)
    await kv.close()
    assert not kv.sweeper_running


@pytest.mark.parametrize("interval", [0, -1.0])
async def test_sweeper_interval_must_be_positive(kv: MemoryKV, interval: float) -> None:
    with pytest.raises(ValueError):
        kv.start_sweeper(interval)
    assert not kv.sweeper_running


def test_sweeper_needs_a_running_loop() -> None:
    kv = MemoryKV(clock=ManualClock())
    with pytest.raises(RuntimeError):
        kv.start_sweeper(1)
    assert not kv.sweeper_running


async def test_stop_sweeper_propagates_its_callers_cancellation(kv: MemoryKV) -> None:
    kv.start_sweeper(60)
    started = asyncio.Event()

    async def stopper() -> None:
        started.set()
        await kv.stop_sweeper()

    task = asyncio.create_task(stopper())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not kv.sweeper_running


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(str),
        st.integers(10**17, 10**19).map(str),
        st.text(alphabet="0123456789-+ \u0661", max_size=20),
    )
)
def test_incr_of_any_stored_value_is_the_general_rule(stored: str) -> None:
    """`incr`'s fast read of its own counters agrees with `parse_counter` on every value."""
    kv = MemoryKV(clock=ManualClock())
    asyncio.run(kv.set("n", stored))  # a plain write: no loop is needed past it
    parsed = parse_counter(stored)
    if parsed is None or not counter_in_range(parsed + 1):
        with pytest.raises(KVError):
            asyncio.run(kv.incr("n"))
        assert kv._data["n"].value == stored
    else:
        assert asyncio.run(kv.incr("n")) == parsed + 1
        assert kv._data["n"].value == str(parsed + 1)
