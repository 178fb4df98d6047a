"""The resolver's memo: secret1 hash → the connection row read for it, for at most one second.

`Memo` is bounded (oldest entries dropped first) and each `Entry` remembers the service
definition that was current before its row was read, so a changed definition is a miss
(`proxy/resolver.py` explains why). A managed connection's opened credential (`Opened`) lives on
the entry of the row it came from, so it never outlives that entry and goes with it.

`RowLookups` reads rows through the memo: one query per hash however many requests miss at
once, each query in a task of its own (a caller that leaves never fails the others), and a
lookup that was running when `forget()` ran is detached and its row not memoised.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from bindify_appliance.context import AppContext
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.store import connections as rows
from bindify_appliance.store.connections import ConnectionAuth

__all__ = ["Entry", "Memo", "Opened", "RowLookups"]


class Opened:
    """A managed connection's credential as opened for one service definition.

    Kept on the memo entry of the row it was opened from, so it lives no longer than that entry
    (≤ the memo TTL) and is dropped with it by `forget()`; valid only for the very row and
    service objects it was built from (a re-read row or a reloaded registry is a miss).
    """

    __slots__ = ("payload", "service", "target")

    def __init__(
        self, service: ServiceDefinition, payload: dict[str, Any], target: ProxyTarget | None
    ) -> None:
        self.service = service
        self.payload = payload
        self.target = target


class Entry:
    __slots__ = ("conn", "expires", "opened", "service")

    def __init__(
        self, expires: float, conn: ConnectionAuth | None, service: ServiceDefinition
    ) -> None:
        self.expires = expires
        self.conn = conn
        self.service = service  # the definition current before `conn` was read
        self.opened: Opened | None = None


class Memo:
    """secret1 hash → entry (expiry, row or None, opened credential); bounded, oldest first."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, Entry] = {}

    def get(self, key: str, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry

    def put(
        self, key: str, value: ConnectionAuth | None, service: ServiceDefinition, now: float
    ) -> None:
        if self.ttl <= 0:
            return
        if key not in self._entries and len(self._entries) >= self.size:
            self._evict(now)
        self._entries[key] = Entry(now + self.ttl, value, service)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def _evict(self, now: float) -> None:
        expired = [k for k, entry in self._entries.items() if entry.expires <= now]
        for k in expired:
            del self._entries[k]
        # Still full: drop the oldest tenth (dicts keep insertion order).
        excess = len(self._entries) - self.size + max(1, self.size // 10)
        for k in list(self._entries)[: max(0, excess)]:
            del self._entries[k]

    def forget_connection(self, connection_id: str) -> None:
        stale = [
            k
            for k, entry in self._entries.items()
            if entry.conn is not None and entry.conn.id == connection_id
        ]
        for k in stale:
            del self._entries[k]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class RowLookups:
    """Coalesced, memoised reads of connection rows by secret1 hash."""

    def __init__(self, ctx: AppContext, memo: Memo) -> None:
        self._ctx = ctx
        self.memo = memo
        # secret1 hash → (the lookup under way, the service definition it was started with)
        self._inflight: dict[
            str, tuple[asyncio.Task[ConnectionAuth | None], ServiceDefinition]
        ] = {}
        self._epoch = 0

    def hit(self, lookup_hash: str, service: ServiceDefinition) -> Entry | None:
        """The memo entry for a secret1 hash if it is live and was read after `service` was
        current; else None (then `lookup` reads the row). Never waits, never allocates."""
        entry = self.memo.get(lookup_hash, self._ctx.clock.monotonic())
        if entry is not None and entry.service is service:
            return entry
        return None

    async def lookup(
        self, lookup_hash: str, service: ServiceDefinition
    ) -> tuple[ConnectionAuth | None, Entry | None]:
        """The row for a secret1 hash, read after `service` was current, and its memo entry
        (None when it was not memoised)."""
        return await self._lookup(lookup_hash, service, rows.get_auth_by_secret1_hash)

    async def lookup_id(
        self, connection_id: str, service: ServiceDefinition
    ) -> tuple[ConnectionAuth | None, Entry | None]:
        """The same for a connection named by id (an OAuth grant), in the same memo (keys
        `id:…` never collide with hex hashes) and dropped by the same `forget`."""
        return await self._lookup("id:" + connection_id, service, rows.get_auth_by_id)

    async def _lookup(
        self,
        lookup_hash: str,
        service: ServiceDefinition,
        query: Callable[[str], ConnectionAuth | None],
    ) -> tuple[ConnectionAuth | None, Entry | None]:
        arg = lookup_hash.removeprefix("id:")
        now = self._ctx.clock.monotonic()
        entry = self.memo.get(lookup_hash, now)
        if entry is not None:
            if entry.service is service:
                return entry.conn, entry
            self.memo.drop(lookup_hash)  # read before the definition changed: read it again
        inflight = self._inflight.get(lookup_hash)
        if inflight is not None and inflight[1] is service:
            task = inflight[0]
        else:
            # The query runs in a task of its own, so a caller that goes away (a cancelled
            # request) never fails the others waiting for the same row.
            task = asyncio.ensure_future(self._fetch(lookup_hash, arg, query, service, now))
            self._inflight[lookup_hash] = (task, service)
            task.add_done_callback(functools.partial(self._fetched, lookup_hash))
        conn = await asyncio.shield(task)
        entry = self.memo.get(lookup_hash, self._ctx.clock.monotonic())
        return conn, entry if entry is not None and entry.conn is conn else None

    async def _fetch(
        self,
        lookup_hash: str,
        arg: str,
        query: Callable[[str], ConnectionAuth | None],
        service: ServiceDefinition,
        started: float,
    ) -> ConnectionAuth | None:
        epoch = self._epoch
        value = await self._ctx.store.run(query, arg)
        # Stamped with the time the lookup started, so the entry never outlives the TTL; and
        # not kept at all when `forget()` ran meanwhile (the row may predate that change).
        if epoch == self._epoch:
            self.memo.put(lookup_hash, value, service, started)
        return value

    def _fetched(self, lookup_hash: str, task: asyncio.Task[ConnectionAuth | None]) -> None:
        inflight = self._inflight.get(lookup_hash)
        if inflight is not None and inflight[0] is task:
            del self._inflight[lookup_hash]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    def forget(self, connection_id: str | None) -> None:
        """Drop the memo entries of a connection (None: every entry); detach running lookups."""
        self._epoch += 1
        self._inflight.clear()
        if connection_id is None:
            self.memo.clear()
        else:
            self.memo.forget_connection(connection_id)
