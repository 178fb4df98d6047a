"""`MemoryKV`: the in-process TTL key-value store used when `BINDIFY_KV_URL=memory://`.

Concurrency: the store is used only from the event-loop thread, and no method awaits anything
between reading and writing its dict, so each call runs to completion before any other coroutine
can observe the store. That makes every operation (including `set_if_absent`, `incr`,
`get_and_delete`, `delete_if_value`) atomic without a lock. Calling it from other threads is not
supported.

Expiry: entries carry a deadline on the injected clock's monotonic scale. Reads expire lazily
(an expired entry is removed and reported absent); `sweep()` removes every expired entry and is
called periodically by the scheduler, or by `start_sweeper()` when running standalone. A min-heap
of `(deadline, seq, key)` finds expired and soonest-expiring entries without scanning the dict;
heap items whose `seq` no longer matches the live entry are stale and skipped (entries are never
removed from the heap eagerly).

Size bounds, one per budget (see `kv.base`): `max_entries` member keys and `anonymous_records`
anonymous keys. A write that needs a new place in a full budget first sweeps expired entries;
if the budget is still full it raises `KVFullError` and nothing changes. Nothing is ever evicted
before its TTL: one-time records (claims, OAuth/OIDC state, legacy sessions, limiter windows)
are exactly the entries an attacker would like to push out.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import itertools
import logging
from collections.abc import Iterator
from typing import NamedTuple

from bindify_appliance.clock import Clock, SystemClock
from bindify_appliance.errors import KVError, KVFullError
from bindify_appliance.kv.base import (
    DEFAULT_ANONYMOUS_RECORDS,
    MEMBER,
    Budget,
    checked_budget,
    checked_ttl,
    checked_value,
    counter_in_range,
    parse_counter,
    required_ttl,
)

__all__ = ["MemoryKV"]

log = logging.getLogger(__name__)

# Stale heap items are tolerated until they outnumber live entries by this much; then the heap
# is rebuilt. Keeps memory bounded when the same lease is renewed over and over.
_HEAP_SLACK = 1024

# A full budget means the store is undersized or flooded; say so, but not once per write.
_FULL_WARNING_INTERVAL = 60.0


class _Entry(NamedTuple):
    value: str
    deadline: float | None  # monotonic seconds; None = no expiry
    seq: int  # identifies the TTL assignment; 0 when there is no TTL
    anonymous: bool = False  # which budget the key counts against


class MemoryKV:
    """In-process implementation of `KVStore` (see `bindify_appliance.kv.base`)."""

    def __init__(
        self,
        clock: Clock | None = None,
        max_entries: int = 100_000,
        anonymous_records: int = DEFAULT_ANONYMOUS_RECORDS,
    ) -> None:
        if max_entries < 1 or anonymous_records < 1:
            raise ValueError("max_entries and anonymous_records must be at least 1")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_entries = max_entries
        self._anonymous_records = anonymous_records
        self._data: dict[str, _Entry] = {}
        self._anonymous = 0  # entries in _data counted against the anonymous budget
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._last_full_warning: float | None = None
        self.refusals = 0
        """Writes refused because their budget was full (nothing is ever evicted instead)."""

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept."""
        return len(self._data)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def anonymous_records(self) -> int:
        return self._anonymous_records

    # -- the KVStore protocol -------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        entry = self._live(key, self._now())
        return None if entry is None else entry.value

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, budget: Budget = MEMBER
    ) -> None:
        checked_value(value)
        seconds = checked_ttl(ttl)
        anonymous = checked_budget(budget, seconds)
        now = self._now()
        self._live(key, now)
        self._insert(key, value, seconds, now, anonymous)

    async def set_if_absent(
        self, key: str, value: str, ttl: float | None, *, budget: Budget = MEMBER
    ) -> bool:
        checked_value(value)
        seconds = checked_ttl(ttl)
        anonymous = checked_budget(budget, seconds)
        now = self._now()
        if self._live(key, now) is not None:
            return False
        self._insert(key, value, seconds, now, anonymous)
        return True

    async def delete(self, key: str) -> bool:
        if self._live(key, self._now()) is None:
            return False
        self._drop(key)
        return True

    async def get_and_delete(self, key: str) -> str | None:
        entry = self._live(key, self._now())
        if entry is None:
            return None
        self._drop(key)
        return entry.value

    async def incr(self, key: str, ttl: float | None = None, *, budget: Budget = MEMBER) -> int:
        seconds = checked_ttl(ttl)
        anonymous = checked_budget(budget, seconds)
        now = self._now()
        entry = self._live(key, now)
        if entry is None:
            self._insert(key, "1", seconds, now, anonymous)
            return 1
        value = entry.value
        # What incr itself wrote (1 to 18 ASCII digits, no leading zero) is a counter far from
        # the int64 bounds: read without the general parse (regex, range checks).
        if 0 < len(value) < 19 and value[0] != "0" and value.isascii() and value.isdecimal():
            number = int(value) + 1
        else:
            parsed = parse_counter(value)
            if parsed is None:
                raise KVError("KV incr refused: the stored value is not a 64-bit integer")
            number = parsed + 1
            if not counter_in_range(number):
                raise KVError("KV incr refused: the counter would overflow")
        # The value changes, the TTL assignment (deadline and seq) stays: INCR keeps the TTL.
        self._data[key] = _Entry(str(number), entry.deadline, entry.seq, entry.anonymous)
        return number

    async def delete_if_value(self, key: str, value: str) -> bool:
        checked_value(value)
        entry = self._live(key, self._now())
        # Lease tokens are secrets: compare in constant time. Encode first because
        # compare_digest only accepts ASCII str.
        if entry is None or not hmac.compare_digest(
            entry.value.encode("utf-8"), value.encode("utf-8")
        ):
            return False
        self._drop(key)
        return True

    async def expire(self, key: str, ttl: float) -> bool:
        seconds = required_ttl(ttl)
        now = self._now()
        entry = self._live(key, now)
        if entry is None:
            return False
        self._put(key, entry.value, seconds, now, entry.anonymous)
        return True

    async def ttl(self, key: str) -> float | None:
        now = self._now()
        entry = self._live(key, now)
        if entry is None or entry.deadline is None:
            return None
        # Microsecond resolution: deadlines far from zero on the monotonic scale carry float
        # noise (~1e-7 s) that would otherwise report a TTL slightly above the one set.
        return max(round(entry.deadline - now, 6), 1e-6)

    async def ping(self) -> None:
        self._now()

    async def close(self) -> None:
        await self.stop_sweeper()
        self._closed = True
        self._data.clear()
        self._anonymous = 0
        self._heap.clear()

    # -- reading it all (the canary's scan, kv.base.ScannableKV) ----------------------------------

    def live_items(self) -> Iterator[tuple[str, str]]:
        """Every live key and value, from a copy taken now (the caller may await between items)."""
        now = self._now()
        for key, entry in list(self._data.items()):
            if entry.deadline is None or entry.deadline > now:
                yield key, entry.value

    # -- expiry ---------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Remove every expired entry; return how many were removed."""
        now = self._clock.monotonic()
        heap, data = self._heap, self._data
        removed = 0
        while heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            entry = data.get(key)
            if entry is not None and entry.seq == seq:
                self._drop(key)
                removed += 1
        return removed

    def start_sweeper(self, interval: float = 60.0) -> None:
        """Call `sweep()` every `interval` seconds on the running event loop until stopped.

        The scheduler normally calls `sweep()` itself; this is for standalone use. Raises
        RuntimeError if no loop is running or a sweeper is already running.
        """
        if not interval > 0:
            raise ValueError("sweeper interval must be > 0 seconds")
        if self._closed:
            raise KVError("KV store is closed")
        if self.sweeper_running:
            raise RuntimeError("the KV sweeper is already running")
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep_forever(interval), name="bindify-kv-sweeper")

    async def stop_sweeper(self) -> None:
        """Stop the sweeper and wait for it to finish; a no-op if none is running."""
        task, self._sweeper = self._sweeper, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # Swallow only the cancellation we asked for; if our caller is being cancelled
            # too, let that propagate.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    @property
    def sweeper_running(self) -> bool:
        return self._sweeper is not None and not self._sweeper.done()

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:
                # A bug here must not kill the loop forever and let memory grow unnoticed.
                log.exception("KV sweep failed")

    # -- internals ------------------------------------------------------------------------------

    def _now(self) -> float:
        if self._closed:
            raise KVError("KV store is closed")
        return self._clock.monotonic()

    def _live(self, key: str, now: float) -> _Entry | None:
        """The entry for `key` if it exists and has not expired; expired entries are dropped."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.deadline is not None and entry.deadline <= now:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        """Remove a present entry, keeping the anonymous count in step (every removal)."""
        if self._data.pop(key).anonymous:
            self._anonymous -= 1

    def _insert(self, key: str, value: str, ttl: float | None, now: float, anonymous: bool) -> None:
        """Store `key` (whose expired entry, if any, the caller already dropped via `_live`).

        `set` moves an existing key into this write's budget, so a key changing budget needs a
        place there just like a new key.
        """
        entry = self._data.get(key)
        if entry is None or entry.anonymous != anonymous:
            self._make_room(now, anonymous)
        self._put(key, value, ttl, now, anonymous)

    def _put(self, key: str, value: str, ttl: float | None, now: float, anonymous: bool) -> None:
        """Write the entry; a TTL gets a fresh seq and a heap item (older items go stale)."""
        old = self._data.get(key)
        if old is not None and old.anonymous:
            self._anonymous -= 1
        if anonymous:
            self._anonymous += 1
        if ttl is None:
            self._data[key] = _Entry(value, None, 0, anonymous)
            return
        seq = next(self._seq)
        deadline = now + ttl
        self._data[key] = _Entry(value, deadline, seq, anonymous)
        heapq.heappush(self._heap, (deadline, seq, key))
        if len(self._heap) > 2 * len(self._data) + _HEAP_SLACK:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [
            (entry.deadline, entry.seq, key)
            for key, entry in self._data.items()
            if entry.deadline is not None
        ]
        heapq.heapify(self._heap)

    def _full(self, anonymous: bool) -> bool:
        if anonymous:
            return self._anonymous >= self._anonymous_records
        return len(self._data) - self._anonymous >= self._max_entries

    def _make_room(self, now: float, anonymous: bool) -> None:
        """Ensure one more key fits the budget, by sweeping expired entries only.

        Raises KVFullError, having changed nothing observable, if the budget is still full.
        """
        if not self._full(anonymous):
            return
        self.sweep()
        if not self._full(anonymous):
            return
        self.refusals += 1
        which = "anonymous" if anonymous else "member"
        self._warn_full(now, which)
        raise KVFullError(
            f"in-process KV store: the {which} budget is full; the write was refused and "
            "nothing was evicted"
        )

    def _warn_full(self, now: float, which: str) -> None:
        last = self._last_full_warning
        if last is not None and now - last < _FULL_WARNING_INTERVAL:
            return
        self._last_full_warning = now
        log.warning(
            "in-process KV store: the %s budget is full (%d refused writes so far); new %s "
            "writes are refused until entries expire (%s)",
            which,
            self.refusals,
            which,
            "BINDIFY_KV_ANONYMOUS_RECORDS" if which == "anonymous" else "use Redis to hold more",
        )
