"""The resolver's memo: secret1 hash → the connection row read for it, for at most one second.

`Memo` is bounded (oldest entries dropped first) and each `Entry` remembers the service
definition that was current before its row was read, so a changed definition is a miss
(`proxy/resolver.py` explains why). A managed connection's opened credential (`Opened`) lives on
the entry of the row it came from, so it never outlives that entry and goes with it.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.store.connections import ConnectionAuth

__all__ = ["Entry", "Memo", "Opened"]


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
