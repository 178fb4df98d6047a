"""`RedisKV`: the shared key-value store for scale-out (`BINDIFY_KV_URL=redis://…`).

Every key is stored as `namespace + key` (default namespace `bindify:`), so several instances
of different deployments, and test runs, can share one Redis server without colliding.

Atomicity comes from Redis itself, one command or one Lua script per operation:
`SET … NX PX` (set_if_absent), `GETDEL` (get_and_delete), a script doing EXISTS + INCR +
PEXPIRE (incr: the TTL is set only when the key is created), and a script doing GET + DEL
(delete_if_value). TTLs go over the wire in milliseconds (PX/PEXPIRE/PTTL), rounded up, so
sub-second TTLs work and no key ever lives shorter than asked.

Budgets (see `kv.base`): anonymous keys are listed in one sorted set per namespace,
`{namespace}_kv:anonymous` (a reserved key name), scored by their deadline in Redis's own
milliseconds (`TIME`). An anonymous write is one Lua script that first drops listed keys whose
deadline has passed, then refuses (nothing written) if the key needs a new place and the set
already holds `anonymous_records` keys. Deletes and member `set`s remove the key from the set in
the same transaction, and `expire` moves its deadline, so the count is live keys only. Member
keys are bounded by Redis's `maxmemory`, which must use `maxmemory-policy noeviction`:
`eviction_policy_warning()` says so at start-up (any other policy lets Redis drop claims and
OAuth state to make room, which is what the budgets exist to prevent).

Failures: every Redis or socket error becomes `KVError`. Messages name the operation and the
server's host and port (or socket path) but never the URL's credentials, nor keys or values
(keys can embed secrets). The client does not retry on its own: a retried `INCR`, `SET NX` or
`GETDEL` whose first attempt did reach Redis would report a wrong answer (double count, lost
lease, lost claim), whereas a `KVError` honestly says "unknown". Stale pooled connections are
still replaced transparently when they are checked out of the pool.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bindify_appliance.errors import ConfigError, KVError, KVFullError
from bindify_appliance.kv.base import (
    DEFAULT_ANONYMOUS_RECORDS,
    MEMBER,
    Budget,
    checked_budget,
    checked_ttl,
    checked_value,
    required_ttl,
)

__all__ = ["DEFAULT_NAMESPACE", "RedisKV", "eviction_policy_warning"]

DEFAULT_NAMESPACE = "bindify:"
ANONYMOUS_INDEX = "_kv:anonymous"  # reserved key (under the namespace) listing anonymous keys

# KEYS[1] = key, ARGV[1] = TTL in ms or "" for none. EXISTS is checked first so that the TTL is
# applied only to a key this call creates; an INCR error aborts the script before any write.
# The new value is returned as the stored string, not INCR's reply: Lua numbers are doubles and
# would round counters beyond 2**53.
_INCR_LUA = """
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('INCR', KEYS[1])
if created and ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('GET', KEYS[1])
"""

# KEYS[1] = key, KEYS[2] = anonymous index, ARGV[1] = expected value. Releases a lease only
# while we still own it.
_DELETE_IF_VALUE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('ZREM', KEYS[2], KEYS[1])
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# An anonymous write. KEYS[1] = key, KEYS[2] = index; ARGV = op ("set", "nx", "incr"), value,
# TTL in ms, capacity. Returns {"full"} (nothing written), {"kept"} (set_if_absent found the
# key) or {"ok", counter}. A key already listed keeps its place; a new one needs room.
_ANONYMOUS_WRITE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local op, px = ARGV[1], tonumber(ARGV[3])
local exists = redis.call('EXISTS', KEYS[1]) == 1
if op == 'nx' and exists then return {'kept'} end
if op == 'incr' and exists then
  redis.call('INCR', KEYS[1])
  return {'ok', redis.call('GET', KEYS[1])}
end
local listed = redis.call('ZSCORE', KEYS[2], KEYS[1])
if not listed and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'full'} end
if op == 'incr' then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], px)
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
end
redis.call('ZADD', KEYS[2], now + px, KEYS[1])
if op == 'incr' then return {'ok', redis.call('GET', KEYS[1])} end
return {'ok', ''}
"""

# KEYS[1] = key, KEYS[2] = index, ARGV[1] = TTL in ms. An anonymous key's listed deadline
# follows its new TTL, so the budget frees its place when the key really goes.
_EXPIRE_LUA = """
local renewed = redis.call('PEXPIRE', KEYS[1], ARGV[1])
if renewed == 1 and redis.call('ZSCORE', KEYS[2], KEYS[1]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), KEYS[1])
end
return renewed
"""

_ERROR_CODE_RE = re.compile(r"[A-Z][A-Z_]{1,31}")


class RedisKV:
    """Redis implementation of `KVStore` (see `bindify_appliance.kv.base`)."""

    def __init__(
        self,
        url: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        anonymous_records: int = DEFAULT_ANONYMOUS_RECORDS,
    ) -> None:
        if not isinstance(namespace, str):
            raise TypeError("namespace must be str")
        if anonymous_records < 1:
            raise ValueError("anonymous_records must be at least 1")
        self._namespace = namespace
        self._index = namespace + ANONYMOUS_INDEX
        self._anonymous_records = anonymous_records
        self._location = _safe_location(url)
        self._secrets = _url_secrets(url)
        self._closed = False
        try:
            # URL query options (e.g. ?socket_timeout=1) win over these keyword defaults.
            self._client: aioredis.Redis = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=connect_timeout,
                socket_timeout=command_timeout,
            )
        except (ValueError, TypeError, RedisError):
            # `from None`: the parser's own message may quote parts of the URL.
            raise ConfigError("BINDIFY_KV_URL is not a valid Redis URL") from None
        self._incr_script = self._client.register_script(_INCR_LUA)
        self._delete_if_value_script = self._client.register_script(_DELETE_IF_VALUE_LUA)
        self._anonymous_script = self._client.register_script(_ANONYMOUS_WRITE_LUA)
        self._expire_script = self._client.register_script(_EXPIRE_LUA)

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def location(self) -> str:
        """Where the server is (`host:port` or a socket path); safe to log."""
        return self._location

    # -- the KVStore protocol -------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        with self._errors("get"):
            value = await self._client.get(self._k(key))
        return _text(value)

    async def set(
        self, key: str, value: str, ttl: float | None = None, *, budget: Budget = MEMBER
    ) -> None:
        checked_value(value)
        seconds = checked_ttl(ttl)
        if checked_budget(budget, seconds):
            await self._anonymous_write("set", key, value, _ms(seconds or 0))
            return
        px = _px(seconds)
        with self._errors("set"):
            # A member write takes the key out of the anonymous budget (if it was there).
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._k(key), value, px=px)
                pipe.zrem(self._index, self._k(key))
                await pipe.execute()

    async def set_if_absent(
        self, key: str, value: str, ttl: float | None, *, budget: Budget = MEMBER
    ) -> bool:
        checked_value(value)
        seconds = checked_ttl(ttl)
        if checked_budget(budget, seconds):
            reply = await self._anonymous_write("nx", key, value, _ms(seconds or 0))
            return reply is not None
        with self._errors("set_if_absent"):
            # Stored only if absent, so never a key the anonymous budget still counts.
            stored = await self._client.set(self._k(key), value, px=_px(seconds), nx=True)
        return bool(stored)

    async def delete(self, key: str) -> bool:
        with self._errors("delete"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._k(key))
                pipe.zrem(self._index, self._k(key))
                removed, _ = await pipe.execute()
        return int(removed) > 0

    async def get_and_delete(self, key: str) -> str | None:
        with self._errors("get_and_delete"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.getdel(self._k(key))
                pipe.zrem(self._index, self._k(key))
                value, _ = await pipe.execute()
        return _text(value)

    async def incr(self, key: str, ttl: float | None = None, *, budget: Budget = MEMBER) -> int:
        seconds = checked_ttl(ttl)
        if checked_budget(budget, seconds):
            return int(await self._anonymous_write("incr", key, "", _ms(seconds or 0)) or 0)
        px = _px(seconds)
        with self._errors("incr"):
            value = await self._incr_script(
                keys=[self._k(key)], args=["" if px is None else str(px)]
            )
        return int(value)

    async def delete_if_value(self, key: str, value: str) -> bool:
        checked_value(value)
        with self._errors("delete_if_value"):
            removed = await self._delete_if_value_script(
                keys=[self._k(key), self._index], args=[value]
            )
        return int(removed) > 0

    async def expire(self, key: str, ttl: float) -> bool:
        px = _ms(required_ttl(ttl))
        with self._errors("expire"):
            renewed = await self._expire_script(keys=[self._k(key), self._index], args=[px])
        return int(renewed) > 0

    async def eviction_policy(self) -> str | None:
        """Redis's `maxmemory-policy`, or None when the server refuses `CONFIG GET` (managed
        services often do); raises KVError when the server cannot be reached."""
        with self._errors("config"):
            try:
                reply = await self._client.config_get("maxmemory-policy")
            except ResponseError:
                return None
        value = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
        return str(value) if value else None

    async def ttl(self, key: str) -> float | None:
        with self._errors("ttl"):
            ms: int = await self._client.pttl(self._k(key))
        # -2: no such key, -1: no expiry. Both are None by contract.
        return ms / 1000.0 if ms >= 0 else None

    async def ping(self) -> None:
        with self._errors("ping"):
            await self._client.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closing a pool whose server is gone must not fail shutdown.
        with suppress(RedisError, OSError):
            await self._client.aclose()

    # -- internals ------------------------------------------------------------------------------

    async def _anonymous_write(self, op: str, key: str, value: str, px: int) -> str | None:
        """Run the anonymous-write script; the stored value, None for "kept", or KVFullError."""
        name = {"set": "set", "nx": "set_if_absent", "incr": "incr"}[op]
        with self._errors(name):
            reply = await self._anonymous_script(
                keys=[self._k(key), self._index],
                args=[op, value, str(px), str(self._anonymous_records)],
            )
        status = _text(reply[0])
        if status == "full":
            raise KVFullError(
                f"KV {name} refused: the anonymous budget is full (redis at {self._location}); "
                "nothing was evicted"
            )
        if status == "kept":
            return None
        return _text(reply[1]) if len(reply) > 1 else None

    def _k(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError("KV keys must be str")
        return self._namespace + key

    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Refuse use after close and turn Redis/socket failures into safe KVErrors."""
        if self._closed:
            raise KVError("KV store is closed")
        try:
            yield
        except ResponseError as exc:
            raise KVError(self._refusal(op, exc)) from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            raise KVError(
                f"KV store unreachable (redis at {self._location}) during {op}: {detail}"
            ) from exc
        except RedisError as exc:
            raise KVError(
                f"KV {op} failed (redis at {self._location}): {type(exc).__name__}"
            ) from exc

    def _refusal(self, op: str, exc: ResponseError) -> str:
        """A message for an error reply; only the reply's code word, never its free text."""
        text = str(exc)
        if op == "incr" and "overflow" in text:
            return "KV incr refused: the counter would overflow"
        if op == "incr" and "not an integer" in text:
            return "KV incr refused: the stored value is not a 64-bit integer"
        # redis-py strips "ERR" but keeps other code words (WRONGTYPE, OOM, READONLY…).
        first = text.split(" ", 1)[0]
        reason = type(exc).__name__
        if _ERROR_CODE_RE.fullmatch(first):
            reason += " " + first
        return f"KV {op} refused by redis at {self._location} ({reason})"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


async def eviction_policy_warning(kv: object) -> str | None:
    """One line for start-up and `doctor` when a Redis KV may evict keys; None when fine.

    Only `noeviction` keeps Redis from dropping claims, OAuth state and limiter windows when
    its memory is full (it refuses the write instead, which the appliance reports).
    """
    if not isinstance(kv, RedisKV):
        return None
    try:
        policy = await kv.eviction_policy()
    except KVError:
        return None  # unreachable: readiness and the KV checks report that, not this one
    if policy is None:
        return (
            f"could not read Redis maxmemory-policy (redis at {kv.location}); make sure it is "
            "noeviction, or Redis may drop one-time records (claims, OAuth state) when full"
        )
    if policy == "noeviction":
        return None
    return (
        f"Redis maxmemory-policy is {policy}, not noeviction (redis at {kv.location}): when its "
        "memory is full Redis drops one-time records (claims, OAuth state, limiter windows); "
        "set maxmemory-policy noeviction"
    )


def _text(value: bytes | str | None) -> str | None:
    # The client decodes replies (decode_responses=True); the bytes branch only satisfies the
    # library's typing, which covers both modes.
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, rounded up so a key never lives shorter than asked."""
    return max(1, math.ceil(seconds * 1000))


def _px(seconds: float | None) -> int | None:
    return None if seconds is None else _ms(seconds)


def _safe_location(url: str) -> str:
    """`host:port` or the socket path from a Redis URL, without any credentials."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "?"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url_secrets(url: str) -> list[str]:
    """Every form of the URL's password (userinfo or `?password=`) worth scrubbing."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.add(parts.password)
        for value in parse_qs(parts.query).get("password", []):
            found.add(value)
    except ValueError:
        return []
    for secret in list(found):
        found.add(unquote(secret))
        found.add(quote(unquote(secret), safe=""))
    # Longest first, so a password containing another is scrubbed whole.
    return sorted((s for s in found if s), key=len, reverse=True)
