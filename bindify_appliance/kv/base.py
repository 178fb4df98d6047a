"""The key-value store contract: one async protocol with two implementations.

`MemoryKV` (in-process, the default) and `RedisKV` (shared, for scale-out) honour the same
semantics, proven by one contract test suite run against both. Callers depend on `KVStore` only.

Semantics every implementation keeps:
- Keys and values are `str`. Keys may hold secrets (`proxy:{secret}`), so no key and no value
  ever appears in a log line or an exception message.
- TTLs are seconds (`int` or `float`), finite, `> 0` and at most `MAX_TTL`; a bad TTL is a
  programming error and raises `ValueError` before the store is touched. Sub-second TTLs work.
- `set` without a TTL stores the key with no expiry, removing any TTL it had (like Redis `SET`).
- `incr` applies its TTL only when it creates the key; an existing key keeps its TTL, or its
  lack of one. The stored value must be the decimal form of a signed 64-bit integer (as Redis
  writes it: no sign `+`, no spaces, no leading zeros); anything else raises `KVError` and leaves
  the value untouched.
- `ttl` answers `None` both when the key does not exist and when it has no expiry; callers that
  must tell the two apart use `get`.
- Every single operation is atomic: `set_if_absent`, `get_and_delete`, `incr` and
  `delete_if_value` are safe under any number of concurrent callers, on one instance or many.
- Failures of the store itself (unreachable, refused, full, closed) raise `KVError`.

Budgets (DESIGN §9, "anonymous requests cannot fill the KV"): every live key counts against one
of two budgets, named by the `budget` argument of the writes that can create a key (`set`,
`set_if_absent`, `incr`):
- `MEMBER` (the default): writes made for a signed-in user, a credential holder or the
  appliance's own work (claims, connect state, leases, proxy sessions);
- `ANONYMOUS`: writes made for a request nobody is signed in for (SSO sign-in state, per-IP
  limiter windows, unknown-address lockout counters). They must carry a TTL (`ValueError`
  otherwise), and at most `anonymous_records` of them live at once (`open_kv`'s argument).

A key joins the budget of the write that creates it; `set` (a new value and TTL) moves an
existing key to its budget; `incr` of an existing key, a `set_if_absent` that stores nothing and
`expire` keep the key where it is. An anonymous write that needs a new place in a full anonymous
budget raises `KVFullError` and changes nothing (callers answer 429). **Nothing is ever evicted
to make room**: a live key goes only by its TTL or a delete, so a flood can never drop a claim,
an OAuth/OIDC state, a legacy session or a limiter window. The member budget is bounded by the
in-process store's size (`KVFullError` when full) or by Redis's own memory limit (which must use
`maxmemory-policy noeviction`; start-up warns otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Final, Literal, Protocol, runtime_checkable

__all__ = [
    "ANONYMOUS",
    "DEFAULT_ANONYMOUS_RECORDS",
    "MAX_TTL",
    "MEMBER",
    "Budget",
    "KVStore",
    "ScannableKV",
    "checked_budget",
    "checked_ttl",
    "checked_value",
    "counter_in_range",
    "parse_counter",
    "required_ttl",
]

# A century: far beyond any lease or cache lifetime, and small enough that every backend can
# represent the deadline in milliseconds without overflow, so bad arithmetic fails loudly here.
MAX_TTL = 100 * 365 * 24 * 3600.0

Budget = Literal["member", "anonymous"]
MEMBER: Final = "member"
ANONYMOUS: Final = "anonymous"

# Live anonymous records allowed by default (`BINDIFY_KV_ANONYMOUS_RECORDS`): a few MB of
# sign-in state and limiter windows, far above what per-IP limits let honest traffic hold.
DEFAULT_ANONYMOUS_RECORDS: Final = 20_000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# The only spellings Redis INCR accepts: "0", or an optional minus and digits without a leading
# zero. Python's int() is far more lenient (" 7", "+7", "0_7", "07", non-ASCII digits), so the
# in-process store checks the Redis form explicitly to keep the two backends identical.
_COUNTER_RE = re.compile(r"0|-?[1-9][0-9]{0,18}")


class KVStore(Protocol):
    """An async TTL key-value store. See the module docstring for the shared semantics."""

    async def get(self, key: str) -> str | None:
        """The value stored under `key`, or `None` if it is absent or expired."""
        ...

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, budget: Budget = MEMBER
    ) -> None:
        """Store `value`, replacing any previous value and TTL; no TTL means no expiry.

        Raises KVFullError (nothing changed) when `budget` has no room for the key.
        """
        ...

    async def set_if_absent(
        self, key: str, value: str, ttl: float | None, *, budget: Budget = MEMBER
    ) -> bool:
        """Store `value` only if `key` is absent (locks, leases); True if this call stored it.

        Raises KVFullError (nothing changed) when the key is absent and `budget` is full.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed."""
        ...

    async def get_and_delete(self, key: str) -> str | None:
        """Atomically read and remove `key` (one-shot claims, OAuth state); `None` if absent."""
        ...

    async def incr(self, key: str, ttl: float | None = None, *, budget: Budget = MEMBER) -> int:
        """Atomically add 1 and return the new value; a missing key starts at 0.

        `ttl` and `budget` apply only when this call creates the key (KVFullError, nothing
        changed, when that budget is full). A stored value that is not a 64-bit decimal
        integer, or an overflow, raises `KVError` and changes nothing.
        """
        ...

    async def delete_if_value(self, key: str, value: str) -> bool:
        """Atomically remove `key` only if it still holds `value` (release a lease we own)."""
        ...

    async def expire(self, key: str, ttl: float) -> bool:
        """Set a new TTL on an existing key (renew a lease); False if the key is absent."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; `None` if the key is absent *or* has no expiry."""
        ...

    async def ping(self) -> None:
        """Return if the store answers; raise `KVError` otherwise (used by /readyz)."""
        ...

    async def close(self) -> None:
        """Release resources; idempotent. Every operation after close raises `KVError`."""
        ...


@runtime_checkable
class ScannableKV(Protocol):
    """A store whose live entries can be read from inside the process (`MemoryKV`).

    Kept apart from `KVStore` on purpose: nothing but the canary's scan endpoint
    (`api/ops.py`) walks the store, which reports whether a marker occurs, never a key or value.
    Redis is scanned by the canary itself, from outside.
    """

    def live_items(self) -> Iterator[tuple[str, str]]:
        """Every live (unexpired) key and value; reads only, removes nothing."""
        ...


def checked_ttl(ttl: float | None) -> float | None:
    """Validate a TTL argument and return it as a float (or `None`)."""
    if ttl is None:
        return None
    # bool is an int subclass; `ttl=True` is always a bug, never "one second".
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError("KV ttl must be a number of seconds or None")
    seconds = float(ttl)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TTL:
        raise ValueError(f"KV ttl must be > 0 and <= {MAX_TTL:.0f} seconds")
    return seconds


def checked_budget(budget: Budget, ttl: float | None) -> bool:
    """Validate a write's budget (and that an anonymous write expires); True if anonymous."""
    if budget == ANONYMOUS:
        if ttl is None:
            # A record without expiry would hold its place in the budget forever.
            raise ValueError("anonymous KV writes need a TTL")
        return True
    if budget != MEMBER:
        raise ValueError("KV budget must be 'member' or 'anonymous'")
    return False


def required_ttl(ttl: float) -> float:
    """Validate a TTL that may not be `None` (`expire`)."""
    seconds = checked_ttl(ttl)
    if seconds is None:
        raise TypeError("KV ttl is required here")
    return seconds


def checked_value(value: str) -> str:
    """Refuse non-`str` values, which Redis would silently stringify and memory would keep."""
    if not isinstance(value, str):
        raise TypeError("KV values must be str")
    return value


def parse_counter(value: str) -> int | None:
    """The integer a stored counter holds, or `None` if Redis INCR would refuse it."""
    if _COUNTER_RE.fullmatch(value) is None:
        return None
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        return None
    return number


def counter_in_range(number: int) -> bool:
    """True if `number` fits a signed 64-bit integer, the range Redis counters live in."""
    return _INT64_MIN <= number <= _INT64_MAX
