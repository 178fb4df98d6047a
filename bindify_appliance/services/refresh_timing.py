"""When an OAuth token is due for a refresh, read from its stored payload alone.

A token is due within `WINDOW` seconds of expiry or, for a token that lives shorter than four
windows, once `DUE_AT` of its own lifetime has passed, whichever comes later: each token is
refreshed once per lifetime, never on every request.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DUE_AT", "WINDOW", "due_margin", "expires_at", "has_refresh_token"]

WINDOW: Final = 300
DUE_AT: Final = 0.75  # of a token's lifetime, for tokens shorter than WINDOW / (1 - DUE_AT)


def expires_at(payload: dict[str, Any]) -> float | None:
    value = payload.get("expires_at")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def due_margin(payload: dict[str, Any]) -> float:
    """Seconds before `expires_at` at which the payload's token is due for a refresh.

    `WINDOW`, or a quarter of the token's lifetime when that is shorter: a token is never due
    before 75 % of its lifetime has passed, so each token is refreshed once per lifetime.
    """
    expires, issued = expires_at(payload), payload.get("issued_at")
    if expires is None or isinstance(issued, bool) or not isinstance(issued, int | float):
        return WINDOW
    lifetime = expires - float(issued)
    if lifetime <= 0:
        return WINDOW
    return min(WINDOW, lifetime * (1 - DUE_AT))


def has_refresh_token(payload: dict[str, Any]) -> bool:
    token = payload.get("refresh_token")
    return isinstance(token, str) and bool(token)
