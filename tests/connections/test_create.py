"""Creating connections and rotating their URLs: what is stored, what is refused, what opens."""

from __future__ import annotations

import asyncio
import base64
import functools
from pathlib import Path
from typing import Any

import pytest

from bindify_appliance.connections import (
    create_connection,
    credentials_match,
    open_payload,
    parse_presented_credentials,
    reseal_payload,
    rotate_credentials,
)
from bindify_appliance.connections.create import CreatedConnection, normalize_label
from bindify_appliance.context import AppContext
from bindify_appliance.crypto import (
    DecryptError,
    Keyring,
    KeyringError,
    MasterKey,
    generate_master_key,
    open_managed,
    open_sealed,
    secret1_lookup_hash,
    zero_knowledge_key,
)
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.services import ServiceDefinition, ServiceRegistry
from bindify_appliance.services.builtins import BUILTINS
from bindify_appliance.store import Store
from bindify_appliance.store import connections as rows
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import Connection, ConnectionEvent

from .helpers import BASE_URL, add_user, make_context, make_settings, migrated_store

LINEAR = BUILTINS["linear"]
ATLASSIAN = BUILTINS["atlassian"]
NOTION = BUILTINS["notion"]
OPEN = ServiceDefinition(id="open", name="Open", mcp_url="https://open.example/mcp", no_auth=True)
SSE = ServiceDefinition(
    id="legacy", name="Legacy", mcp_url="https://l.example/sse", transport="sse", no_auth=True
)
OAUTH = {
    "access_token": "lin_oauth_ACCESS_9f3k2",
    "refresh_token": "lin_REFRESH_77xq",
    "expires_at": 1_900_000_000,
}
API_KEY = {"api_key": "lin_api_SECRETKEY_5521"}


async def _create(ctx: AppContext, uid: str, **kw: Any) -> CreatedConnection:
    values: dict[str, Any] = {"service": LINEAR, "auth_type": "oauth", "payload": OAUTH}
    values.update(kw)
    return await create_connection(ctx, user_id=uid, **values)


def _row(store: Store, cid: str) -> Connection:
    row = store.call(rows.get_connection, cid)
    assert row is not None
    return row


def _count(store: Store) -> int:
    return store.call(lambda: Connection.select().count())


@pytest.mark.parametrize("mode", ["zero_knowledge", "managed"])
@pytest.mark.parametrize(("auth_type", "payload"), [("oauth", OAUTH), ("api_key", API_KEY)])
async def test_create_round_trip(
    ctx: AppContext, store: Store, mode: str, auth_type: str, payload: dict[str, Any]
) -> None:
    uid = add_user(store)
    created = await _create(ctx, uid, auth_type=auth_type, payload=payload, key_storage_mode=mode)
    row = created.connection
    creds = created.credentials
    assert created.secret_url == f"{BASE_URL}/mcp/linear/{creds.text}"
    assert created.api_key == f"bnd_live_{creds.text}"
    assert "bnd_live" not in repr(created) and creds.text not in repr(created)
    assert (row.service, row.auth_type, row.key_storage_mode, row.status) == (
        "linear",
        auth_type,
        mode,
        "active",
    )
    assert row.label == "Linear 1"
    assert row.secret1_hash == secret1_lookup_hash(creds)
    keyring = ctx.keys.keyring
    opened = open_payload(row, creds, keyring)
    assert opened["access_token" if auth_type == "oauth" else "api_key"] == next(
        iter(payload.values())
    )
    if mode == "managed":
        assert row.secret2_verifier and row.key_fingerprint == keyring.active.fingerprint
        assert open_payload(row, None, keyring) == opened  # background jobs need no URL
    else:
        assert row.secret2_verifier is None and row.key_fingerprint == ""
        with pytest.raises(DecryptError):
            open_payload(row, None, keyring)
    if auth_type == "oauth":
        assert (
            row.token_expires_at is not None and row.token_expires_at.timestamp() == 1_900_000_000
        )
        assert (row.last_refreshed_at is not None) == (mode == "managed")
    assert credentials_match(row, creds)


async def test_auth_none_still_seals_so_secret2_is_checked(ctx: AppContext, store: Store) -> None:
    uid = add_user(store)
    created = await create_connection(ctx, user_id=uid, service=OPEN, auth_type="none")
    row = created.connection
    assert row.encrypted_tokens and open_payload(row, created.credentials, ctx.keys.keyring) == {}
    sse = await create_connection(ctx, user_id=uid, service=SSE, auth_type="none")
    assert sse.secret_url.endswith(f"/mcp/legacy/{sse.credentials.text}/sse")
    with pytest.raises(HTTPFacingError) as err:
        await create_connection(ctx, user_id=uid, service=OPEN, auth_type="none", payload=API_KEY)
    assert err.value.status == 400


def _all_rows(store: Store, table: str) -> list[tuple[object, ...]]:
    return list(run_sql(store.db, f'SELECT * FROM "{table}"').fetchall())


def _needles(created: list[CreatedConnection], secrets: list[str]) -> list[bytes]:
    out: list[bytes] = []
    for c in created:
        creds = c.credentials
        out += [
            creds.secret1,
            creds.secret2,
            creds.text.encode(),
            c.api_key.encode(),
            c.secret_url.encode(),
        ]
        out += [creds.secret1_b64.encode(), creds.secret2_b64.encode()]
        out += [creds.secret1.hex().encode(), creds.secret2.hex().encode()]
        out += [base64.b64encode(creds.secret1), base64.b64encode(creds.secret2)]
        out.append(zero_knowledge_key(creds.secret2_b64))
    out += [s.encode() for s in secrets]
    return out


async def test_the_database_holds_no_secret(ctx: AppContext, store: Store, tmp_path: Path) -> None:
    uid = add_user(store)
    created = [
        await _create(ctx, uid, key_storage_mode="zero_knowledge"),
        await _create(ctx, uid, key_storage_mode="managed"),
        await _create(ctx, uid, auth_type="api_key", payload=API_KEY, key_storage_mode="managed"),
        await _create(ctx, uid, auth_type="api_key", payload=API_KEY),
    ]
    secrets = [str(OAUTH["access_token"]), str(OAUTH["refresh_token"]), API_KEY["api_key"]]
    secrets += [k.key for k in ctx.keys.keyring]  # master keys never reach the database either
    needles = _needles(created, secrets)
    # Every column of every row of every table.
    for table in store.db.get_tables():
        for record in store.call(functools.partial(_all_rows, store, table)):
            for value in record:
                blob = value if isinstance(value, bytes) else str(value).encode()
                for needle in needles:
                    assert needle not in blob, f"a secret is stored in {table}"
    # The raw database file and its write-ahead log.
    files = [tmp_path / "bindify.db", tmp_path / "bindify.db-wal"]
    assert (tmp_path / "bindify.db-wal").exists()
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a secret is in {path.name}"
    store.checkpoint()
    data = (tmp_path / "bindify.db").read_bytes()
    assert all(needle not in data for needle in needles)


async def test_a_blob_copied_to_another_row_or_field_does_not_open(
    ctx: AppContext, store: Store
) -> None:
    uid = add_user(store)
    a = await _create(ctx, uid, key_storage_mode="managed")
    b = await _create(ctx, uid, key_storage_mode="managed")
    za = await _create(ctx, uid)
    keyring = ctx.keys.keyring
    blob_a = a.connection.encrypted_tokens
    zblob = za.connection.encrypted_tokens
    assert blob_a is not None and zblob is not None
    store.call(
        lambda: (
            Connection.update(encrypted_tokens=blob_a)
            .where(Connection.id == b.connection.id)
            .execute()
        )
    )
    with pytest.raises(DecryptError):
        open_payload(_row(store, b.connection.id), None, keyring)
    with pytest.raises(DecryptError):  # same row, another column
        open_managed(
            keyring, keyring.active.fingerprint, a.connection.id, blob_a, field="dcr_registration"
        )
    # A zero-knowledge blob under another row id, even with the right secret2.
    key = zero_knowledge_key(za.credentials.secret2_b64)
    with pytest.raises(DecryptError):
        open_sealed(key, zblob, row=a.connection.id, field="encrypted_tokens")
    assert open_sealed(key, zblob, row=za.connection.id, field="encrypted_tokens")  # control


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"key_storage_mode": "plain"}, "key_storage_mode"),
        ({"key_storage_mode": "Managed"}, "key_storage_mode"),
        ({"key_storage_mode": 1}, "key_storage_mode"),
        ({"label": ""}, "label"),
        ({"label": "   "}, "label"),
        ({"label": "x" * 101}, "label"),
        ({"label": 7}, "label"),
        ({"label": "tab\there"}, "label"),
        ({"auth_type": "none"}, "auth_type"),
        ({"service": NOTION, "auth_type": "api_key", "payload": API_KEY}, "auth_type"),
        ({"auth_type": "api_key", "payload": {"api_key": ""}}, "api_key"),
        ({"auth_type": "api_key", "payload": {"api_key": "a\r\nX-Evil: 1"}}, "api_key"),
        ({"auth_type": "api_key", "payload": {"api_key": "k", "other": 1}}, "api_key"),
        ({"auth_type": "api_key", "payload": None}, "api_key"),
        ({"payload": {"refresh_token": "r"}}, "access_token"),
        ({"payload": {"access_token": "a", "expires_at": "soon"}}, "expires_at"),
        ({"payload": {"access_token": "a", "expires_at": float("inf")}}, "expires_at"),
        ({"payload": {"access_token": "a", "nested": {"x": 1}}}, "payload"),
        ({"auth_mode": "personal"}, "auth_mode"),
        (
            {"service": ATLASSIAN, "auth_type": "api_key", "payload": API_KEY, "auth_mode": "root"},
            "auth_mode",
        ),
        (
            {
                "service": ATLASSIAN,
                "auth_type": "api_key",
                "payload": API_KEY,
                "application": "bitbucket",
            },
            "application",
        ),
        ({"application": "jira"}, "application"),
    ],
)
async def test_bad_input_is_400_and_stores_nothing(
    ctx: AppContext, store: Store, kw: dict[str, Any], field: str
) -> None:
    uid = add_user(store)
    with pytest.raises(HTTPFacingError) as err:
        await _create(ctx, uid, **kw)
    assert (err.value.status, err.value.code, err.value.field) == (400, "invalid_request", field)
    assert "lin_" not in str(err.value) and "X-Evil" not in str(err.value)
    assert _count(store) == 0
    assert store.call(lambda: ConnectionEvent.select().count()) == 0


async def test_labels_modes_and_applications(ctx: AppContext, store: Store) -> None:
    uid = add_user(store)
    c = await _create(ctx, uid, label="  Work account  ")
    assert c.connection.label == "Work account"
    assert (await _create(ctx, uid, label="x" * 100)).connection.label == "x" * 100
    assert (await _create(ctx, uid)).connection.label == "Linear 3"
    atl = await _create(
        ctx,
        uid,
        service=ATLASSIAN,
        auth_type="api_key",
        payload=API_KEY,
        auth_mode="service_account",
        application="jira",
    )
    assert (atl.connection.auth_mode, atl.connection.application) == ("service_account", "jira")
    assert normalize_label(" a ") == "a"


async def test_replace_a_connection(ctx: AppContext, store: Store) -> None:
    uid = add_user(store)
    other = add_user(store, "other@example.com")
    old = await _create(ctx, uid)
    theirs = await _create(ctx, other)
    with pytest.raises(HTTPFacingError) as err:
        await _create(ctx, uid, replace=theirs.connection.id)
    assert (err.value.status, err.value.field) == (404, "replace")
    new = await _create(ctx, uid, replace=old.connection.id)
    assert store.call(rows.get_connection, old.connection.id) is None
    assert store.call(rows.get_connection, new.connection.id) is not None


async def test_rotate_managed_url(ctx: AppContext, store: Store) -> None:
    uid = add_user(store)
    registry = ServiceRegistry(ctx.settings, store, ctx.clock)
    created = await _create(ctx, uid, key_storage_mode="managed")
    old = created.credentials
    rotated = await rotate_credentials(ctx, registry, created.connection.id, user_id=uid)
    row = rotated.connection
    assert rotated.credentials != old
    assert rotated.secret_url == f"{BASE_URL}/mcp/linear/{rotated.credentials.text}"
    assert credentials_match(row, rotated.credentials) and not credentials_match(row, old)
    assert store.call(rows.get_auth_by_secret1_hash, secret1_lookup_hash(old)) is None
    assert open_payload(row, None, ctx.keys.keyring)["access_token"] == OAUTH["access_token"]
    assert row.token_generation == 1
    # Given credentials must be this connection's.
    with pytest.raises(HTTPFacingError) as err:
        await rotate_credentials(ctx, registry, row.id, user_id=uid, current=old)
    assert (err.value.status, err.value.field) == (400, "credentials")
    with pytest.raises(HTTPFacingError) as err:
        await rotate_credentials(ctx, registry, row.id, user_id="someone-else")
    assert err.value.status == 404


async def test_rotate_zero_knowledge_needs_the_current_credentials(
    ctx: AppContext, store: Store
) -> None:
    uid = add_user(store)
    registry = ServiceRegistry(ctx.settings, store, ctx.clock)
    created = await _create(ctx, uid, auth_type="api_key", payload=API_KEY)
    cid = created.connection.id
    with pytest.raises(HTTPFacingError) as err:
        await rotate_credentials(ctx, registry, cid, user_id=uid)
    assert (err.value.status, err.value.code) == (409, "conflict")
    stranger = await _create(ctx, uid)
    with pytest.raises(HTTPFacingError) as err:
        await rotate_credentials(ctx, registry, cid, user_id=uid, current=stranger.credentials)
    assert err.value.field == "credentials"
    assert _row(store, cid).secret1_hash == secret1_lookup_hash(created.credentials)
    current = parse_presented_credentials(api_key=created.api_key)
    rotated = await rotate_credentials(ctx, registry, cid, user_id=uid, current=current)
    row = rotated.connection
    assert open_payload(row, rotated.credentials, ctx.keys.keyring) == API_KEY
    with pytest.raises(DecryptError):
        open_payload(row, created.credentials, ctx.keys.keyring)
    assert (
        store.call(rows.get_auth_by_secret1_hash, secret1_lookup_hash(created.credentials)) is None
    )


async def test_rotate_retries_when_a_refresh_wins_the_race(
    ctx: AppContext, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = add_user(store)
    registry = ServiceRegistry(ctx.settings, store, ctx.clock)
    created = await _create(ctx, uid, key_storage_mode="managed")
    cid = created.connection.id
    real = rows.replace_credentials
    calls = 0

    def racing(*args: Any, **kw: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:  # a refresh commits between our read and our write
            blob, fp = reseal_payload(
                _row_direct(cid), {"access_token": "fresh"}, None, ctx.keys.keyring
            )
            assert rows.swap_tokens(
                cid,
                expected_generation=0,
                encrypted_tokens=blob,
                key_fingerprint=fp,
                now=ctx.clock.now(),
            )
        return real(*args, **kw)

    def _row_direct(connection_id: str) -> Connection:
        return Connection.get_by_id(connection_id)

    monkeypatch.setattr(rows, "replace_credentials", racing)
    rotated = await rotate_credentials(ctx, registry, cid, user_id=uid)
    assert calls == 2
    row = rotated.connection
    assert row.token_generation == 2
    assert open_payload(row, None, ctx.keys.keyring) == {"access_token": "fresh"}  # not overwritten


async def test_parse_presented_credentials(ctx: AppContext, store: Store) -> None:
    created = await _create(ctx, add_user(store))
    text = created.credentials.text
    assert parse_presented_credentials(credentials=text) == created.credentials
    assert parse_presented_credentials(api_key="Bearer " + created.api_key) == created.credentials
    for kw in (
        {},
        {"credentials": text, "api_key": created.api_key},
        {"credentials": text[:-1]},
        {"api_key": "bnd_live_x"},
        {"credentials": 5},
    ):
        with pytest.raises(HTTPFacingError) as err:
            parse_presented_credentials(**kw)
        assert err.value.status == 400 and text not in str(err.value)


async def test_managed_payload_needs_its_master_key(tmp_path: Path) -> None:
    # Sealed under key A; an instance holding only key B cannot open it (and says which key).
    url = f"sqlite:///{tmp_path}/bindify.db"
    store = migrated_store(url)
    try:
        ctx = make_context(make_settings(tmp_path, url), store)
        created = await _create(ctx, add_user(store), key_storage_mode="managed")
        other = Keyring([MasterKey(generate_master_key())])
        with pytest.raises(KeyringError):
            open_payload(created.connection, None, other)
        both = Keyring([*ctx.keys.keyring, *other])
        assert open_payload(created.connection, None, both)["access_token"] == OAUTH["access_token"]
        blob, fp = reseal_payload(
            created.connection,
            OAUTH,
            None,
            Keyring([*ctx.keys.keyring, MasterKey(other.active.key)]),
        )
        assert fp == other.active.fingerprint and blob != created.connection.encrypted_tokens
    finally:
        store.close()


async def test_concurrent_creations_are_independent(ctx: AppContext, store: Store) -> None:
    uid = add_user(store)
    made = await asyncio.gather(*(_create(ctx, uid, key_storage_mode="managed") for _ in range(8)))
    assert len({c.credentials.text for c in made}) == 8
    assert _count(store) == 8
