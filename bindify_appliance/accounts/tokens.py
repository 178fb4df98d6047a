"""High-entropy bearer tokens: personal API tokens, setup, invite and session tokens.

Invariant: only a SHA-256 of a token is ever stored; the token itself is shown once.
Personal API tokens look like `bndpat_` + 43 base64url characters (DESIGN §5).
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = [
    "PERSONAL_TOKEN_PREFIX",
    "hash_token",
    "is_personal_token",
    "new_personal_token",
    "new_token",
]

PERSONAL_TOKEN_PREFIX = "bndpat_"  # noqa: S105 - a prefix, not a secret
_PERSONAL_RE = re.compile(r"bndpat_[A-Za-z0-9_-]{43}", re.ASCII)


def new_token() -> str:
    """43 base64url characters from 32 random bytes."""
    return secrets.token_urlsafe(32)


def new_personal_token() -> str:
    return PERSONAL_TOKEN_PREFIX + new_token()


def is_personal_token(text: str) -> bool:
    return _PERSONAL_RE.fullmatch(text) is not None


def hash_token(token: str) -> str:
    """Hex SHA-256: enough for 256-bit random tokens (no offline guessing is feasible)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
