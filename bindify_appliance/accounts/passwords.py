"""Password hashing with scrypt, verified in constant time.

Work factor: N=2**14, r=10, p=1 costs about 100 ms on the 2-core CI machine (measured:
r=8 took 83 ms, so r=10 ≈ 104 ms). Callers run `hash_password`/`verify_password` off the event
loop (`Store.run` or an executor); they are deliberately slow.

Stored form: `scrypt$N$r$p$salt$hash` (base64url, no padding). Parameters travel with the hash,
so raising the work factor later keeps old hashes verifiable.

The async forms run on a small pool of their own (scrypt releases the GIL), so a burst of
sign-ins never occupies the database's worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

from bindify_appliance.errors import InvalidRequest

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "check_password_policy",
    "hash_password",
    "hash_password_async",
    "verify_password",
    "verify_password_async",
]

SCRYPT_N = 2**14
SCRYPT_R = 10
SCRYPT_P = 1
_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_password_policy(password: str) -> None:
    """Raises InvalidRequest (field `password`) when the password is unacceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest("password is too long", field="password")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=_MAXMEM,
        dklen=32,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when `password` matches `stored`; False for any malformed or missing hash."""
    if not stored:
        # Spend the same time as a real check so timing does not reveal unknown accounts.
        hash_password(password)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Two threads: each hash holds 16 MiB for ~100 ms; more would only queue on the 2 cores.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bindify-scrypt")


async def hash_password_async(password: str) -> str:
    """`hash_password` off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    """`verify_password` off the event loop (same timing for unknown accounts)."""
    return await asyncio.get_running_loop().run_in_executor(
        _POOL, verify_password, password, stored
    )
