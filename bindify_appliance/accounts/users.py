"""User administration: create (with a password or an invite), change, disable, delete.

Service functions behind the operations in `usecases/` (which add the proxy's invalidation,
billing and the audit entry); they take their collaborators (store, clock, base URL) as
arguments and hold the rules:
- e-mail addresses are validated and lower-cased here;
- a user created without a password gets a one-time invite link valid 7 days, also mailed to
  them when e-mail is configured;
- the last active administrator can never be demoted, disabled or deleted (`LastAdminError`,
  raised by the store inside the same transaction as the change);
- disabling a user ends their sessions and personal tokens at once (store, same transaction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bindify_appliance.accounts.passwords import check_password_policy, hash_password_async
from bindify_appliance.accounts.tokens import hash_token, new_token
from bindify_appliance.clock import Clock
from bindify_appliance.errors import InvalidRequest
from bindify_appliance.mail.messages import invite_mail
from bindify_appliance.store import Store
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store.accounts import UserRecord
from bindify_appliance.store.models import ROLES
from bindify_appliance.store.outbox import with_queued_mail

if TYPE_CHECKING:
    from bindify_appliance.mail.outbox import Mailer

__all__ = [
    "INVITE_TTL",
    "CreatedUser",
    "create_user",
    "delete_user",
    "invite_url",
    "normalize_email",
    "update_user",
]

INVITE_TTL = timedelta(days=7)

# Deliberately plain: one @, a non-empty local part without spaces or controls, and a domain of
# dot-separated LDH labels with at least one dot. Mail delivery is not our business; identity is.
_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)


def normalize_email(text: str) -> str:
    """The lower-cased address, or InvalidRequest (field `email`)."""
    value = text.strip().lower()
    local, at, domain = value.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or len(value) > 254
        or _LOCAL.fullmatch(local) is None
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise InvalidRequest("not a valid email address", field="email")
    return value


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest("role must be admin or member", field="role")
    return role


def invite_url(base_url: str, token: str) -> str:
    return f"{base_url}/invite?token={token}"


@dataclass(frozen=True)
class CreatedUser:
    user: UserRecord
    invite_url: str | None


async def create_user(
    store: Store,
    clock: Clock,
    base_url: str,
    *,
    email: str,
    role: str,
    password: str | None,
    created_by: str | None,
    mailer: Mailer | None = None,
) -> CreatedUser:
    """Create an active user (password given) or an invited one (invite URL returned once).

    With a `mailer` (e-mail configured) the invite is also mailed: queued in the same
    transaction that creates it, so it is sent even if the process stops right after.

    Raises:
        HTTPFacingError: invalid email, role or password (400, with `field`).
        ConflictError: the email is taken.
    """
    address = normalize_email(email)
    check_role(role)
    if password is not None:
        check_password_policy(password)
        password_hash = await hash_password_async(password)
        user = await store.run(
            accounts_store.create_user_with_password, address, password_hash, role, clock.now()
        )
        return CreatedUser(user=user, invite_url=None)
    token = new_token()
    link = invite_url(base_url, token)
    now = clock.now()
    mails = []
    if mailer is not None:
        mails.append(
            mailer.seal("invite", invite_mail(address, base_url, link, role, INVITE_TTL.days))
        )
    user = await store.run(
        with_queued_mail,
        mails,
        now,
        accounts_store.create_invited_user,
        address,
        role,
        hash_token(token),
        created_by,
        now,
        INVITE_TTL,
    )
    return CreatedUser(user=user, invite_url=link)


async def update_user(
    store: Store, clock: Clock, user_id: str, *, role: str | None, disabled: bool | None
) -> UserRecord:
    """Change role and/or disabled state (LastAdminError, NotFoundError as the store says)."""
    if role is not None:
        check_role(role)
    return await store.run(accounts_store.update_user, user_id, role, disabled, clock.now())


async def delete_user(store: Store, user_id: str) -> None:
    await store.run(accounts_store.delete_user, user_id)
