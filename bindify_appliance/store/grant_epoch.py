"""A process-wide counter of "some OAuth grant or token ended", for the proxy's token memo.

Every unit of work that deletes grants or access tokens (revocation, refresh-token reuse,
connection rotate or delete, member disable or delete) calls `grants_ended()` once its
transaction has committed. The proxy's `BearerResolver` serves a memoised token row only while
the counter still has the value it had when the row was read, so on this process an ended grant
is refused from the next request on; other processes and instances see it within the memo's TTL.

Invariants: the counter only grows; bumping it too often costs only memo misses.
"""

from __future__ import annotations

import threading

__all__ = ["grants_ended", "grants_epoch"]

_lock = threading.Lock()
_epoch = 0


def grants_ended() -> None:
    """Note that grants or tokens ended (call after the deleting transaction committed)."""
    global _epoch
    with _lock:  # units of work run on several pool threads
        _epoch += 1


def grants_epoch() -> int:
    return _epoch
