"""The registry: overrides from settings, admin-added services (validated CRUD), the ≤ 1 s memo."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pytest
from connections.helpers import NOW, add_user, make_settings

from bindify_appliance.clock import ManualClock
from bindify_appliance.config import load_settings
from bindify_appliance.crypto import Keyring, MasterKey, generate_master_key
from bindify_appliance.errors import ConflictError, HTTPFacingError, NotFoundError
from bindify_appliance.services import BEARER, Injection, ServiceRegistry
from bindify_appliance.store import Store
from bindify_appliance.store import connections as rows
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import Service

KEYRING = Keyring([MasterKey(generate_master_key())])


def _registry(tmp_path: Path, store: Store, clock: ManualClock, **kw: Any) -> ServiceRegistry:
    return ServiceRegistry(make_settings(tmp_path, "sqlite:///unused", **kw), store, clock)


def _rows(store: Store) -> list[Service]:
    return store.call(lambda: list(Service.select()))


async def test_overrides_from_the_environment(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    settings = load_settings(
        environ={
            "BINDIFY_DATA_DIR": str(tmp_path),
            "BINDIFY_LINEAR_MCP_URL": "http://127.0.0.1:9999/mcp",
            "BINDIFY_LINEAR_TOKEN_URL": "http://127.0.0.1:9999/token",
            "BINDIFY_LINEAR_AUTHORIZE_URL": "http://127.0.0.1:9999/authorize",
            "BINDIFY_LINEAR_VALIDATE_URL": "http://127.0.0.1:9999/graphql",
            "BINDIFY_LINEAR_CLIENT_ID": "client-123",
            "BINDIFY_LINEAR_CLIENT_SECRET": "shh-env-secret",
            "BINDIFY_NOTION_REGISTER_URL": "http://127.0.0.1:9999/register",
            "BINDIFY_ATLASSIAN_MCP_URL": "http://127.0.0.1:9998/mcp",
        }
    )
    registry = ServiceRegistry(settings, store, clock)
    linear = await registry.get("linear")
    assert linear is not None and linear.oauth is not None and linear.api_key is not None
    assert linear.mcp_url == "http://127.0.0.1:9999/mcp"
    assert linear.oauth.token_url == "http://127.0.0.1:9999/token"
    assert linear.oauth.authorize_url == "http://127.0.0.1:9999/authorize"
    assert (
        linear.api_key.validate and linear.api_key.validate.url == "http://127.0.0.1:9999/graphql"
    )
    assert linear.oauth.client_id == "client-123" and linear.oauth.configured
    assert linear.oauth.client_secret_source == "env"
    assert linear.oauth.token_endpoint_auth == "client_secret_post"
    assert await registry.client_secret("linear", KEYRING) == "shh-env-secret"
    assert "shh-env-secret" not in repr(linear) and "shh-env-secret" not in str(linear.public())
    notion = await registry.get("notion")
    assert notion and notion.oauth and notion.oauth.register_url == "http://127.0.0.1:9999/register"
    assert notion.oauth.token_endpoint_auth == "none"
    # Atlassian validates with an MCP initialize against its (overridden) MCP URL.
    atl = await registry.get("atlassian")
    assert atl and atl.api_key and atl.api_key.validate
    assert atl.api_key.validate.url == "http://127.0.0.1:9998/mcp"
    github = await registry.get("github")
    assert github and github.mcp_url == "https://api.githubcopilot.com/mcp"
    assert github.oauth and not github.oauth.configured


async def test_lookups_of_impossible_ids_are_none(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = _registry(tmp_path, store, clock)
    for sid in ("", "X", "a", "nope", "../linear", "linear/../x", "a" * 40):
        assert await registry.get(sid) is None
    assert [s.id for s in await registry.list()][:7] == [
        "linear",
        "github",
        "notion",
        "atlassian",
        "figma",
        "todoist",
        "ticktick",
    ]


@pytest.mark.parametrize(
    ("auth", "kinds", "check"),
    [
        ({"type": "none"}, ("none",), lambda s: s.injection_for("none") is None),
        (
            {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
            ("api_key",),
            lambda s: s.injection_for("api_key") == BEARER,
        ),
        (
            {"type": "api_key", "query": "key"},
            ("api_key",),
            lambda s: s.injection_for("api_key") == Injection(query="key"),
        ),
        (
            {"type": "oauth"},
            ("oauth",),
            lambda s: s.oauth.discover and s.oauth.dcr and s.oauth.pkce and s.oauth.resource,
        ),
    ],
)
async def test_create_admin_services(
    any_store: Store,
    tmp_path: Path,
    clock: ManualClock,
    auth: dict[str, Any],
    kinds: tuple[str, ...],
    check: Any,
) -> None:
    registry = _registry(tmp_path, any_store, clock)
    body = {
        "id": "acme",
        "name": "  Acme  ",
        "mcp_url": "https://mcp.acme.example/mcp",
        "auth": auth,
    }
    created = await registry.create(body, keyring=KEYRING)
    assert created.id == "acme" and created.name == "Acme" and not created.builtin
    assert created.auth_types == kinds and check(created)
    assert (await registry.get("acme")) == created
    assert [s.id for s in await registry.list()][-1] == "acme"
    with pytest.raises(ConflictError):
        await registry.create(body, keyring=KEYRING)


async def test_oauth_service_with_client_secret_is_sealed(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = _registry(tmp_path, store, clock)
    created = await registry.create(
        {
            "id": "acme",
            "name": "Acme",
            "mcp_url": "https://mcp.acme.example/mcp",
            "transport": "sse",
            "auth": {
                "type": "oauth",
                "authorization_url": "https://auth.acme.example/authorize",
                "token_url": "https://auth.acme.example/token",
                "client_id": "acme-client",
                "client_secret": "acme-SECRET-value",
                "scopes": ["read", "write", "read"],
                "resource": False,
                "extra_authorize_params": {"prompt": "consent"},
            },
        },
        keyring=KEYRING,
    )
    assert created.transport == "sse"
    o = created.oauth
    assert o is not None and not o.discover and not o.dcr and o.client_id == "acme-client"
    assert o.scopes == ("read", "write") and o.resource is False
    assert dict(o.extra_authorize_params) == {"prompt": "consent"}
    assert o.client_secret_source == "stored"
    assert await registry.client_secret("acme", KEYRING) == "acme-SECRET-value"
    dump = str(store.call(lambda: run_sql(store.db, "SELECT * FROM services").fetchall()))
    assert "acme-SECRET-value" not in dump
    # PATCH without client_secret keeps it; null clears it; switching auth type drops it.
    await registry.update(
        "acme",
        {"auth": {"type": "oauth", "client_id": "acme-client", "scopes": ["x"]}},
        keyring=KEYRING,
    )
    assert await registry.client_secret("acme", KEYRING) == "acme-SECRET-value"
    await registry.update(
        "acme", {"auth": {"type": "oauth", "client_id": "c2", "client_secret": None}}
    )
    assert await registry.client_secret("acme", KEYRING) is None
    changed = await registry.update("acme", {"name": "Acme 2", "auth": {"type": "none"}})
    assert changed.name == "Acme 2" and changed.auth_types == ("none",) and changed.oauth is None


BASE = {
    "id": "acme",
    "name": "Acme",
    "mcp_url": "https://mcp.acme.example/mcp",
    "auth": {"type": "none"},
}


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"id": "Acme"}, "id", "invalid_request"),
        ({"id": "a"}, "id", "invalid_request"),
        ({"id": "1acme"}, "id", "invalid_request"),
        ({"id": "acme_x"}, "id", "invalid_request"),
        ({"id": "a" * 33}, "id", "invalid_request"),
        ({"id": 7}, "id", "invalid_request"),
        ({"id": "linear"}, "id", "invalid_request"),
        ({"id": "github"}, "id", "invalid_request"),
        ({"name": ""}, "name", "invalid_request"),
        ({"name": "x" * 101}, "name", "invalid_request"),
        ({"mcp_url": "ftp://acme.example/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "http://acme.example/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://127.0.0.1/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://10.1.2.3/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://[::1]/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://localhost/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://user:pw@acme.example/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://acme.example/mcp#frag"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://acme.example:99999/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "https://acme example/mcp"}, "mcp_url", "invalid_request"),
        ({"mcp_url": "/relative"}, "mcp_url", "invalid_request"),
        ({"mcp_url": None}, "mcp_url", "invalid_request"),
        ({"transport": "websocket"}, "transport", "invalid_request"),
        ({"auth": {"type": "basic"}}, "auth.type", "invalid_request"),
        ({"auth": {}}, "auth.type", "invalid_request"),
        ({"auth": "none"}, "auth", "invalid_request"),
        ({"auth": {"type": "none", "header": "X"}}, "auth.header", "unknown_field"),
        ({"auth": {"type": "api_key"}}, "auth.header", "invalid_request"),
        (
            {"auth": {"type": "api_key", "header": "X-Key", "query": "k"}},
            "auth.header",
            "invalid_request",
        ),
        ({"auth": {"type": "api_key", "header": "Bad Header"}}, "auth.header", "invalid_request"),
        ({"auth": {"type": "api_key", "header": "Host"}}, "auth.header", "invalid_request"),
        (
            {"auth": {"type": "api_key", "header": "X-Key", "prefix": "a\r\nb"}},
            "auth.prefix",
            "invalid_request",
        ),
        (
            {"auth": {"type": "api_key", "query": "k", "prefix": "p"}},
            "auth.prefix",
            "invalid_request",
        ),
        ({"auth": {"type": "api_key", "query": "a b"}}, "auth.query", "invalid_request"),
        (
            {"auth": {"type": "oauth", "token_url": "https://a.example/t"}},
            "auth.token_url",
            "invalid_request",
        ),
        (
            {
                "auth": {
                    "type": "oauth",
                    "authorization_url": "http://a.example/a",
                    "token_url": "https://a.example/t",
                }
            },
            "auth.authorization_url",
            "invalid_request",
        ),
        ({"auth": {"type": "oauth", "scopes": "read write"}}, "auth.scopes", "invalid_request"),
        ({"auth": {"type": "oauth", "scopes": ["read write"]}}, "auth.scopes", "invalid_request"),
        ({"auth": {"type": "oauth", "resource": "yes"}}, "auth.resource", "invalid_request"),
        (
            {"auth": {"type": "oauth", "extra_authorize_params": {"state": "x"}}},
            "auth.extra_authorize_params",
            "invalid_request",
        ),
        (
            {"auth": {"type": "oauth", "client_secret": "s"}},
            "auth.client_secret",
            "invalid_request",
        ),
        ({"auth": {"type": "oauth", "client_sekret": "s"}}, "auth.client_sekret", "unknown_field"),
        ({"extra": 1}, "extra", "unknown_field"),
    ],
)
async def test_bad_service_bodies_are_refused_and_store_nothing(
    tmp_path: Path, store: Store, clock: ManualClock, change: dict[str, Any], field: str, code: str
) -> None:
    registry = _registry(tmp_path, store, clock)
    with pytest.raises(HTTPFacingError) as err:
        await registry.create({**BASE, **change}, keyring=KEYRING)
    assert (err.value.status, err.value.code, err.value.field) == (400, code, field)
    assert _rows(store) == []


async def test_missing_fields_and_non_objects(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = _registry(tmp_path, store, clock)
    for name in ("id", "name", "mcp_url", "auth"):
        body = {k: v for k, v in BASE.items() if k != name}
        with pytest.raises(HTTPFacingError) as err:
            await registry.create(body)
        assert err.value.field == name
    with pytest.raises(HTTPFacingError):
        await registry.create(["not", "an", "object"])
    assert _rows(store) == []


async def test_private_upstreams_need_the_setting(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = _registry(tmp_path, store, clock, allow_private=True)
    created = await registry.create({**BASE, "mcp_url": "http://127.0.0.1:8080/mcp"})
    assert created.mcp_url == "http://127.0.0.1:8080/mcp"


async def test_update_and_delete(any_store: Store, tmp_path: Path, clock: ManualClock) -> None:
    registry = _registry(tmp_path, any_store, clock)
    await registry.create({**BASE, "auth": {"type": "api_key", "query": "key"}})
    updated = await registry.update("acme", {"mcp_url": "https://new.acme.example/mcp"})
    assert updated.mcp_url == "https://new.acme.example/mcp"
    assert updated.injection_for("api_key") == Injection(query="key")
    with pytest.raises(HTTPFacingError) as err:
        await registry.update("acme", {"id": "other"})
    assert err.value.field == "id"
    with pytest.raises(HTTPFacingError) as err:
        await registry.update("acme", {"mcp_url": "ftp://x"})
    assert (await registry.get("acme")).mcp_url == "https://new.acme.example/mcp"  # type: ignore[union-attr]
    with pytest.raises(HTTPFacingError) as err:
        await registry.update("ghost", {"name": "x"})
    assert err.value.status == 404
    # Delete refuses while connections remain, then succeeds.
    uid = add_user(any_store)
    new = rows.NewConnection(
        id="00000000-0000-4000-8000-000000000001",
        user_id=uid,
        service="acme",
        auth_type="api_key",
        key_storage_mode="zero_knowledge",
        secret1_hash="h",
        encrypted_tokens="v1:x",
    )
    any_store.call(functools.partial(rows.insert_connection, new, now=NOW))
    with pytest.raises(ConflictError):
        await registry.delete("acme")
    assert await registry.get("acme") is not None
    any_store.call(rows.delete_connection, new.id)
    await registry.delete("acme")
    assert await registry.get("acme") is None
    with pytest.raises(NotFoundError):
        await registry.delete("acme")
    with pytest.raises(HTTPFacingError):
        await registry.delete("linear")


async def test_builtin_patch_accepts_only_oauth_app_credentials(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = _registry(tmp_path, store, clock)
    for body in (
        {"name": "Mine"},
        {"mcp_url": "https://x.example"},
        {"auth": {"type": "none"}},
        {"auth": "x"},
    ):
        with pytest.raises(HTTPFacingError):
            await registry.update("github", body, keyring=KEYRING)
    assert _rows(store) == []
    github = await registry.update(
        "github",
        {"auth": {"client_id": "gh-client", "client_secret": "gh-SECRET"}},
        keyring=KEYRING,
    )
    assert github.oauth and github.oauth.client_id == "gh-client" and github.oauth.configured
    assert github.oauth.client_secret_source == "stored"
    assert await registry.client_secret("github", KEYRING) == "gh-SECRET"
    assert "gh-SECRET" not in str(
        store.call(lambda: run_sql(store.db, "SELECT * FROM services").fetchall())
    )
    github = await registry.update("github", {"auth": {"client_id": "gh-2"}})
    assert github.oauth and github.oauth.client_id == "gh-2"
    assert await registry.client_secret("github", KEYRING) == "gh-SECRET"
    # The environment wins over the stored app.
    env_registry = ServiceRegistry(
        make_settings(
            tmp_path,
            "sqlite:///unused",
            overrides={"github.client_id": "env-id", "github.client_secret": "env-secret"},
        ),
        store,
        clock,
    )
    from_env = await env_registry.get("github")
    assert from_env and from_env.oauth and from_env.oauth.client_id == "env-id"
    assert from_env.oauth.client_secret_source == "env"
    assert await env_registry.client_secret("github", KEYRING) == "env-secret"
    # The built-in row never becomes an admin service.
    assert [s.id for s in await registry.list()].count("github") == 1


async def test_changes_reach_another_instance_within_one_second(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    reader = _registry(tmp_path, store, clock)
    writer = _registry(tmp_path, store, clock)
    assert await reader.get("acme") is None
    await writer.create(BASE)
    clock.advance(1.0)
    assert await reader.get("acme") is not None
    await writer.update("acme", {"name": "Renamed"})
    clock.advance(1.0)
    assert (await reader.get("acme")).name == "Renamed"  # type: ignore[union-attr]
    await writer.delete("acme")
    clock.advance(1.0)
    assert await reader.get("acme") is None


async def test_one_query_per_refresh(tmp_path: Path, store: Store, clock: ManualClock) -> None:
    import asyncio

    registry = _registry(tmp_path, store, clock)
    calls = 0
    real = store.run

    async def counting(fn: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(fn, *args)

    store.run = counting  # type: ignore[method-assign,assignment]
    results = await asyncio.gather(*(registry.get("linear") for _ in range(20)))
    assert all(r is not None for r in results) and calls == 1
    await registry.get("github")
    assert calls == 1
    clock.advance(1.0)
    await registry.get("github")
    assert calls == 2


async def test_damaged_rows_are_skipped(
    tmp_path: Path, store: Store, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store.call(
        lambda: Service.create(
            id="broken",
            name="B",
            mcp_url="https://b.example",
            auth_json="{not json",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    registry = _registry(tmp_path, store, clock)
    with caplog.at_level(logging.WARNING):
        assert await registry.get("broken") is None
    assert any("damaged" in r.getMessage() for r in caplog.records)


def test_ttl_is_bounded(tmp_path: Path, store: Store, clock: ManualClock) -> None:
    with pytest.raises(ValueError):
        ServiceRegistry(make_settings(tmp_path, "sqlite:///x"), store, clock, ttl=2)


async def test_invalidate_drops_a_load_that_predates_the_write(
    tmp_path: Path, store: Store, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    registry = _registry(tmp_path, store, clock)
    read, gate = asyncio.Event(), asyncio.Event()
    real = store.run

    async def gated(fn: Any, *args: Any) -> Any:
        result = await real(fn, *args)
        read.set()
        await gate.wait()  # the load read the table, then stalls before it is kept
        return result

    monkeypatch.setattr(store, "run", gated)
    stale = asyncio.ensure_future(registry.get("acme"))
    await read.wait()
    monkeypatch.setattr(store, "run", real)
    created = await registry.create(BASE)  # invalidates, then reloads past the stale load
    assert created.id == "acme"
    gate.set()
    assert await stale is None  # it read the table before the write...
    assert await registry.get("acme") is not None  # ...and did not replace the newer snapshot
