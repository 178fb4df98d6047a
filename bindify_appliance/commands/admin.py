"""Bodies of `bindify admin …`: the headless path to users and tokens.

They open the database (applying pending migrations first, like `serve`), do one unit of work,
and print nothing secret except the value the command exists to print (on stdout, by the CLI).
Users and personal tokens are created, and users removed, by the same operations as the API's
(`usecases.accounts`, `usecases.users`): the same email check, password policy, token name rule,
token cap and last-admin rule.
Each records its audit entry with the actor `{"type": "cli", "id": null, "email": null}` (the
operator on the host; DESIGN §12), so the master keys are loaded — and created on a first run,
as `serve` would — before anything changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bindify_appliance import audit
from bindify_appliance.accounts.passwords import check_password_policy, hash_password
from bindify_appliance.accounts.setup import issue_setup_token
from bindify_appliance.accounts.users import normalize_email
from bindify_appliance.clock import SystemClock
from bindify_appliance.commands.database import open_migrated_store
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.datadir import KeySource
from bindify_appliance.errors import ConfigError, HTTPFacingError, NotFoundError
from bindify_appliance.kv.memory import MemoryKV
from bindify_appliance.store import Store, users
from bindify_appliance.usecases import accounts
from bindify_appliance.usecases.acting import CLI

__all__ = ["create_token", "create_user", "remove_user", "reset_password", "reset_setup"]

Printer = Callable[[str], None]
T = TypeVar("T")


def _valid_email(email: str) -> str:
    value = email.strip().lower()
    local, _, domain = value.partition("@")
    if not local or "." not in domain or " " in value or len(value) > 254:
        raise ConfigError(f"not an email address: {email!r}")
    return value


def _keys(settings: Settings, say: Printer) -> KeySource:
    """The master keys the audit entry is sealed with (generated like `serve` on a first run)."""
    keys = KeySource(settings, create=True)
    if keys.generated:
        say(f"generated a new master key in {keys.path}; back it up together with the database")
    return keys


def _record(
    store: Store,
    keys: KeySource,
    action: str,
    target: audit.Target | None,
    detail: dict[str, str] | None = None,
) -> None:
    audit.record_sync(store, keys.keyring, SystemClock(), audit.CLI, action, target, detail=detail)


def _checked_password(password: str) -> str:
    try:
        check_password_policy(password)
    except HTTPFacingError as exc:
        raise ConfigError(exc.public_message) from None
    return hash_password(password)


def _run(
    settings: Settings, say: Printer, work: Callable[[AppContext], Coroutine[Any, Any, T]]
) -> T:
    """Run one operation against the database (migrated first, like `serve`).

    The context holds what the account operations use — store, clock, keys, settings — and an
    in-process KV nobody shares; it signs no cookie, so no secret key is loaded or created.
    """
    store = open_migrated_store(settings)
    try:
        clock = SystemClock()
        ctx = AppContext(
            settings=settings,
            store=store,
            kv=MemoryKV(clock),
            keys=_keys(settings, say),
            clock=clock,
            secret_key=b"",
            instance_id="cli",
        )
        return asyncio.run(work(ctx))
    finally:
        store.close()


def create_user(
    settings: Settings, email: str, password: str, *, admin: bool, say: Printer
) -> None:
    """`admin create-user`: the API's operation (email check, password policy), as the CLI."""
    role = "admin" if admin else "member"
    normalize_email(email)  # refused before the database is opened, as the operation would
    check_password_policy(password)

    async def work(ctx: AppContext) -> str:
        created = await accounts.create_user(ctx, CLI, email=email, role=role, password=password)
        return created.user.email

    address = _run(settings, say, work)
    say(f"created {'administrator' if admin else 'member'} {address}")


def create_token(settings: Settings, email: str, name: str, *, say: Printer) -> str:
    """`admin create-token`: the API's operation (name, cap of live tokens), as the CLI."""
    address = normalize_email(email)

    async def work(ctx: AppContext) -> str:
        user = await ctx.store.run(users.find_user, address)
        if user is None:
            raise NotFoundError(f"no user {address}")
        if user.disabled_at is not None:
            raise ConfigError(f"user {address} is disabled")
        _, token = await accounts.create_personal_token(
            ctx, CLI, str(user.id), name.strip() or "cli"
        )
        return token

    token = _run(settings, say, work)
    say(f"personal API token for {address} (shown once; use it as 'Authorization: Bearer …')")
    return token


def reset_password(settings: Settings, email: str, password: str, *, say: Printer) -> None:
    address = _valid_email(email)
    password_hash = _checked_password(password)
    with open_migrated_store(settings) as store:
        keys = _keys(settings, say)
        now = SystemClock().now()
        user = store.call(
            lambda: users.update_password(address, password_hash, now, end_tokens=True)
        )
        _record(store, keys, "password.reset", audit.Target("user", str(user.id)))
    say(f"password of {address} changed; their sessions and personal tokens have ended")


def reset_setup(settings: Settings, *, say: Printer) -> str:
    with open_migrated_store(settings) as store:
        keys = _keys(settings, say)
        url = store.call(issue_setup_token, settings, SystemClock())
        _record(store, keys, "setup.reset", None)
    say("one-time setup URL (30 minutes) that creates an additional administrator:")
    return url


def remove_user(
    settings: Settings, email: str, *, revoke: bool, confirm: bool, say: Printer
) -> int:
    """`admin remove-user EMAIL [--revoke [--confirm]]`; exit status 0, or 1 when a revocation
    failed and the member was kept (disabled) for a retry."""
    from bindify_appliance.app import build_context
    from bindify_appliance.services.connect import ConnectServices
    from bindify_appliance.usecases.users import delete_user, offboard_user

    address = _valid_email(email)
    open_migrated_store(settings).close()  # migrations first, like `serve`
    ctx = build_context(settings)

    async def run() -> int:
        services = ConnectServices.build(ctx)
        try:
            user = await ctx.store.run(users.find_user, address)
            if user is None:
                raise NotFoundError(f"no user {address}")
            if not revoke:
                await delete_user(services, CLI, str(user.id))
                say(f"deleted {address} (grants at the providers were not revoked)")
                return 0
            report = await offboard_user(services, CLI, str(user.id), confirm=confirm)
            for c in report.connections:
                link = (
                    f" — revoke at {c['revoke_at']}"
                    if c["revoke_at"] and c["result"] != "revoked"
                    else ""
                )
                say(f"{c['service']} {c['label'] or ''}: {c['result']}{link}")
            if report.deleted:
                say(f"removed {address}")
                return 0
            say(f"{address} is disabled but kept: run again to retry (or add --confirm)")
            return 1
        finally:
            await services.close()
            await ctx.kv.close()

    try:
        return asyncio.run(run())
    finally:
        ctx.store.close()
