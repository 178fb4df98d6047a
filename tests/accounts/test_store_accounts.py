"""The account units of work on both engines: last-admin rule (also under concurrency),
disabling, single sign-on identity resolution, keyset pagination, the 0002 schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bindify_appliance.errors import LastAdminError, NotFoundError
from bindify_appliance.store import Store, apply
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store import sessions as sessions_store
from bindify_appliance.store.accounts import OidcIdentity
from bindify_appliance.store.models import PersonalToken, Session, User, database_proxy

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
ISSUER = "https://idp.example.com"


def _open(request: pytest.FixtureRequest, tmp_path: Path, engine: str) -> Store:
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path}/bindify.db"
    else:
        url = str(request.getfixturevalue("pg_migrated_url"))
    s = Store(url)
    apply(s, backup_dir=None)
    return s


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Both engines: for the rules whose correctness depends on locking and transactions."""
    s = _open(request, tmp_path, request.param)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = _open(request, tmp_path, "sqlite")
    yield s
    s.close()


def user(
    store: Store,
    email: str,
    role: str = "member",
    *,
    disabled: bool = False,
    created: datetime = NOW,
    password: str | None = "hash",
) -> str:
    return store.call(
        lambda: str(
            User.create(
                email=email,
                role=role,
                password_hash=password,
                created_at=created,
                updated_at=created,
                disabled_at=NOW if disabled else None,
            ).id
        )
    )


def role_of(store: Store, user_id: str) -> str:
    return store.call(lambda: str(User.get_by_id(user_id).role))


# -- the last-admin rule ---------------------------------------------------------------------


def test_the_last_active_admin_cannot_be_demoted_disabled_or_deleted(store: Store) -> None:
    admin = user(store, "a@example.com", "admin")
    user(store, "old@example.com", "admin", disabled=True)  # a disabled admin does not count
    with pytest.raises(LastAdminError):
        store.call(accounts_store.update_user, admin, "member", None, NOW)
    with pytest.raises(LastAdminError):
        store.call(accounts_store.update_user, admin, None, True, NOW)
    with pytest.raises(LastAdminError):
        store.call(accounts_store.delete_user, admin)
    assert role_of(store, admin) == "admin"
    # Harmless changes are allowed.
    assert store.call(accounts_store.update_user, admin, "admin", False, NOW).role == "admin"


def test_with_another_admin_the_change_is_allowed(sqlite_store: Store) -> None:
    store = sqlite_store
    first = user(store, "a@example.com", "admin")
    second = user(store, "b@example.com", "admin")
    assert store.call(accounts_store.update_user, first, "member", None, NOW).role == "member"
    with pytest.raises(LastAdminError):
        store.call(accounts_store.delete_user, second)
    store.call(accounts_store.update_user, first, "admin", None, NOW)
    store.call(accounts_store.delete_user, second)
    with pytest.raises(NotFoundError):
        store.call(accounts_store.get_user, second)


def test_concurrent_demotions_leave_one_admin(store: Store) -> None:
    x = user(store, "x@example.com", "admin")
    y = user(store, "y@example.com", "admin")
    holding = threading.Event()
    outcome: dict[str, object] = {}

    def demote_x_slowly() -> None:
        # The same steps update_user takes, with the transaction held open while B tries.
        def unit() -> None:
            with database_proxy.atomic():
                user_x = User.get_by_id(x)
                accounts_store._check_last_admin(user_x, True)
                holding.set()
                threading.Event().wait(0.3)  # hold the locks while B starts
                User.update(role="member").where(User.id == x).execute()

        store.call(unit)

    def demote_y() -> None:
        holding.wait(5)
        try:
            store.call(accounts_store.update_user, y, "member", None, NOW)
            outcome["b"] = "demoted"
        except LastAdminError:
            outcome["b"] = "refused"

    a = threading.Thread(target=demote_x_slowly)
    b = threading.Thread(target=demote_y)
    a.start()
    b.start()
    a.join(10)
    b.join(10)
    assert outcome["b"] == "refused"
    assert {role_of(store, x), role_of(store, y)} == {"member", "admin"}


def test_disabling_ends_sessions_and_tokens_in_the_same_change(store: Store) -> None:
    member = user(store, "m@example.com")
    store.call(
        sessions_store.insert_session, "s1", member, NOW, NOW + timedelta(days=1), None, None, None
    )
    store.call(sessions_store.insert_token, member, "t", "h1", NOW, 10)
    record = store.call(accounts_store.update_user, member, None, True, NOW)
    assert record.status == "disabled" and record.disabled_at == NOW
    assert store.call(lambda: Session.select().count()) == 0
    assert (
        store.call(lambda: PersonalToken.select().where(PersonalToken.revoked_at.is_null()).count())
        == 0
    )
    # While disabled nothing authenticates, and a new session cannot even be recorded.
    assert store.call(sessions_store.token_principal, "h1", NOW, timedelta(minutes=1)) is None


def test_user_status_vocabulary(sqlite_store: Store) -> None:
    store = sqlite_store
    invited = user(store, "i@example.com", password=None)
    assert store.call(accounts_store.get_user, invited).status == "invited"
    store.call(accounts_store.resolve_oidc_identity, ISSUER, "sub-i", "i@example.com", None, NOW)
    assert store.call(accounts_store.get_user, invited).status == "active"  # SSO-only user


# -- single sign-on identities ---------------------------------------------------------------


def test_identity_resolution_rules(sqlite_store: Store) -> None:
    store = sqlite_store
    local = user(store, "local@example.com", "member")
    boss = user(store, "boss@example.com", "admin")
    resolve = accounts_store.resolve_oidc_identity
    # Unverified (None) email: no link, no provisioning.
    assert store.call(resolve, ISSUER, "s1", None, "member", NOW) is None
    # An administrator is never linked by email, and a link outside the domain policy is
    # refused; neither writes anything.
    found = store.call(resolve, ISSUER, "s0", "boss@example.com", "admin", NOW)
    assert found is not None and found[0].id == boss and found[1] == "admin_not_linked"
    assert store.call(resolve, ISSUER, "s1", "local@example.com", None, NOW, False) is None
    assert store.call(lambda: OidcIdentity.select().count()) == 0
    # Verified email of a local account: linked, whatever the provisioning policy says.
    found = store.call(resolve, ISSUER, "s1", "local@example.com", None, NOW)
    assert found is not None and found[0].id == local and found[1] == "linked"
    # Afterwards the identity alone decides, even with another (or no) email.
    found = store.call(resolve, ISSUER, "s1", None, None, NOW)
    assert found is not None and found[0].id == local and found[1] == "existing"
    # Same subject at another issuer is another identity.
    assert store.call(resolve, "https://other.example", "s1", None, None, NOW) is None
    # Provisioning needs both a verified email and the caller's permission.
    assert store.call(resolve, ISSUER, "s2", "new@example.com", None, NOW) is None
    found = store.call(resolve, ISSUER, "s2", "new@example.com", "member", NOW)
    assert found is not None and found[1] == "provisioned" and found[0].role == "member"
    assert found[0].status == "active"


def test_sign_in_methods_tell_password_accounts_from_sso_only_ones(sqlite_store: Store) -> None:
    store = sqlite_store
    methods = accounts_store.sign_in_methods
    local = user(store, "local@example.com")
    assert store.call(methods, local) == accounts_store.SignInMethods(True, ())
    # A provisioned user has no password, only the identity.
    found = store.call(
        accounts_store.resolve_oidc_identity, ISSUER, "p", "sso@example.com", "member", NOW
    )
    assert found is not None
    assert store.call(methods, found[0].id) == accounts_store.SignInMethods(False, (ISSUER,))
    # Linking an identity to a password account keeps the password.
    store.call(accounts_store.resolve_oidc_identity, ISSUER, "l", "local@example.com", None, NOW)
    assert store.call(methods, local) == accounts_store.SignInMethods(True, (ISSUER,))
    assert store.call(methods, "no-such-user") is None


def test_concurrent_first_logins_make_one_identity(store: Store) -> None:
    results: list[object] = []
    start = threading.Barrier(4)

    def login() -> None:
        start.wait(5)
        results.append(
            store.call(
                accounts_store.resolve_oidc_identity,
                ISSUER,
                "same",
                "race@example.com",
                "member",
                NOW,
            )
        )

    threads = [threading.Thread(target=login) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ids = {r[0].id for r in results if r is not None}  # type: ignore[index]
    assert len(results) == 4 and len(ids) == 1
    assert store.call(lambda: OidcIdentity.select().count()) == 1
    assert store.call(lambda: User.select().count()) == 1


# -- pagination ------------------------------------------------------------------------------


def test_keyset_pages_have_no_gaps_or_repeats_with_equal_timestamps(sqlite_store: Store) -> None:
    store = sqlite_store
    made = {
        user(store, f"u{i}@example.com", created=NOW + timedelta(seconds=i // 3)) for i in range(10)
    }
    seen: list[str] = []
    after = None
    while True:
        rows = store.call(accounts_store.list_users, after, 3)
        seen += [r.id for r in rows]
        if len(rows) < 3:
            break
        after = [rows[-1].created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), rows[-1].id]
    assert len(seen) == len(set(seen)) == 10 and set(seen) == made


def test_schema_0002_matches_the_identity_model(store: Store) -> None:
    columns = {c.name: c for c in store.call(store.db.get_columns, "oidc_identities")}
    fields = {f.column_name: f for f in OidcIdentity._meta.sorted_fields}
    assert set(columns) == set(fields)
    for name, field in fields.items():
        assert columns[name].null == bool(field.null), name
    indexes = {
        (tuple(i.columns), i.unique) for i in store.call(store.db.get_indexes, "oidc_identities")
    }
    assert (("issuer", "subject"), True) in indexes
    # Deleting the user deletes the identity.
    uid = user(store, "c@example.com")
    store.call(accounts_store.resolve_oidc_identity, ISSUER, "c", "c@example.com", None, NOW)
    store.call(lambda: User.delete().where(User.id == uid).execute())
    assert store.call(lambda: OidcIdentity.select().count()) == 0
