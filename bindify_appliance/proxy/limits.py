"""Limits on the proxy: per-connection requests per hour, per-IP unknown-credential hits, and the
client address they are keyed on.

- `ConnectionRateLimiter`: `BINDIFY_RATE_LIMIT_PER_HOUR` requests per connection per clock hour
  (0 = off), one atomic KV `incr` per request on an hour bucket whose TTL ends with the hour.
  Over the limit the caller answers -31029 with `retry_after` = seconds to the next hour.
- `UnknownCredentialLimiter`: counts "unknown credential" refusals per client IP in a fixed
  window on the KV store (shared by every instance). Once an IP is over the threshold this
  instance refuses it with 429 before any credential work, from an in-process list (no KV read on
  the hot path); other instances learn it on that IP's next miss there.
- `StreamSlots`: at most `BINDIFY_MAX_STREAMS_PER_CONNECTION` upstream exchanges (requests and
  the streams they open) per connection at once in this process; one more is refused
  (-31029 with `retry_after`, or 503 without an id) before the upstream is contacted.
- `client_ip`, `parse_networks`, `IPNetwork`: re-exported from `bindify_appliance.clientaddr`
  (the peer address, or — only when the peer is a trusted proxy, `BINDIFY_TRUSTED_PROXIES` — the
  forwarded client address), shared with the web pages.

Invariant: keys hold an IP address or a connection id, never a credential.
"""

from __future__ import annotations

import math

from bindify_appliance.clientaddr import IPNetwork, client_ip, parse_networks
from bindify_appliance.clock import Clock
from bindify_appliance.kv.base import ANONYMOUS, KVStore

__all__ = [
    "ConnectionRateLimiter",
    "IPNetwork",
    "StreamSlots",
    "UnknownCredentialLimiter",
    "client_ip",
    "parse_networks",
]


class ConnectionRateLimiter:
    """Per-connection requests per clock hour."""

    def __init__(self, kv: KVStore, clock: Clock, per_hour: int) -> None:
        self._kv = kv
        self._clock = clock
        self.per_hour = per_hour

    @property
    def enabled(self) -> bool:
        return self.per_hour > 0

    async def hit(self, connection_id: str) -> int | None:
        """Count one request; None if allowed, else seconds until the next hour."""
        if self.per_hour <= 0:
            return None
        now = self._clock.time()
        bucket = int(now // 3600)
        remaining = (bucket + 1) * 3600 - now
        count = await self._kv.incr(f"rl:conn:{connection_id}:{bucket}", remaining + 60)
        if count > self.per_hour:
            return max(1, math.ceil(remaining))
        return None


class UnknownCredentialLimiter:
    """Per-IP limit on requests that name an unknown credential (enumeration brake)."""

    def __init__(
        self,
        kv: KVStore,
        clock: Clock,
        *,
        limit: int = 30,
        window: float = 600,
        max_tracked: int = 50_000,
    ) -> None:
        self._kv = kv
        self._clock = clock
        self.limit = limit
        self.window = window
        self._max_tracked = max_tracked
        self._blocked: dict[str, float] = {}  # ip → wall-clock end of its block

    def retry_after(self, ip: str) -> int | None:
        """Seconds until `ip` may try again, or None if it is not blocked here."""
        until = self._blocked.get(ip)
        if until is None:
            return None
        left = until - self._clock.time()
        if left <= 0:
            del self._blocked[ip]
            return None
        return max(1, math.ceil(left))

    async def record_miss(self, ip: str) -> None:
        """Count one unknown-credential refusal for `ip`; block it once over the limit."""
        if self.limit <= 0:
            return
        now = self._clock.time()
        bucket = int(now // self.window)
        window_end = (bucket + 1) * self.window
        count = await self._kv.incr(
            f"rl:miss:{ip}:{bucket}", window_end - now + 1, budget=ANONYMOUS
        )
        if count >= self.limit:
            if len(self._blocked) >= self._max_tracked:
                self._prune(now)
            self._blocked[ip] = window_end

    def _prune(self, now: float) -> None:
        for ip in [ip for ip, until in self._blocked.items() if until <= now]:
            del self._blocked[ip]
        while len(self._blocked) >= self._max_tracked:
            self._blocked.pop(next(iter(self._blocked)))


class StreamSlots:
    """Per-connection cap on concurrent upstream exchanges in this process (0 = no cap).

    Invariant: every `take` that returned True is matched by exactly one `give_back`.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def take(self, connection_id: str) -> bool:
        """Claim a slot for `connection_id`; False when its cap is reached."""
        if self.cap <= 0:
            return True
        held = self._open.get(connection_id, 0)
        if held >= self.cap:
            return False
        self._open[connection_id] = held + 1
        return True

    def give_back(self, connection_id: str) -> None:
        if self.cap <= 0:
            return
        held = self._open.get(connection_id, 0) - 1
        if held > 0:
            self._open[connection_id] = held
        else:
            self._open.pop(connection_id, None)
