"""Creating users and personal API tokens: the one path for the UI, the API and the CLI.

Invariants:
- The rules are the same whoever acts: the email check (`accounts.users.normalize_email`),
  the password policy, the token name and the cap of live tokens per user
  (`accounts.personal_tokens`). A refusal changes nothing.
- A token's text is returned once and never stored or logged.
- Each operation records its audit entry with the acting principal; a token made for someone
  else (the operator on the host) names that user in the entry's detail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bindify_appliance import audit
from bindify_appliance.accounts import personal_tokens
from bindify_appliance.accounts import users as user_service
from bindify_appliance.accounts.users import CreatedUser
from bindify_appliance.context import AppContext
from bindify_appliance.store.sessions import TokenRecord
from bindify_appliance.usecases.acting import Acting

if TYPE_CHECKING:
    from bindify_appliance.mail.outbox import Mailer

__all__ = ["create_personal_token", "create_user", "revoke_personal_token"]


async def create_personal_token(
    ctx: AppContext, acting: Acting, user_id: str, name: str
) -> tuple[TokenRecord, str]:
    """A new token for `user_id` (the record and the token text, shown once).

    Raises InvalidRequest (the name) or ConflictError (too many live tokens, or the account
    is disabled or gone): nothing made.
    """
    record, token = await personal_tokens.create_token(ctx.store, ctx.clock, user_id, name)
    detail = None if acting.user_id == user_id else {"user": user_id}
    target = audit.Target("personal_token", record.id)
    await acting.record(ctx, "token.create", target, detail=detail)
    return record, token


async def revoke_personal_token(ctx: AppContext, acting: Acting, token_id: str) -> bool:
    """Revoke one of the acting user's own tokens; False when they hold no such live one."""
    if acting.user_id is None:
        return False
    if not await personal_tokens.revoke_token(ctx.store, ctx.clock, acting.user_id, token_id):
        return False
    await acting.record(ctx, "token.delete", audit.Target("personal_token", token_id))
    return True


async def create_user(
    ctx: AppContext,
    acting: Acting,
    *,
    email: str,
    role: str,
    password: str | None,
    mailer: Mailer | None = None,
) -> CreatedUser:
    """An active user (with a password) or an invited one (the invite URL, returned once).

    Raises InvalidRequest (email, role or password) or ConflictError (the email is taken).
    """
    created = await user_service.create_user(
        ctx.store,
        ctx.clock,
        ctx.settings.base_url,
        email=email,
        role=role,
        password=password,
        created_by=acting.user_id,
        mailer=mailer,
    )
    action = "user.invite" if created.invite_url else "user.create"
    target = audit.Target("user", created.user.id)
    await acting.record(ctx, action, target, detail={"role": created.user.role})
    return created
