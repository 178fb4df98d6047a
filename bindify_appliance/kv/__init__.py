"""The key-value store: `KVStore` protocol, its two implementations, and `open_kv`.

`open_kv(BINDIFY_KV_URL)` picks the implementation from the URL scheme:
`memory://` → `MemoryKV` (in-process, the default), `redis://`, `rediss://`, `unix://` →
`RedisKV` (shared between instances). Any other value is a `ConfigError` that names
`BINDIFY_KV_URL` and never repeats the URL, which may carry a password.

`RedisKV` (and with it redis-py, ~140 ms of imports) loads only when first used, so the default
in-process deployment and CLI commands never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bindify_appliance.clock import Clock
from bindify_appliance.errors import ConfigError
from bindify_appliance.kv.base import (
    ANONYMOUS,
    DEFAULT_ANONYMOUS_RECORDS,
    MEMBER,
    Budget,
    KVStore,
)
from bindify_appliance.kv.memory import MemoryKV

if TYPE_CHECKING:
    from bindify_appliance.kv.redis import RedisKV

__all__ = ["ANONYMOUS", "MEMBER", "Budget", "KVStore", "MemoryKV", "RedisKV", "open_kv"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SUPPORTED = "memory://, redis://, rediss:// or unix://"


def open_kv(
    url: str, clock: Clock | None = None, anonymous_records: int = DEFAULT_ANONYMOUS_RECORDS
) -> KVStore:
    """The store named by `url`. Connects lazily: call `ping()` to check a Redis server.

    `clock` drives TTLs of the in-process store; Redis keeps time itself and ignores it.
    `anonymous_records` is the anonymous budget (`BINDIFY_KV_ANONYMOUS_RECORDS`, see `kv.base`).
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigError(f"BINDIFY_KV_URL is not a valid URL; use {_SUPPORTED}") from None
    if parts.scheme == "memory":
        if parts.netloc or parts.path or parts.query or parts.fragment:
            raise ConfigError("BINDIFY_KV_URL: memory:// takes no host, path or options")
        return MemoryKV(clock=clock, anonymous_records=anonymous_records)
    if parts.scheme in _REDIS_SCHEMES:
        from bindify_appliance.kv.redis import RedisKV

        return RedisKV(url.strip(), anonymous_records=anonymous_records)
    # The "scheme" of a malformed value can be a user name ("user:pass@host"): don't echo it.
    raise ConfigError(f"BINDIFY_KV_URL has an unsupported scheme; use {_SUPPORTED}")


def __getattr__(name: str) -> Any:
    # PEP 562 lazy re-export: `from bindify_appliance.kv import RedisKV` imports redis-py then.
    if name == "RedisKV":
        from bindify_appliance.kv.redis import RedisKV

        return RedisKV
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
