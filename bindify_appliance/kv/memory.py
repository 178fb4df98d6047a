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

Size bound (`max_entries`): inserting a new key into a full store first sweeps expired entries,
then evicts the entry whose TTL ends soonest. Keys without a TTL (records, not cache) are never
evicted: if only they remain, the write is refused with `KVFullError` and nothing changes.
"""

from __future__ import annotations

import asyncio
import heapq
import hmac
import itertools
import logging
from typing import NamedTuple

from bindify_appliance.clock import Clock, SystemClock
from bindify_appliance.errors import KVError, KVFullError
from bindify_appliance.kv.base import (
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

# Evictions mean the store is undersized; say so, but not once per write.
_EVICTION_WARNING_INTERVAL = 60.0


class _Entry(NamedTuple):
    value: str
    deadline: float | None  # monotonic seconds; None = no expiry
    seq: int  # identifies the TTL assignment; 0 when there is no TTL


class MemoryKV:
    """In-process implementation of `KVStore` (see `bindify_appliance.kv.base`)."""

    def __init__(self, clock: Clock | None = None, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_entries = max_entries
        self._data: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._last_eviction_warning: float | None = None
        self.evictions = 0
        """Entries evicted (before expiry) to make room; non-zero means the store is undersized."""

    def __len__(self) -> int:
        """Entries held, including expired ones not yet swept."""
        return len(self._data)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    # -- the KVStore protocol -------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        entry = self._live(key, self._now())
        return None if entry is None else entry.value

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        checked_value(value)
        seconds = checked_ttl(ttl)
        now = self._now()
        self._live(key, now)
        self._insert(key, value, seconds, now)

    async def set_if_absent(self, key: str, value: str, ttl: float | None) -> bool:
        checked_value(value)
        seconds = checked_ttl(ttl)
        now = self._now()
        if self._live(key, now) is not None:
            return False
        self._insert(key, value, seconds, now)
        return True

    async def delete(self, key: str) -> bool:
        if self._live(key, self._now()) is None:
            return False
        del self._data[key]
        return True

    async def get_and_delete(self, key: str) -> str | None:
        entry = self._live(key, self._now())
        if entry is None:
            return None
        del self._data[key]
        return entry.value

    async def incr(self, key: str, ttl: float | None = None) -> int:
        seconds = checked_ttl(ttl)
        now = self._now()
        entry = self._live(key, now)
        if entry is None:
            self._insert(key, "1", seconds, now)
            return 1
        number = parse_counter(entry.value)
        if number is None:
            raise KVError("KV incr refused: the stored value is not a 64-bit integer")
        if not counter_in_range(number + 1):
            raise KVError("KV incr refused: the counter would overflow")
        # The value changes, the TTL assignment (deadline and seq) stays: INCR keeps the TTL.
        self._data[key] = entry._replace(value=str(number + 1))
        return number + 1

    async def delete_if_value(self, key: str, value: str) -> bool:
        checked_value(value)
        entry = self._live(key, self._now())
        # Lease tokens are secrets: compare in constant time. Encode first because
        # compare_digest only accepts ASCII str.
        if entry is None or not hmac.compare_digest(
            entry.value.encode("utf-8"), value.encode("utf-8")
        ):
            return False
        del self._data[key]
        return True

    async def expire(self, key: str, ttl: float) -> bool:
        seconds = required_ttl(ttl)
        now = self._now()
        entry = self._live(key, now)
        if entry is None:
            return False
        self._put(key, entry.value, seconds, now)
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
        self._heap.clear()

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
                del data[key]
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
            del self._data[key]
            return None
        return entry

    def _insert(self, key: str, value: str, ttl: float | None, now: float) -> None:
        """Store `key` (whose expired entry, if any, the caller already dropped via `_live`)."""
        if key not in self._data:
            self._make_room(now)
        self._put(key, value, ttl, now)

    def _put(self, key: str, value: str, ttl: float | None, now: float) -> None:
        """Write the entry; a TTL gets a fresh seq and a heap item (older items go stale)."""
        if ttl is None:
            self._data[key] = _Entry(value, None, 0)
            return
        seq = next(self._seq)
        deadline = now + ttl
        self._data[key] = _Entry(value, deadline, seq)
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

    def _make_room(self, now: float) -> None:
        """Ensure one more key fits: sweep, then evict the soonest-expiring TTL'd entry.

        Raises KVFullError, having changed nothing observable, if only TTL-less keys remain.
        """
        if len(self._data) < self._max_entries:
            return
        self.sweep()
        while len(self._data) >= self._max_entries:
            victim = self._soonest_expiring()
            if victim is None:
                raise KVFullError(
                    f"in-process KV store is full ({self._max_entries} entries, none with a TTL "
                    "to evict); raise the size bound or use Redis"
                )
            del self._data[victim]
            self.evictions += 1
            self._warn_eviction(now)

    def _soonest_expiring(self) -> str | None:
        """Pop heap items until one matches a live entry; return its key (or None)."""
        while self._heap:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._data.get(key)
            if entry is not None and entry.seq == seq:
                return key
        return None

    def _warn_eviction(self, now: float) -> None:
        last = self._last_eviction_warning
        if last is not None and now - last < _EVICTION_WARNING_INTERVAL:
            return
        self._last_eviction_warning = now
        log.warning(
            "in-process KV store is full (%d entries): evicted entries before their TTL "
            "(%d so far); raise the size bound or use Redis",
            self._max_entries,
            self.evictions,
        )
