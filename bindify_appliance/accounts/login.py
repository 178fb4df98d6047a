"""Password sign-in: per-account lockout with backoff, and the per-IP attempt limiter.

Lockout (per account): the first `LOCK_THRESHOLD - 1` consecutive failures cost nothing; the
next locks the account for 1 minute, and every further failure after a lock doubles it, up to
1 hour. While locked, the password is not even checked. A success (or `admin reset-password`)
clears the count. Unknown addresses get the same treatment from counters in the KV store, so a
lockout reveals nothing about which accounts exist.

Per-IP limiter: `/login` (POST), `/setup`, `/invite`, `/login/oidc` and its callback (one
shared "oidc" window: a sign-in is one start and one callback) count attempts per client address
(IPv6 per /64) in a fixed window with one atomic KV `incr`, shared by every instance. Over the
limit the caller answers 429 with `Retry-After`.

KV budgets (DESIGN §9): limiter windows and unknown-address lockout counters are written for
requests nobody is signed in for, so they go to the anonymous budget (`kv.base`). When it is
full, a window that cannot be created counts as over the limit (`FULL_RETRY_AFTER`): failing
open would hand a flooder unlimited password guesses. `authenticate_password` lets the
`KVFullError` of a lockout counter through for the caller to answer 429 the same way.

Invariant: KV keys hold a scope, an address and a hash of an e-mail — never a password.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bindify_appliance.accounts.passwords import verify_password_async
from bindify_appliance.accounts.tokens import hash_token
from bindify_appliance.clientaddr import ip_bucket
from bindify_appliance.clock import Clock
from bindify_appliance.errors import KVFullError
from bindify_appliance.kv.base import ANONYMOUS, Budget, KVStore
from bindify_appliance.store import Store
from bindify_appliance.store import accounts as accounts_store

__all__ = [
    "FULL_RETRY_AFTER",
    "IP_LIMITS",
    "LOCK_THRESHOLD",
    "IpLimiter",
    "LoginOutcome",
    "authenticate_password",
    "lock_for",
]

LOCK_THRESHOLD: Final = 5
LOCK_BASE: Final = timedelta(minutes=1)
LOCK_MAX: Final = timedelta(hours=1)
# Retry-After when the anonymous KV budget is full: records free up as their TTLs end.
FULL_RETRY_AFTER: Final = 60


@dataclass(frozen=True)
class Limit:
    attempts: int
    window: int  # seconds


IP_LIMITS: Final[dict[str, Limit]] = {
    "login": Limit(20, 300),
    "setup": Limit(20, 300),
    "invite": Limit(20, 300),
    "oidc": Limit(30, 300),
}


def lock_for(failures: int) -> timedelta | None:
    """How long `failures` consecutive failures lock an account (None: not locked)."""
    if failures < LOCK_THRESHOLD:
        return None
    doublings = min(failures - LOCK_THRESHOLD, 16)  # bounded: no overflow on huge counts
    duration: timedelta = min(LOCK_BASE * (2**doublings), LOCK_MAX)
    return duration


def _seconds_until(until: datetime, now: datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


class IpLimiter:
    """Fixed-window attempt counters per (scope, client address) on the shared KV store."""

    def __init__(self, kv: KVStore, clock: Clock, limits: dict[str, Limit] | None = None) -> None:
        self.kv = kv
        self.clock = clock
        self.limits = limits or IP_LIMITS

    async def hit(self, scope: str, ip: str, *, budget: Budget = ANONYMOUS) -> int | None:
        """Count one attempt; the seconds to wait when over the limit, else None.

        `budget` is the KV budget of a new window: anonymous unless the caller is signed in.
        """
        limit = self.limits[scope]
        now = self.clock.time()
        window = int(now // limit.window)
        key = f"ratelimit:{scope}:{ip_bucket(ip)}:{window}"
        try:
            count = await self.kv.incr(key, ttl=limit.window, budget=budget)
        except KVFullError:
            return FULL_RETRY_AFTER
        if count > limit.attempts:
            return max(1, math.ceil((window + 1) * limit.window - now))
        return None


@dataclass(frozen=True)
class LoginOutcome:
    """`user_id` on success; else `error` is "invalid", "locked" or "disabled"."""

    user_id: str | None = None
    error: str | None = None
    retry_after: int | None = None


async def _unknown_locked(kv: KVStore, key: str) -> int | None:
    if await kv.get(f"lockout:until:{key}") is None:
        return None
    ttl = await kv.ttl(f"lockout:until:{key}")
    return max(1, math.ceil(ttl)) if ttl else 1


async def _unknown_failed(kv: KVStore, key: str) -> None:
    # Counters for addresses with no account: anonymous records (KVFullError when full).
    failures = await kv.incr(
        f"lockout:count:{key}", ttl=LOCK_MAX.total_seconds() * 2, budget=ANONYMOUS
    )
    duration = lock_for(failures)
    if duration is not None:
        await kv.set(f"lockout:until:{key}", "1", ttl=duration.total_seconds(), budget=ANONYMOUS)


async def authenticate_password(
    store: Store, kv: KVStore, clock: Clock, email: str, password: str
) -> LoginOutcome:
    """Check an e-mail and password under the lockout policy (scrypt runs off the loop).

    Raises KVFullError when an unknown address's lockout counter finds the anonymous KV budget
    full (answer 429: nothing was evicted to count it).
    """
    address = email.strip().lower()[:254]
    state = await store.run(accounts_store.login_state, address)
    now = clock.now()
    if state is None:
        key = hash_token(address)
        retry = await _unknown_locked(kv, key)
        if retry is not None:
            return LoginOutcome(error="locked", retry_after=retry)
        await verify_password_async(password, None)  # same cost as a real check
        await _unknown_failed(kv, key)
        return LoginOutcome(error="invalid")
    if state.locked_until is not None and state.locked_until > now:
        return LoginOutcome(error="locked", retry_after=_seconds_until(state.locked_until, now))
    if not await verify_password_async(password, state.password_hash):
        await store.run(accounts_store.record_login_failure, state.user_id, clock.now(), lock_for)
        return LoginOutcome(error="invalid")
    await store.run(accounts_store.record_login_success, state.user_id)
    if state.disabled:
        return LoginOutcome(error="disabled")
    return LoginOutcome(user_id=state.user_id)
