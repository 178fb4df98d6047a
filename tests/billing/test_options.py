"""Billing's options: on only with both secrets (also as `*_FILE`), a price required, limits
checked, secrets never in messages or `repr`; and `billing-release` with billing off."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.inprocess import add_user, start_appliance

from bindify_appliance.billing.options import billing_enabled, billing_options
from bindify_appliance.config import load_settings
from bindify_appliance.errors import ConfigError
from bindify_appliance.jobs import standard_jobs
from bindify_appliance.store.models import Connection, User

from .conftest import STRIPE_KEY, WEBHOOK_SECRET


def _load(tmp_path: Path, **env: str) -> object:
    return load_settings(environ={"BINDIFY_DATA_DIR": str(tmp_path), **env})


def test_off_by_default_and_on_with_both_secrets_from_files(tmp_path: Path) -> None:
    assert not billing_enabled(_load(tmp_path))  # type: ignore[arg-type]
    key, hook = tmp_path / "key", tmp_path / "hook"
    key.write_text(STRIPE_KEY + "\n")
    hook.write_text(WEBHOOK_SECRET + "\n")
    settings = _load(
        tmp_path,
        BINDIFY_STRIPE_SECRET_KEY_FILE=str(key),
        BINDIFY_STRIPE_WEBHOOK_SECRET_FILE=str(hook),
        BINDIFY_STRIPE_PRICE="price_x",
        BINDIFY_BILLING_GRACE_DAYS="0",
    )
    options = billing_options(settings)  # type: ignore[arg-type]
    assert options is not None and options.price == "price_x"
    assert options.grace.total_seconds() == 0 and options.trial.days == 5
    assert options.trial_connections == 2 and options.delete_suspended_after is None
    assert STRIPE_KEY not in repr(settings) and WEBHOOK_SECRET not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"BINDIFY_STRIPE_SECRET_KEY": STRIPE_KEY, "BINDIFY_STRIPE_PRICE": "price_x"},
        {"BINDIFY_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "BINDIFY_STRIPE_PRICE": "price_x"},
        {"BINDIFY_STRIPE_SECRET_KEY": STRIPE_KEY, "BINDIFY_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
        {
            "BINDIFY_STRIPE_SECRET_KEY": STRIPE_KEY,
            "BINDIFY_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "BINDIFY_STRIPE_PRICE": "price_x",
            "BINDIFY_BILLING_GRACE_DAYS": "-1",
        },
    ],
)
def test_refused_combinations_name_the_option_not_the_secret(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, **env)
    assert "BINDIFY_" in str(refused.value)
    assert STRIPE_KEY not in str(refused.value) and WEBHOOK_SECRET not in str(refused.value)


async def test_billing_off_lifts_suspensions_left_from_when_it_was_on(tmp_path: Path) -> None:
    server = await start_appliance(tmp_path)
    try:
        member = add_user(server, "m@example.com")
        now = server.clock.now()
        server.store.call(
            lambda: Connection.create(
                user=member,
                service="open",
                auth_type="none",
                key_storage_mode="zero_knowledge",
                secret1_hash="h" * 64,
                created_at=now,
                updated_at=now,
                billing_suspended_at=now,
            )
        )
        server.store.call(lambda: User.update(billing_until=now).where(User.id == member).execute())
        (job,) = [j for j in standard_jobs(server.ctx) if j.name.startswith("billing")]
        assert job.name == "billing-release"
        assert "1 suspension" in (await job.run() or "")
        assert (
            server.store.call(
                lambda: Connection.select().where(Connection.billing_suspended_at.is_null()).count()
            )
            == 1
        )
        assert server.store.call(lambda: User.get_by_id(member).billing_until) is None
    finally:
        await server.app.settings["runtime"].close()
        await server.close()
