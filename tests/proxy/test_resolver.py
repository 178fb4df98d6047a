"""ConnectionResolver: credential forms, every refusal kind, the memo, the failure and use hooks.

Real SQLite files and real crypto; time is a ManualClock so "within 1 s" is tested without sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from connections.helpers import (
    BASE_URL,
    NOW,
    add_user,
    make_context,
    make_settings,
    master_keys_json,
    migrated_store,
    set_user_disabled,
)

from bindify_appliance.clock import ManualClock
from bindify_appliance.connections import CreatedConnection, create_connection, rotate_credentials
from bindify_appliance.context import AppContext
from bindify_appliance.crypto import Credentials, secret1_lookup_hash
from bindify_appliance.proxy.resolver import (
    MSG_PAT_REFUSED,
    MSG_UNKNOWN_CREDENTIAL,
    ConnectionResolver,
)
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.services import ServiceRegistry
from bindify_appliance.store import Store
from bindify_appliance.store import connections as rows
from bindify_appliance.store.connections import ConnectionAuth
from bindify_appliance.store.events import list_events

TOKEN = "lin_oauth_TOKEN_abc123"
OAUTH = {"access_token": TOKEN, "refresh_token": "lin_REFRESH_xyz", "expires_at": 1_900_000_000}
KEY = {"api_key": "upstream_KEY_42"}


@dataclass
class Harness:
    ctx: AppContext
    store: Store
    clock: ManualClock
    registry: ServiceRegistry
    resolver: ConnectionResolver
    uid: str

    async def create(
        self, service: str = "linear", auth_type: str = "oauth", **kw: Any
    ) -> CreatedConnection:
        definition = await self.registry.get(service)
        assert definition is not None
        payload = kw.pop("payload", OAUTH if auth_type == "oauth" else KEY)
        return await create_connection(
            self.ctx,
            user_id=kw.pop("user_id", self.uid),
            service=definition,
            auth_type=auth_type,
            payload=None if auth_type == "none" else payload,
            **kw,
        )

    async def path(self, service: str, creds: Credentials | str) -> ProxyTarget:
        text = creds.text if isinstance(creds, Credentials) else creds
        return await self.resolver.resolve(service, text, form="path")

    async def refusal(self, service: str, credential: str, form: str = "path") -> ProxyRefusal:
        with pytest.raises(ProxyRefusal) as err:
            await self.resolver.resolve(service, credential, form=form)  # type: ignore[arg-type]
        return err.value


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    url = f"sqlite:///{tmp_path}/bindify.db"
    store = migrated_store(url)
    clock = ManualClock(NOW.timestamp())
    ctx = make_context(make_settings(tmp_path, url), store, clock)
    registry = ServiceRegistry(ctx.settings, store, clock)
    yield Harness(ctx, store, clock, registry, ConnectionResolver(ctx, registry), add_user(store))
    store.close()


# -- happy paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zero_knowledge", "managed"])
async def test_both_credential_forms_resolve(h: Harness, mode: str) -> None:
    c = await h.create(key_storage_mode=mode)
    target = await h.path("linear", c.credentials)
    assert target.connection_id == c.connection.id and target.user_id == h.uid
    assert (target.service_id, target.upstream_url, target.transport, target.auth_type) == (
        "linear",
        "https://mcp.linear.app/mcp",
        "streamable-http",
        "oauth",
    )
    assert dict(target.inject_headers) == {"Authorization": f"Bearer {TOKEN}"}
    assert dict(target.inject_query) == {}
    assert target.reconnect_url == f"{BASE_URL}/connections/{c.connection.id}"
    assert TOKEN not in repr(target)
    text = c.credentials.text
    for header in (c.api_key, f"Bearer {c.api_key}", f"bearer  {c.api_key}", f"bnd_test_{text}"):
        by_key = await h.resolver.resolve("linear", header, form="api_key")
        assert by_key.connection_id == c.connection.id
        assert by_key.inject_headers == target.inject_headers


async def test_injection_follows_the_service_rule(h: Harness) -> None:
    figma = await h.create("figma", "api_key")
    assert dict((await h.path("figma", figma.credentials)).inject_headers) == {
        "X-Figma-Token": KEY["api_key"]
    }
    linear = await h.create("linear", "api_key")
    assert dict((await h.path("linear", linear.credentials)).inject_headers) == {
        "Authorization": f"Bearer {KEY['api_key']}"
    }
    personal = await h.create("atlassian", "api_key", auth_mode="personal")
    assert dict((await h.path("atlassian", personal.credentials)).inject_headers) == {
        "Authorization": f"Basic {KEY['api_key']}"
    }
    robot = await h.create("atlassian", "api_key", auth_mode="service_account")
    assert (
        (await h.path("atlassian", robot.credentials))
        .inject_headers["Authorization"]
        .startswith("Bearer ")
    )
    base = {"name": "Acme", "mcp_url": "https://mcp.acme.example/mcp"}
    await h.registry.create({**base, "id": "acme-q", "auth": {"type": "api_key", "query": "key"}})
    await h.registry.create(
        {**base, "id": "acme-open", "auth": {"type": "none"}, "transport": "sse"}
    )
    q = await h.create("acme-q", "api_key")
    target = await h.path("acme-q", q.credentials)
    assert (
        dict(target.inject_query) == {"key": KEY["api_key"]} and dict(target.inject_headers) == {}
    )
    open_ = await h.create("acme-open", "none")
    target = await h.path("acme-open", open_.credentials)
    assert target.auth_type == "none" and target.transport == "sse"
    assert dict(target.inject_headers) == {} and dict(target.inject_query) == {}


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "form"),
    [
        ("short", "path"),
        ("A" * 85 + "+", "path"),
        ("A" * 87, "path"),
        ("", "api_key"),
        ("   ", "api_key"),
        ("Basic dXNlcjpwYXNz", "api_key"),
        ("Bearer", "api_key"),
        ("bnd_live_short", "api_key"),
        ("bnd_prod_" + "A" * 86, "api_key"),
    ],
)
async def test_malformed(h: Harness, credential: str, form: str) -> None:
    refusal = await h.refusal("linear", credential, form)
    assert refusal.kind == "malformed"
    if len(credential.strip()) > 8:  # anything secret-like is never echoed
        assert credential.strip() not in refusal.message


async def test_personal_tokens_get_a_clear_message(h: Harness) -> None:
    pat = "bndpat_" + "x" * 43
    for value in (pat, f"Bearer {pat}"):
        refusal = await h.refusal("linear", value, "api_key")
        assert (refusal.kind, refusal.message) == ("malformed", MSG_PAT_REFUSED)
        assert pat not in refusal.message


async def test_unknown_service(h: Harness) -> None:
    c = await h.create()
    for sid in ("nope", "Linear", "../linear"):
        assert (await h.refusal(sid, c.credentials.text)).kind == "unknown_service"


@pytest.mark.parametrize("mode", ["zero_knowledge", "managed"])
async def test_every_not_found_is_one_refusal(h: Harness, mode: str) -> None:
    c = await h.create(key_storage_mode=mode)
    creds = c.credentials
    stranger = Credentials(b"\x07" * 32, b"\x08" * 32)
    wrong_half = Credentials(creds.secret1, b"\x09" * 32)  # Q3: right first half, wrong second
    refusals = [
        await h.refusal("linear", stranger.text),
        await h.refusal("linear", wrong_half.text),
        await h.refusal("linear", f"bnd_live_{wrong_half.text}", "api_key"),
        await h.refusal("github", creds.text),  # valid credential, another service
    ]
    assert {(r.kind, r.message) for r in refusals} == {
        ("unknown_credential", MSG_UNKNOWN_CREDENTIAL)
    }
    for r in refusals:
        assert creds.text not in r.message and creds.secret1_b64 not in r.message


async def test_disabled_connection_or_owner(h: Harness) -> None:
    c = await h.create(key_storage_mode="managed")
    h.store.call(rows.set_disabled, c.connection.id, True, NOW)
    h.resolver.forget(c.connection.id)
    assert (await h.refusal("linear", c.credentials.text)).kind == "disabled"
    # Without the whole credential nobody learns that the connection exists and is disabled.
    wrong = Credentials(c.credentials.secret1, b"\x01" * 32)
    assert (await h.refusal("linear", wrong.text)).kind == "unknown_credential"
    h.store.call(rows.set_disabled, c.connection.id, False, NOW)
    set_user_disabled(h.store, h.uid, True)
    h.resolver.forget(c.connection.id)
    assert (await h.refusal("linear", c.credentials.text)).kind == "disabled"
    set_user_disabled(h.store, h.uid, False)
    h.resolver.forget(c.connection.id)
    assert (await h.path("linear", c.credentials)).connection_id == c.connection.id


async def test_needs_reconnect_is_reported_and_not_cleared_by_resolution(h: Harness) -> None:
    c = await h.create("github", "api_key")
    cid = c.connection.id
    h.store.call(rows.set_needs_reconnect, cid, "upstream rejected the key", NOW)
    h.resolver.forget(cid)
    refusal = await h.refusal("github", c.credentials.text)
    assert refusal.kind == "needs_reconnect"
    assert refusal.reconnect_url == f"{BASE_URL}/connections/{cid}"
    assert (
        refusal.reconnect_url in refusal.message and "upstream rejected the key" in refusal.message
    )
    await h.refusal("github", c.credentials.text)
    row = h.store.call(rows.get_connection, cid)
    assert row is not None and row.status == "needs_reconnect"  # Q4: still flagged


@pytest.mark.allow_error_logs
async def test_missing_master_key_is_an_internal_refusal(
    h: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = await h.create(key_storage_mode="managed")
    other = make_context(
        make_settings(
            tmp_path,
            f"sqlite:///{tmp_path}/bindify.db",
            master_keys=master_keys_json("another-key"),
        ),
        h.store,
        h.clock,
    )
    resolver = ConnectionResolver(other, h.registry)
    with caplog.at_level(logging.ERROR), pytest.raises(ProxyRefusal) as err:
        await resolver.resolve("linear", c.credentials.text, form="path")
    assert err.value.kind == "upstream_unavailable"
    record = next(r for r in caplog.records if r.levelno >= logging.ERROR)
    assert record.__dict__["key_fingerprint"] == c.connection.key_fingerprint


# -- the memo -------------------------------------------------------------------------------


async def test_delete_disable_and_rotate_take_effect_within_one_second(h: Harness) -> None:
    deleted = await h.create()
    disabled = await h.create()
    rotated = await h.create(key_storage_mode="managed")
    for c in (deleted, disabled, rotated):
        await h.path("linear", c.credentials)  # now memoised
    h.store.call(rows.delete_connection, deleted.connection.id)
    h.store.call(rows.set_disabled, disabled.connection.id, True, NOW)
    new = await rotate_credentials(h.ctx, h.registry, rotated.connection.id, user_id=h.uid)
    h.clock.advance(0.5)
    await h.path("linear", deleted.credentials)  # another instance's change: memo still holds it
    h.clock.advance(0.5)
    assert (await h.refusal("linear", deleted.credentials.text)).kind == "unknown_credential"
    assert (await h.refusal("linear", disabled.credentials.text)).kind == "disabled"
    assert (await h.refusal("linear", rotated.credentials.text)).kind == "unknown_credential"
    assert (await h.path("linear", new.credentials)).connection_id == rotated.connection.id


async def test_an_opened_managed_credential_serves_only_its_row_service_and_secret2(
    h: Harness,
) -> None:
    await h.registry.create(
        {
            "id": "acme",
            "name": "Acme",
            "mcp_url": "https://a.example/mcp",
            "auth": {"type": "api_key", "header": "X-Key"},
        }
    )
    c = await h.create("acme", "api_key", key_storage_mode="managed")
    first = await h.path("acme", c.credentials)
    assert await h.path("acme", c.credentials) is first  # opened once for the memo entry
    # secret2 is verified on every request, memo or not.
    wrong = Credentials(c.credentials.secret1, b"\x09" * 32)
    assert (await h.refusal("acme", wrong.text)).kind == "unknown_credential"
    # A changed service definition is a new object: the target is built anew from it.
    await h.registry.update("acme", {"name": "Acme renamed"})
    changed = await h.path("acme", c.credentials)
    assert changed is not first
    assert dict(changed.inject_headers) == {"X-Key": KEY["api_key"]}
    # The opened credential dies with its memo entry (≤ 1 s) and with forget().
    h.clock.advance(1.0)
    assert await h.path("acme", c.credentials) is not changed
    # A changed injection is a new destination for the credential: nothing is sent until the
    # member reconnects (DESIGN §9), memo or not: this harness does not wire the registry's
    # on_moved hook, like another instance, and the memo still holds the pre-change row.
    await h.path("acme", c.credentials)
    await h.registry.update("acme", {"auth": {"type": "api_key", "header": "X-Other"}})
    assert (await h.refusal("acme", c.credentials.text)).kind == "needs_reconnect"


async def test_a_zero_knowledge_credential_is_opened_per_request(h: Harness) -> None:
    c = await h.create("figma", "api_key", key_storage_mode="zero_knowledge")
    first = await h.path("figma", c.credentials)
    second = await h.path("figma", c.credentials)
    assert first is not second and first.inject_headers == second.inject_headers


async def test_forget_applies_this_instances_changes_at_once(h: Harness) -> None:
    c = await h.create()
    await h.path("linear", c.credentials)
    h.store.call(rows.delete_connection, c.connection.id)
    h.resolver.forget(c.connection.id)
    assert (await h.refusal("linear", c.credentials.text)).kind == "unknown_credential"


async def test_concurrent_misses_share_one_query(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await h.create()
    await h.registry.get("linear")  # warm the registry so only connection lookups are counted
    calls: list[Any] = []
    real = h.store.run

    async def counting(fn: Any, *args: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(h.store, "run", counting)
    targets = await asyncio.gather(*(h.path("linear", c.credentials) for _ in range(25)))
    assert {t.connection_id for t in targets} == {c.connection.id}
    assert calls == [rows.get_auth_by_secret1_hash]
    await h.path("linear", c.credentials)
    assert len(calls) == 1  # memo hit
    h.clock.advance(1.0)
    await h.path("linear", c.credentials)
    assert calls.count(rows.get_auth_by_secret1_hash) == 2


async def test_the_memo_is_bounded(h: Harness) -> None:
    resolver = ConnectionResolver(h.ctx, h.registry, memo_size=3)
    made = [await h.create() for _ in range(5)]
    for c in made:
        await resolver.resolve("linear", c.credentials.text, form="path")
    for i in range(5):  # unknown credentials are memoised too (bounded all the same)
        with pytest.raises(ProxyRefusal):
            await resolver.resolve(
                "linear", Credentials(bytes([i]) * 32, b"\0" * 32).text, form="path"
            )
    assert len(resolver._memo) <= 3


async def test_a_memo_hit_is_only_a_live_entry_read_under_the_current_definition(
    h: Harness,
) -> None:
    """`RowLookups.hit` (the resolver's no-await path) never serves a stale entry."""
    c = await h.create()
    target = await h.path("linear", c.credentials)
    lookups = h.resolver._rows
    key = secret1_lookup_hash(c.credentials)
    service = await h.registry.get("linear")
    assert service is not None
    entry = lookups.hit(key, service)
    assert entry is not None and entry.conn is not None
    assert entry.conn.id == target.connection_id
    # Another definition object (the registry reloaded or the service changed): a miss.
    assert lookups.hit(key, dataclasses.replace(service)) is None
    h.clock.advance(1.0)  # the entry's second is over
    assert lookups.hit(key, service) is None
    await h.path("linear", c.credentials)
    h.resolver.forget(target.connection_id)
    assert lookups.hit(key, service) is None


def test_memo_ttl_is_bounded(h: Harness) -> None:
    with pytest.raises(ValueError):
        ConnectionResolver(h.ctx, h.registry, memo_ttl=5)


# -- after the upstream answered ------------------------------------------------------------


async def test_rejected_api_key_flags_the_connection(h: Harness) -> None:
    c = await h.create("github", "api_key")
    target = await h.path("github", c.credentials)
    with pytest.raises(ProxyRefusal) as err:
        await h.resolver.after_upstream_auth_failure(target, 401)
    refusal = err.value
    link = f"{BASE_URL}/connections/{c.connection.id}"
    assert refusal.kind == "needs_reconnect" and refusal.reconnect_url == link
    assert "Update your key" in refusal.message and link in refusal.message
    row = h.store.call(rows.get_connection, c.connection.id)
    assert row is not None and row.status == "needs_reconnect"
    assert row.needs_reconnect_reason == "upstream rejected the key"
    events = h.store.call(list_events, c.connection.id).items
    assert any(
        (e.event_type, e.category, e.upstream_status) == ("auth", "upstream_rejected", 401)
        for e in events
    )
    # Seen at once on this instance, without waiting for the memo.
    assert (await h.refusal("github", c.credentials.text)).kind == "needs_reconnect"


async def test_oauth_without_a_refresher_needs_reconnecting(h: Harness) -> None:
    c = await h.create("github", "oauth")
    target = await h.path("github", c.credentials)
    with pytest.raises(ProxyRefusal) as err:
        await h.resolver.after_upstream_auth_failure(target, 403)
    assert err.value.kind == "needs_reconnect"


class StubRefresher:
    def __init__(self, new_token: str | None) -> None:
        self.new_token = new_token
        self.before: list[str] = []
        self.after: list[tuple[str, str]] = []

    async def fresh_payload(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any]:
        self.before.append(conn.id)
        return payload

    async def refresh_after_rejection(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any] | None:
        self.after.append((conn.id, payload["access_token"]))
        if self.new_token is None:
            return None
        return {**payload, "access_token": self.new_token}


async def test_the_refresher_seam(h: Harness) -> None:
    c = await h.create(key_storage_mode="zero_knowledge")
    refresher = StubRefresher("lin_oauth_NEW")
    resolver = ConnectionResolver(h.ctx, h.registry, refresher=refresher)
    target = await resolver.resolve("linear", c.credentials.text, form="path")
    assert refresher.before == [c.connection.id]
    retry = await resolver.after_upstream_auth_failure(target, 401)
    assert refresher.after == [(c.connection.id, TOKEN)]
    assert dict(retry.inject_headers) == {"Authorization": "Bearer lin_oauth_NEW"}
    # A refused refresh ends in needs-reconnect.
    refusing = ConnectionResolver(h.ctx, h.registry, refresher=StubRefresher(None))
    target = await refusing.resolve("linear", c.credentials.text, form="path")
    with pytest.raises(ProxyRefusal) as err:
        await refusing.after_upstream_auth_failure(target, 401)
    assert err.value.kind == "needs_reconnect"


async def test_record_use_writes_metadata_throttled(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await h.create("github", "api_key")
    cid = c.connection.id
    target = await h.path("github", c.credentials)
    await h.resolver.record_use(target, upstream_status=200, kind="streamable-http:post")
    row = h.store.call(rows.get_connection, cid)
    assert row is not None and row.last_used_at == NOW
    writes: list[Any] = []
    real = h.store.run

    async def counting(fn: Any, *args: Any) -> Any:
        writes.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(h.store, "run", counting)
    await h.resolver.record_use(target, upstream_status=200, kind="streamable-http:post")
    assert writes == []  # throttled in-process
    await h.resolver.record_use(target, upstream_status=500, kind="streamable-http:post")
    await h.resolver.record_use(target, upstream_status=405, kind="streamable-http:get")
    h.clock.advance(61)
    await h.resolver.record_use(target, upstream_status=200, kind="streamable-http:post")
    row = h.store.call(rows.get_connection, cid)
    assert row is not None and row.last_used_at == h.clock.now()
    events = {
        (e.event_type, e.category, e.detail, e.upstream_status)
        for e in h.store.call(list_events, cid).items
    }
    assert ("proxy_request", "success", "github:streamable-http:post", None) in events
    assert ("proxy_request", "upstream_error", "github:streamable-http:post", 500) in events
    # GitHub answers GET with 405 by design: recorded as expected, not as an error.
    assert ("proxy_request", "expected", "github:streamable-http:get", 405) in events


async def test_record_use_survives_a_deleted_connection(h: Harness) -> None:
    c = await h.create()
    target = await h.path("linear", c.credentials)
    h.store.call(rows.delete_connection, c.connection.id)
    await h.resolver.record_use(target, upstream_status=200, kind="weird kind!")


async def test_a_service_whose_auth_changed_needs_reconnecting(h: Harness) -> None:
    await h.registry.create(
        {
            "id": "acme",
            "name": "Acme",
            "mcp_url": "https://a.example/mcp",
            "auth": {"type": "api_key", "header": "X-Key"},
        }
    )
    c = await h.create("acme", "api_key")
    await h.registry.update("acme", {"auth": {"type": "none"}})
    h.resolver.forget(c.connection.id)
    refusal = await h.refusal("acme", c.credentials.text)
    assert refusal.kind == "needs_reconnect"


async def test_no_credential_or_secret_reaches_a_log(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await h.create("github", "api_key", key_storage_mode="managed")
    creds = c.credentials
    target = await h.path("github", creds)
    await h.refusal("github", Credentials(creds.secret1, b"\x05" * 32).text)
    await h.refusal("linear", creds.text)
    await h.refusal("github", "bndpat_" + "y" * 43, "api_key")
    await h.resolver.record_use(target, upstream_status=500, kind="streamable-http:post")
    with pytest.raises(ProxyRefusal):
        await h.resolver.after_upstream_auth_failure(target, 401)
    secrets = [creds.text, creds.secret1_b64, creds.secret2_b64, c.api_key, KEY["api_key"]]
    assert len(caplog.records) >= 3  # the refusals above were logged (as metadata)
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in secrets:
            assert secret not in text


async def _gated_store(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Connection lookups read the row, set `read`, then wait for `gate` before returning."""
    read, gate = asyncio.Event(), asyncio.Event()
    real = h.store.run

    async def gated(fn: Any, *args: Any) -> Any:
        result = await real(fn, *args)
        if fn is rows.get_auth_by_secret1_hash:
            read.set()
            await gate.wait()
        return result

    monkeypatch.setattr(h.store, "run", gated)
    return read, gate


async def test_a_cancelled_caller_does_not_fail_the_others(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await h.create()
    await h.registry.get("linear")
    read, gate = await _gated_store(h, monkeypatch)
    first = asyncio.ensure_future(h.path("linear", c.credentials))
    second = asyncio.ensure_future(h.path("linear", c.credentials))
    await read.wait()
    first.cancel()  # the client went away
    await asyncio.sleep(0)
    gate.set()
    assert (await second).connection_id == c.connection.id
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_forget_drops_a_lookup_that_was_already_running(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await h.create()
    await h.registry.get("linear")
    read, gate = await _gated_store(h, monkeypatch)
    racing = asyncio.ensure_future(h.path("linear", c.credentials))
    await read.wait()  # the lookup has read the row...
    h.store.call(rows.delete_connection, c.connection.id)
    h.resolver.forget(c.connection.id)  # ...and this instance deletes it meanwhile
    gate.set()
    assert (await racing).connection_id == c.connection.id  # it read the row before the delete
    # It is not memoised: the next request sees the delete at once, without waiting a second.
    assert (await h.refusal("linear", c.credentials.text)).kind == "unknown_credential"
