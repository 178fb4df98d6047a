"""Session ids bound to the connection that opened them, in the KV store.

Streamable HTTP: an upstream's `Mcp-Session-Id` is a bearer capability at the upstream. The proxy
records every session id an upstream hands out against the connection it was handed to; a request
that presents a session id not recorded for *its* connection gets 404 without reaching the
upstream (the transport's "session gone" answer, so clients re-initialize). The record's key is a
hash of (connection id, session id): a session id is never stored in clear, lookups are one KV
read, and an upstream that reuses one session id for several connections still works. Records
live `session_ttl` (24 h) and are renewed on use — at most once per `renew_every` per instance,
to keep the hot path at one read.

Legacy HTTP+SSE: the proxy mints its own session ids for the `endpoint` event it hands out and
binds each to (connection, absolute upstream message URL). The binding lives `legacy_ttl` and is
renewed while the stream is open; it is deleted when the stream ends, so a message URL stops
working with its stream.

Invariants: session ids and upstream message URLs (which carry the upstream's session id) are
never logged; comparisons of connection ids use `hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import OrderedDict

from bindify_appliance.clock import Clock
from bindify_appliance.kv.base import KVStore

__all__ = ["LegacySession", "LegacySessions", "SessionBindings"]

_SESSION_PREFIX = "mcp:sess:"
_LEGACY_PREFIX = "mcp:sse:"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


class SessionBindings:
    """Upstream `Mcp-Session-Id`s recorded against connections."""

    def __init__(
        self,
        kv: KVStore,
        clock: Clock,
        *,
        session_ttl: float = 24 * 3600,
        renew_every: float = 600,
        memo_size: int = 10_000,
    ) -> None:
        self._kv = kv
        self._clock = clock
        self._ttl = session_ttl
        self._renew_every = renew_every
        self._memo_size = memo_size
        # key → monotonic time of the last renewal seen by this instance
        self._memo: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def _key(connection_id: str, session_id: str) -> str:
        return _SESSION_PREFIX + _digest(connection_id, session_id)

    def _remember(self, key: str) -> None:
        self._memo[key] = self._clock.monotonic()
        self._memo.move_to_end(key)
        while len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)

    async def bind(self, connection_id: str, session_id: str) -> None:
        """Record that the upstream handed `session_id` to `connection_id`."""
        key = self._key(connection_id, session_id)
        await self._kv.set(key, "1", self._ttl)
        self._remember(key)

    async def owns(self, connection_id: str, session_id: str) -> bool:
        """True if `session_id` was handed to `connection_id` (and has not expired)."""
        key = self._key(connection_id, session_id)
        seen = self._memo.get(key)
        now = self._clock.monotonic()
        if seen is not None and now - seen < self._renew_every:
            return True
        # Not seen recently here: one KV round trip answers and renews.
        if not await self._kv.expire(key, self._ttl):
            self._memo.pop(key, None)
            return False
        self._remember(key)
        return True

    async def forget(self, connection_id: str, session_id: str) -> None:
        """The session ended (DELETE answered 2xx)."""
        key = self._key(connection_id, session_id)
        self._memo.pop(key, None)
        await self._kv.delete(key)


class LegacySession:
    """A minted legacy session: its id and where its messages go upstream."""

    __slots__ = ("message_url", "session_id")

    def __init__(self, session_id: str, message_url: str) -> None:
        self.session_id = session_id
        self.message_url = message_url

    def __repr__(self) -> str:  # never show the capability or the upstream URL
        return "LegacySession(<hidden>)"


class LegacySessions:
    """Proxy-minted session ids of legacy HTTP+SSE streams."""

    def __init__(self, kv: KVStore, *, ttl: float = 300) -> None:
        self._kv = kv
        self.ttl = ttl

    @staticmethod
    def _key(session_id: str) -> str:
        return _LEGACY_PREFIX + _digest(session_id)

    async def open(self, connection_id: str, message_url: str) -> LegacySession:
        session_id = secrets.token_urlsafe(24)
        value = json.dumps({"c": connection_id, "u": message_url}, separators=(",", ":"))
        await self._kv.set(self._key(session_id), value, self.ttl)
        return LegacySession(session_id, message_url)

    async def lookup(self, connection_id: str, session_id: str) -> str | None:
        """The upstream message URL, if `session_id` is open and belongs to `connection_id`."""
        if not session_id or len(session_id) > 200:
            return None
        raw = await self._kv.get(self._key(session_id))
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            owner = str(record["c"])
            url = str(record["u"])
        except (ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(owner.encode(), connection_id.encode()):
            return None
        return url

    async def renew(self, session: LegacySession) -> bool:
        return await self._kv.expire(self._key(session.session_id), self.ttl)

    async def close(self, session: LegacySession) -> None:
        await self._kv.delete(self._key(session.session_id))
