"""The models on both engines: timestamp format, ids, uniqueness, foreign keys and cascades."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import peewee
import pytest

import bindify_appliance
from bindify_appliance.store import Store, apply
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import (
    ALL_MODELS,
    SETUP_STATE_ID,
    BaseModel,
    Connection,
    ConnectionEvent,
    DcrRegistration,
    Invite,
    PersonalToken,
    Service,
    Session,
    SetupState,
    User,
    new_id,
)

from . import ENGINES, engine_url

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store(engine_url(request, tmp_path, migrated=True))
    apply(s, backup_dir=None)
    with s.connection():  # the tests below use the models directly in this thread
        yield s
    s.close()


def _user(email: str = "a@example.com", role: str = "member") -> User:
    return User.create(email=email, role=role, created_at=NOW, updated_at=NOW)


def _connection(user: User, secret1_hash: str = "h1") -> Connection:
    return Connection.create(
        user=user,
        service="linear",
        auth_type="oauth",
        key_storage_mode="managed",
        secret1_hash=secret1_hash,
        created_at=NOW,
        updated_at=NOW,
    )


def _raw(store: Store, sql: str) -> list[tuple[object, ...]]:
    return list(run_sql(store.db, sql).fetchall())


def test_timestamps_are_stored_as_one_exact_text_form(store: Store) -> None:
    moment = datetime(2026, 11, 29, 11, 30, 15, 987654, tzinfo=timezone(timedelta(hours=1)))
    user = User.create(
        email="t@example.com", role="admin", created_at=moment, updated_at="2026-11-29 10:30:15"
    )
    assert _raw(store, "SELECT created_at, updated_at FROM users") == [
        ("2026-11-29T10:30:15Z", "2026-11-29T10:30:15Z")
    ]
    back = User.get_by_id(user.id)
    assert back.created_at == datetime(2026, 11, 29, 10, 30, 15, tzinfo=UTC)
    assert back.created_at.tzinfo is not None and back.created_at.utcoffset() == timedelta(0)
    assert back.disabled_at is None
    # Text order is time order, so comparisons work in SQL on both engines.
    later = User.select().where(User.created_at > datetime(2026, 11, 29, 10, 0, tzinfo=UTC))
    assert [u.id for u in later] == [user.id]


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        User.create(
            email="n@example.com", role="member", created_at=datetime(2026, 1, 1), updated_at=NOW
        )
    assert User.select().count() == 0


def test_ids_are_uuid4_strings(store: Store) -> None:
    user = _user()
    assert uuid.UUID(user.id).version == 4
    assert uuid.UUID(new_id()).version == 4
    assert new_id() != new_id()


def test_email_is_stored_lower_case_and_unique(store: Store) -> None:
    _user("Alice@Example.COM")
    assert _raw(store, "SELECT email FROM users") == [("alice@example.com",)]
    assert User.get(User.email == "ALICE@example.com").email == "alice@example.com"
    with pytest.raises(peewee.IntegrityError), store.db.atomic():
        _user("alice@EXAMPLE.com")


def test_defaults(store: Store) -> None:
    user = _user()
    conn = Connection.get_by_id(_connection(user).id)
    assert (conn.status, conn.token_generation, conn.key_fingerprint) == ("active", 0, "")
    assert conn.user_id == user.id
    service = Service.create(id="acme", builtin=True, created_at=NOW, updated_at=NOW)
    back = Service.get_by_id(service.id)
    assert (back.builtin, back.transport, back.oauth_key_fingerprint) == (
        True,
        "streamable-http",
        "",
    )
    assert back.name is None and back.mcp_url is None
    assert User.get_by_id(user.id).failed_logins == 0


def test_unique_secret1_hash_and_dcr_service_issuer(store: Store) -> None:
    user = _user()
    _connection(user, "same")
    with pytest.raises(peewee.IntegrityError), store.db.atomic():
        _connection(user, "same")
    row = dict(registration_sealed="x", key_fingerprint="fp", created_at=NOW, updated_at=NOW)
    DcrRegistration.create(service="linear", issuer="https://a", **row)
    DcrRegistration.create(service="linear", issuer="https://b", **row)
    with pytest.raises(peewee.IntegrityError), store.db.atomic():
        DcrRegistration.create(service="linear", issuer="https://a", **row)


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(peewee.IntegrityError), store.db.atomic():
        Session.create(id="s" * 64, user=new_id(), created_at=NOW, expires_at=NOW, last_seen_at=NOW)
    assert Session.select().count() == 0


def test_deleting_a_user_cascades_and_nulls(store: Store) -> None:
    admin = _user("admin@example.com", "admin")
    other = _user("other@example.com")
    SetupState.create(id=SETUP_STATE_ID, completed_at=NOW, admin=admin)
    Session.create(id="a" * 64, user=admin, created_at=NOW, expires_at=NOW, last_seen_at=NOW)
    PersonalToken.create(user=admin, name="ci", token_hash="th", created_at=NOW)
    conn = _connection(admin)
    ConnectionEvent.create(connection=conn, event_type="auth", category="kv_miss", created_at=NOW)
    orphan = ConnectionEvent.create(
        user_id=admin.id, event_type="api_key_validation", category="x", created_at=NOW
    )
    invite = Invite.create(
        email="new@example.com",
        role="member",
        token_hash="ih",
        created_by=admin,
        created_at=NOW,
        expires_at=NOW,
    )
    kept = _connection(other, "h2")

    admin.delete_instance()

    assert Session.select().count() == 0
    assert PersonalToken.select().count() == 0
    assert [c.id for c in Connection.select()] == [kept.id]
    assert [e.id for e in ConnectionEvent.select()] == [orphan.id]
    assert Invite.get_by_id(invite.id).created_by_id is None
    assert SetupState.get_by_id(SETUP_STATE_ID).admin_id is None


def test_setup_state_row_is_an_installer_lock(store: Store) -> None:
    with store.db.atomic():
        first = _user("first@example.com", "admin")
        SetupState.create(id=SETUP_STATE_ID, completed_at=NOW, admin=first)
    with pytest.raises(peewee.IntegrityError), store.db.atomic():
        second = _user("second@example.com", "admin")
        SetupState.create(id=SETUP_STATE_ID, completed_at=NOW, admin=second)
    # The losing setup left nothing behind.
    assert [u.email for u in User.select()] == ["first@example.com"]


def test_event_ids_increase(store: Store) -> None:
    ids = [
        ConnectionEvent.create(event_type="e", category="c", created_at=NOW).id for _ in range(3)
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_all_models_are_in_dependency_order() -> None:
    seen: set[type[peewee.Model]] = set()
    for model in ALL_MODELS:
        for fk in model._meta.refs:
            assert fk.rel_model in seen or fk.rel_model is model, (model, fk.rel_model)
        seen.add(model)
    assert len(seen) == len(ALL_MODELS) == 23


def test_every_model_anywhere_in_the_package_is_in_all_models() -> None:
    # A model defined outside ALL_MODELS (as OidcIdentity once was, in store/accounts.py)
    # escapes the schema-against-migrations checks; import every module to find them all.
    for module in pkgutil.walk_packages(bindify_appliance.__path__, "bindify_appliance."):
        if not module.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(module.name)
    found: set[type[BaseModel]] = set()
    pending = list(BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        found.add(model)
        pending += model.__subclasses__()
    assert found == set(ALL_MODELS)
