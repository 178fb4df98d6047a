"""PKCE (RFC 7636), S256 only: `plain` is refused (DESIGN §10)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

__all__ = ["challenge_valid", "s256", "verifier_matches"]

_VERIFIER: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def challenge_valid(challenge: object, method: object) -> bool:
    """An S256 challenge: 43 base64url characters, and the method exactly `S256`."""
    return method == "S256" and isinstance(challenge, str) and bool(_CHALLENGE.fullmatch(challenge))


def verifier_matches(verifier: object, challenge: str) -> bool:
    """True when `verifier` is well-formed and hashes to `challenge` (constant-time compare)."""
    if not isinstance(verifier, str) or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("ascii"))
