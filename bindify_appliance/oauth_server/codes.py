"""Authorization codes: one-time, 60 seconds, in the KV (shared by every instance).

Invariants: the KV key is a hash of the code and the record is sealed under a key derived
from the code, so the KV alone yields neither a usable code nor the opener it carries.
"""

from __future__ import annotations

from bindify_appliance.context import AppContext

__all__ = ["CODE_TTL", "issue_code"]

CODE_TTL = 60.0


async def issue_code(
    ctx: AppContext,
    *,
    client_id: str,
    redirect_uri: str,
    code_challenge: str,
    service: str,
    resource: str | None,
    connection_id: str,
    user_id: str,
    opener: bytes | None,
) -> str:
    """A fresh one-time code for this authorization.

    `opener` opens a zero-knowledge connection (the 86-character credentials of its secret URL
    or `bnd_` key, as UTF-8 bytes); None for a managed connection. `code_challenge` is the S256
    challenge (the caller refused `plain`).
    """
    raise NotImplementedError
