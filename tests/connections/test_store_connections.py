"""Connection rows on both engines: insert, lookup, status flags, use stamps and both CAS writes."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

import pytest

from bindify_appliance.errors import NotFoundError
from bindify_appliance.store import Store
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import list_events
from bindify_appliance.store.models import Connection, ConnectionEvent

from .helpers import NOW, add_user, set_user_disabled


def _new(user_id: str, n: int = 1, **kw: object) -> rows.NewConnection:
    values: dict[str, object] = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "user_id": user_id,
        "service": "linear",
        "auth_type": "oauth",
        "key_storage_mode": "managed",
        "secret1_hash": f"hash-{n}",
        "secret2_verifier": f"verifier-{n}",
        "encrypted_tokens": f"v1:blob-{n}",
        "key_fingerprint": "fp",
    }
    values.update(kw)
    return rows.NewConnection(**values)  # type: ignore[arg-type]


def _get(store: Store, cid: str) -> Connection:
    row = store.call(rows.get_connection, cid)
    assert row is not None
    return row


def _insert(store: Store, new: rows.NewConnection, **kw: Any) -> Connection:
    return store.call(functools.partial(rows.insert_connection, new, now=NOW, **kw))


def test_insert_get_list_and_default_labels(any_store: Store) -> None:
    uid = add_user(any_store)
    first = _insert(any_store, _new(uid, 1), default_label="Linear")
    second = _insert(any_store, _new(uid, 2), default_label="Linear")
    named = _insert(any_store, _new(uid, 3, label="Work"), default_label="Linear")
    assert (first.label, second.label, named.label) == ("Linear 1", "Linear 2", "Work")
    assert first.status == "active" and first.token_generation == 0
    assert _get(any_store, first.id).id == first.id
    assert any_store.call(rows.get_connection, first.id, "someone-else") is None
    listed = any_store.call(rows.list_for_user, uid)
    assert [c.id for c in listed] == [first.id, second.id, named.id]
    assert any_store.call(rows.count_for_service, uid, "linear") == 3
    # connection_created is recorded in the same transaction.
    events = any_store.call(list_events, first.id).items
    assert [(e.event_type, e.category, e.detail) for e in events] == [
        ("connection_created", "oauth", "service:linear, mode:managed")
    ]


def test_insert_refuses_inconsistent_rows(store: Store) -> None:
    uid = add_user(store)
    with pytest.raises(ValueError):
        _insert(store, _new(uid, auth_type="password"))
    with pytest.raises(ValueError):
        _insert(store, _new(uid, secret2_verifier=None))  # managed without verifier
    assert store.call(lambda: Connection.select().count()) == 0


def test_replace_deletes_the_old_connection_atomically(any_store: Store) -> None:
    uid = add_user(any_store)
    other = add_user(any_store, "other@example.com")
    old = _insert(any_store, _new(uid, 1))
    foreign = _insert(any_store, _new(other, 2))
    with pytest.raises(NotFoundError):
        _insert(any_store, _new(uid, 3), replace_id=foreign.id)
    assert any_store.call(rows.get_connection, foreign.id) is not None
    assert any_store.call(rows.get_connection, "00000000-0000-4000-8000-000000000003") is None
    new = _insert(any_store, _new(uid, 4), replace_id=old.id)
    assert any_store.call(rows.get_connection, old.id) is None
    kinds = {(e.event_type, e.detail) for e in any_store.call(list_events, new.id).items}
    assert ("reauth", f"Replaced connection {old.id}") in kinds


def test_lookup_by_hash_joins_the_owner_state(any_store: Store) -> None:
    uid = add_user(any_store)
    conn = _insert(any_store, _new(uid, 1))
    auth = any_store.call(rows.get_auth_by_secret1_hash, "hash-1")
    assert auth is not None
    assert (auth.id, auth.user_id, auth.service, auth.key_storage_mode) == (
        conn.id,
        uid,
        "linear",
        "managed",
    )
    assert not auth.disabled and not auth.needs_reconnect and not auth.user_disabled
    assert "blob" not in repr(auth) and "verifier" not in repr(auth)
    set_user_disabled(any_store, uid, True)
    auth = any_store.call(rows.get_auth_by_secret1_hash, "hash-1")
    assert auth is not None and auth.user_disabled and auth.disabled
    assert any_store.call(rows.get_auth_by_secret1_hash, "hash-unknown") is None


def test_lookup_reads_every_field_as_the_model_does(any_store: Store) -> None:
    # The lookup runs its SQL directly (the proxy's memo-miss path); every value must come back
    # exactly as a model read gives it, timestamps included, on either engine.
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid, 7)).id
    any_store.call(rows.set_needs_reconnect, cid, "refresh refused", NOW)
    any_store.call(
        lambda: (
            Connection.update(
                token_expires_at=NOW + timedelta(hours=1), token_generation=3, auth_mode="oauth"
            )
            .where(Connection.id == cid)
            .execute()
        )
    )
    any_store.call(rows.set_disabled, cid, True, NOW + timedelta(minutes=5))
    auth = any_store.call(rows.get_auth_by_secret1_hash, "hash-7")
    model = any_store.call(Connection.get_by_id, cid)
    assert auth is not None
    for name in (
        "id",
        "service",
        "status",
        "auth_type",
        "auth_mode",
        "application",
        "key_storage_mode",
        "secret2_verifier",
        "encrypted_tokens",
        "key_fingerprint",
        "token_generation",
        "token_expires_at",
        "needs_reconnect_at",
        "needs_reconnect_reason",
        "disabled_at",
    ):
        assert getattr(auth, name) == getattr(model, name), name
    assert auth.user_id == model.user_id == uid
    assert auth.token_expires_at == NOW + timedelta(hours=1) and auth.token_generation == 3
    assert auth.needs_reconnect_at is not None and auth.disabled


def test_status_follows_the_flags(any_store: Store) -> None:
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid)).id

    def status() -> tuple[str, str | None]:
        row = _get(any_store, cid)
        return row.status, row.needs_reconnect_reason

    assert any_store.call(rows.set_needs_reconnect, cid, "upstream rejected the key", NOW)
    assert status() == ("needs_reconnect", "upstream rejected the key")
    assert any_store.call(rows.set_needs_reconnect, cid, "refresh refused", NOW)
    assert status() == ("needs_reconnect", "refresh refused")
    assert any_store.call(rows.set_disabled, cid, True, NOW)
    assert status()[0] == "disabled"
    assert not any_store.call(rows.set_disabled, cid, True, NOW)  # already disabled
    assert any_store.call(rows.set_disabled, cid, False, NOW)
    assert status()[0] == "needs_reconnect"  # re-enabling keeps the other flag
    assert any_store.call(rows.set_disabled, cid, True, NOW)
    assert any_store.call(rows.clear_needs_reconnect, cid, NOW)
    assert status() == ("disabled", None)  # clearing keeps disabled
    assert any_store.call(rows.set_disabled, cid, False, NOW)
    assert status() == ("active", None)
    assert not any_store.call(rows.clear_needs_reconnect, cid, NOW)
    assert not any_store.call(rows.set_needs_reconnect, "missing", "x", NOW)
    categories = [e.category for e in any_store.call(list_events, cid).items]
    assert categories.count("disabled") == 2
    assert categories.count("needs_reconnect") == 1  # flagging twice records it once
    assert any_store.call(rows.set_label, cid, "Renamed", NOW)
    assert _get(any_store, cid).label == "Renamed"


def test_mark_used_writes_at_most_once_a_minute(any_store: Store) -> None:
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid)).id
    assert any_store.call(rows.mark_used, cid, NOW)
    assert not any_store.call(rows.mark_used, cid, NOW + timedelta(seconds=30))
    assert not any_store.call(rows.mark_used, cid, NOW + timedelta(seconds=59))
    assert _get(any_store, cid).last_used_at == NOW
    later = NOW + timedelta(seconds=60)
    assert any_store.call(rows.mark_used, cid, later)
    assert _get(any_store, cid).last_used_at == later
    assert not any_store.call(rows.mark_used, "missing", later)


def test_swap_tokens_exactly_one_of_two_writers_wins(any_store: Store) -> None:
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid)).id

    def swap(blob: str) -> bool:
        return rows.swap_tokens(
            cid, expected_generation=0, encrypted_tokens=blob, key_fingerprint="fp2", now=NOW
        )

    async def race() -> list[bool]:
        return list(
            await asyncio.gather(any_store.run(swap, "v1:first"), any_store.run(swap, "v1:second"))
        )

    results = asyncio.run(race())
    assert sorted(results) == [False, True]
    row = _get(any_store, cid)
    assert row.token_generation == 1
    assert row.encrypted_tokens == ("v1:first" if results[0] else "v1:second")
    # A writer that read generation 0 loses now; one that read 1 wins.
    assert not any_store.call(swap, "v1:stale")
    assert any_store.call(
        functools.partial(
            rows.swap_tokens,
            cid,
            expected_generation=1,
            encrypted_tokens="v1:third",
            key_fingerprint="fp3",
            now=NOW,
            refreshed=True,
        )
    )
    row = _get(any_store, cid)
    assert (row.token_generation, row.last_refreshed_at) == (2, NOW)


def test_replace_credentials_is_a_cas_too(any_store: Store) -> None:
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid)).id

    def replace(gen: int, n: int) -> bool:
        return rows.replace_credentials(
            cid,
            expected_generation=gen,
            secret1_hash=f"new-hash-{n}",
            secret2_verifier=f"new-verifier-{n}",
            encrypted_tokens=f"v1:new-{n}",
            key_fingerprint="fp",
            now=NOW,
        )

    assert any_store.call(replace, 0, 1)
    assert not any_store.call(replace, 0, 2)  # raced by the first
    assert any_store.call(rows.get_auth_by_secret1_hash, "hash-1") is None  # old URL gone
    auth = any_store.call(rows.get_auth_by_secret1_hash, "new-hash-1")
    assert auth is not None and auth.token_generation == 1
    assert "url_rotated" in [e.category for e in any_store.call(list_events, cid).items]


def test_delete_cascades_to_events(any_store: Store) -> None:
    uid = add_user(any_store)
    cid = _insert(any_store, _new(uid)).id
    assert not any_store.call(rows.delete_connection, cid, "someone-else")
    assert any_store.call(rows.delete_connection, cid, uid)
    assert any_store.call(rows.get_connection, cid) is None
    assert any_store.call(lambda: ConnectionEvent.select().count()) == 0
    assert not any_store.call(rows.delete_connection, cid)


def test_note_proxy_use_skips_deleted_connections(store: Store) -> None:
    uid = add_user(store)
    cid = _insert(store, _new(uid)).id

    def note(connection_id: str) -> None:
        rows.note_proxy_use(
            connection_id,
            user_id=uid,
            category="success",
            detail="linear:streamable-http:post",
            upstream_status=None,
            now=NOW,
        )

    store.call(note, cid)
    assert _get(store, cid).last_used_at == NOW
    store.call(note, "00000000-0000-4000-8000-999999999999")  # gone: no error, nothing written
    assert store.call(lambda: ConnectionEvent.select().count()) == 2


def test_service_list_reads_every_field_as_the_model_does(any_store: Store) -> None:
    # list_services runs its SQL directly (the registry re-reads it on a request's path).
    from bindify_appliance.store.models import Service
    from bindify_appliance.store.services import list_services

    def add(**kw: Any) -> None:
        any_store.call(lambda: Service.create(created_at=NOW, updated_at=NOW, **kw))

    add(id="zeta", name="Zeta", mcp_url="https://z.example/mcp", auth_json='{"type":"none"}')
    add(id="linear", oauth_client_id="app", oauth_client_secret_sealed="v1:x", builtin=True)
    add(id="acme", name="Acme", mcp_url="https://a.example/sse", transport="sse")
    direct = any_store.call(list_services)
    via_orm = any_store.call(lambda: list(Service.select().order_by(Service.id)))
    assert [s.id for s in direct] == ["acme", "linear", "zeta"]
    assert [s.__data__ for s in direct] == [s.__data__ for s in via_orm]
    assert direct[1].builtin is True and direct[0].builtin is False
    assert direct[0].created_at == NOW and not direct[0].is_dirty()


def test_a_refresh_committing_after_the_service_moved_keeps_the_flag(any_store: Store) -> None:
    from bindify_appliance.store import refresh as units

    user = add_user(any_store, "moved@example.com")
    cid = _insert(any_store, _new(user)).id
    other = _insert(any_store, _new(user, 2, auth_type="api_key", key_storage_mode="managed")).id
    assert any_store.call(units.claim_refresh, cid, 0, NOW)
    # The admin moves the service while the provider call is in flight (OAuth kind only).
    assert any_store.call(rows.flag_service_moved, "linear", ["oauth"], NOW) == 1
    outcome = any_store.call(
        functools.partial(
            units.commit_refresh,
            cid,
            expected_generation=0,
            base_payload={},
            seal=lambda r: ("v1:new-blob", "fp"),
            open_row=lambda r: {},
            token_expires_at=None,
            now=NOW + timedelta(seconds=1),
            detail="Refreshed",
        )
    )
    assert outcome.committed
    row = _get(any_store, cid)
    assert row.status == "needs_reconnect"
    assert row.needs_reconnect_reason == rows.SERVICE_MOVED_REASON
    assert _get(any_store, other).status == "active"  # another auth type: not moved
    events = any_store.call(lambda: list_events(cid, limit=10, cursor=None)).items
    assert [(e.category, e.detail) for e in events if e.category == "needs_reconnect"] == [
        ("needs_reconnect", rows.SERVICE_MOVED_REASON)
    ]
