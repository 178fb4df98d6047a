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
"""

from __future__ import annotations

import math
import re
from typing import Protocol

__all__ = [
    "MAX_TTL",
    "KVStore",
    "checked_ttl",
    "checked_value",
    "counter_in_range",
    "parse_counter",
    "required_ttl",
]

# A century: far beyond any lease or cache lifetime, and small enough that every backend can
# represent the deadline in milliseconds without overflow, so bad arithmetic fails loudly here.
MAX_TTL = 100 * 365 * 24 * 3600.0

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

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Store `value`, replacing any previous value and TTL; no TTL means no expiry."""
        ...

    async def set_if_absent(self, key: str, value: str, ttl: float | None) -> bool:
        """Store `value` only if `key` is absent (locks, leases); True if this call stored it."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed."""
        ...

    async def get_and_delete(self, key: str) -> str | None:
        """Atomically read and remove `key` (one-shot claims, OAuth state); `None` if absent."""
        ...

    async def incr(self, key: str, ttl: float | None = None) -> int:
        """Atomically add 1 and return the new value; a missing key starts at 0.

        `ttl` is applied only when this call creates the key. A stored value that is not a
        64-bit decimal integer, or an overflow, raises `KVError` and changes nothing.
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
