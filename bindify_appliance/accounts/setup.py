"""First-run setup: the one-time URL that lets the first administrator in.

While no administrator exists, every start issues a fresh token (30 minutes, single use, only
its hash stored) and the server prints `{base_url}/setup?token=…` straight to stderr.
`bindify admin reset-setup` issues one on demand (it creates an additional admin; it deletes
nothing).
"""

from __future__ import annotations

from datetime import timedelta

from bindify_appliance.accounts.tokens import hash_token, new_token
from bindify_appliance.clock import Clock
from bindify_appliance.config import Settings
from bindify_appliance.store import users

__all__ = ["SETUP_TOKEN_TTL", "issue_setup_token", "issue_setup_token_if_needed"]

SETUP_TOKEN_TTL = timedelta(minutes=30)


def issue_setup_token(settings: Settings, clock: Clock) -> str:
    """Create a setup token and return the setup URL (unit of work)."""
    token = new_token()
    users.create_setup_token(hash_token(token), clock.now(), SETUP_TOKEN_TTL)
    return f"{settings.base_url}/setup?token={token}"


def issue_setup_token_if_needed(settings: Settings, clock: Clock) -> str | None:
    """The setup URL when no active administrator exists, else None (unit of work)."""
    if users.active_admin_count() > 0:
        return None
    return issue_setup_token(settings, clock)
