"""Every action the audit trail records: the one declaration (DESIGN §12).

`ACTIONS` maps each `action` to the README's words for it. `record`/`record_sync` refuse an
action not declared here (a caller bug, `ValueError`), the chain's own entries (`audit.*`) are
written by `chain` and `migrations/0004`; the README's action table is checked against this
mapping by a test, and another test drives every entry once through the real API, pages or CLI.
A new recorded action is added here first, with its README row.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACTIONS", "CHAIN_ACTIONS"]

ACTIONS: Final[dict[str, str]] = {
    # Signing in and out.
    "login.success": "signed in (password or single sign-on; `detail.method`)",
    "login.failure": "a failed sign-in naming an existing account (actor: that account)",
    "login.failure_count": "failed sign-ins naming no account, counted per address and hour",
    "logout.success": "signed out",
    "setup.complete": "first-run setup created the first administrator",
    "setup.reset": "`bindify admin reset-setup` issued a new one-time setup URL",
    # Users and roles.
    "user.invite": "a user invited (administrator, API or Users page)",
    "invite.accept": "an invitation accepted (the new user sets a password)",
    "user.create": "a user created with a password (API or `bindify admin create-user`)",
    "user.role": "a user's role changed (`detail.role`: the role after it; API or Users page)",
    "user.disable": "a user disabled (`detail.role`)",
    "user.enable": "a user enabled (`detail.role`)",
    "user.delete": "a user deleted (administrator, the user themself, or `bindify admin "
    "remove-user` without `--revoke`)",
    "password.change": "a user changed their own password (Account page)",
    "password.reset": "`bindify admin reset-password` set a user's password",
    # Personal tokens.
    "token.create": "a personal API token created (API or `bindify admin create-token`)",
    "token.delete": "a personal API token deleted",
    # Services and OAuth apps.
    "service.create": "a service created",
    "service.update": "a service changed",
    "oauth_app.set": "a service's OAuth app credentials set",
    "service.delete": "a service deleted",
    # Connections.
    "connection.create": "a connection created",
    "connection.rename": "a connection renamed",
    "connection.policy": "a member's tool policy on a connection set or cleared",
    "connection.disable": "a connection disabled (by its owner or an administrator)",
    "connection.enable": "a connection enabled",
    "connection.rotate": "a connection's secret URL and API key rotated",
    "connection.delete": "a connection deleted",
    "connection.reconnect": (
        "a connection reconnected in place (same URL and key; API, page or OAuth callback)"
    ),
    "connection.revoke": (
        "offboarding revoked (or listed) one connection's grant "
        "(`detail.result`; `failure` when failed)"
    ),
    "user.offboard": (
        "a member removed with revocation at the providers (counts per result, `deleted`)"
    ),
    "session.end": "a member ended one of their own sign-in sessions (`detail.current`)",
    # MCP clients signed in through the appliance's OAuth server (DESIGN §10).
    "oauth.grant": "an MCP client got a grant to a connection (`detail.client`, `detail.grant`)",
    "oauth.revoke": (
        "MCP client grants ended (`detail.reason`: `member`, `client`, `refresh_reuse`, "
        "`code_reuse`)"
    ),
    # Billing (DESIGN §11; only when billing is on).
    "billing.subscription": (
        "a Stripe event changed a member's subscription (`detail.status`, `detail.quantity`)"
    ),
    "billing.quantity": "a member changed their number of paid connections",
    "billing.suspend": (
        "billing suspended or restored a member's connections (`detail.suspended`, "
        "`detail.restored`)"
    ),
    # Operations.
    "canary.allow": "the payload canary's one-off loopback allowance granted (administrator)",
    "canary.end": "the payload canary's allowance ended early (administrator)",
    # Master keys (CLI).
    "key.rotate": "`bindify keys rotate` finished",
    "key.remove": "`bindify keys remove` removed a master key",
    # The chain's own entries.
    "audit.genesis": "the chain started (upgrade to the version with the audit trail)",
    "audit.retention": "entries older than the retention deleted; where the chain resumes",
    "audit.rekey": "entries re-keyed off a removed master key; the range",
}

# Written by the chain itself (migration, retention, re-keying), never through `record`.
CHAIN_ACTIONS: Final = frozenset({"audit.genesis", "audit.retention", "audit.rekey"})
