"""Client identity at discovered authorization servers: dynamic registration stored sealed and
reused (across connects and restarts), renewed when expiring; client ID metadata documents;
discovery failures and the 2025-03-26 fallback."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import counts, live_kv_keys, path_of, play_authorize, query_of
from support.inprocess import Appliance, add_token, add_user, api, fetch, start_appliance

from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.store.models import Connection, DcrRegistration


async def _service(app: Appliance, admin_token: str, url: str, sid: str = "acme") -> None:
    body = {"id": sid, "name": "Acme", "mcp_url": url, "auth": {"type": "oauth"}}
    created = await api(app, "POST", "/api/v1/services", body, token=admin_token)
    assert created.status == 201, created.text


async def _connect(app: Appliance, user_id: str, sid: str = "acme") -> tuple[str, str]:
    """A full connect as `user_id`: (connection id, client_id used)."""
    browser = await app.browser(user_id)
    started = await browser.api("POST", f"/api/v1/connections/{sid}/authorize", {})
    assert started.status == 200, started.text
    url = started.json()["url"]
    done = await browser.get(path_of(await play_authorize(url)))
    assert done.status == 302, done.text
    return str(done.location).split("/")[2].split("?")[0], query_of(url)["client_id"]


async def test_two_connects_and_a_restart_make_exactly_one_registration(tmp_path: Path) -> None:
    keys = json.dumps([{"key": generate_master_key()}])
    db = f"sqlite:///{tmp_path}/bindify.db"
    # Same base URL across the restart (it is the registered redirect URI); ports differ.
    base = "http://appliance.test"
    first = await start_appliance(
        tmp_path, allow_private_upstreams=True, master_keys=keys, database_url=db, base_url=base
    )
    async with OAuthUpstream(clock=first.clock) as upstream:
        try:
            admin = add_user(first, "admin@example.com", "admin")
            member = add_user(first, "member@example.com")
            await _service(first, add_token(first, admin), upstream.mcp_url)
            _, client_a = await _connect(first, member)
            _, client_b = await _connect(first, member)
            assert client_a == client_b
        finally:
            await first.close()
        # A restart: a new process over the same database and master keys.
        second = await start_appliance(
            tmp_path, allow_private_upstreams=True, master_keys=keys, database_url=db, base_url=base
        )
        try:
            second.clock.advance(3600)
            _, client_c = await _connect(second, member)
            assert client_c == client_a
            assert len(upstream.registrations) == 1
            assert counts(second.store)["registrations"] == 1
            assert counts(second.store)["connections"] == 3
        finally:
            await second.close()


async def test_an_expiring_registration_is_renewed_in_place(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(
        clock=appliance.clock, auth_methods=("client_secret_post",), registration_ttl=4 * 3600
    ) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        _, first = await _connect(appliance, member_id)
        row = appliance.store.call(lambda: DcrRegistration.get())
        assert row.client_id_expires_at is not None
        # The confidential client's secret went to the token endpoint, in the form body.
        assert upstream.token_requests[-1].form["client_secret"] == upstream.clients[first].secret
        appliance.clock.advance(2 * 3600)
        _, same = await _connect(appliance, member_id)
        assert same == first
        appliance.clock.advance(int(1.5 * 3600))  # now within an hour of expiry
        _, renewed = await _connect(appliance, member_id)
        assert renewed != first and len(upstream.registrations) == 2
        after = appliance.store.call(lambda: DcrRegistration.get())
        assert after.id == row.id and after.registration_sealed != row.registration_sealed
        assert counts(appliance.store)["registrations"] == 1


async def test_registration_without_a_method_in_the_answer(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    # The TS SDK's server: issues a secret, omits token_endpoint_auth_method, lists only
    # client_secret_post. RFC 7591's default (basic) would fail; post is what it accepts.
    async with OAuthUpstream(
        clock=appliance.clock, auth_methods=("client_secret_post",), omit_registered_method=True
    ) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        await _connect(appliance, member_id)
        assert upstream.registrations[0]["token_endpoint_auth_method"] == "client_secret_post"
        assert "client_secret" in upstream.token_requests[-1].form


async def test_basic_client_authentication(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(
        clock=appliance.clock, auth_methods=("client_secret_basic",)
    ) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        await _connect(appliance, member_id)
        call = upstream.token_requests[-1]
        assert call.headers["authorization"].startswith("Basic ")
        assert "client_secret" not in call.form and "client_id" not in call.form


async def test_strict_server_refusing_registration_stores_nothing(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(clock=appliance.clock, auth_methods=("private_key_jwt",)) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        browser = await appliance.browser(member_id)
        refused = await browser.api("POST", "/api/v1/connections/acme/authorize", {})
        assert refused.status == 502 and refused.json()["error"] == "upstream_error"
        assert "registration was refused" in refused.json()["message"]
        assert counts(appliance.store) == {"connections": 0, "events": 0, "registrations": 0}
        assert await live_kv_keys(appliance.ctx.kv) == []


async def test_client_id_metadata_document_when_the_server_supports_it(tmp_path: Path) -> None:
    app = await start_appliance(
        tmp_path, allow_private_upstreams=True, base_url="https://bindify.example"
    )
    try:
        async with OAuthUpstream(clock=app.clock, cimd=True) as upstream:
            admin = add_user(app, "admin@example.com", "admin")
            member = add_user(app, "member@example.com")
            await _service(app, add_token(app, admin), upstream.mcp_url)
            document = await fetch(app.url + "/oauth/client-metadata.json")
            assert document.status == 200
            doc = document.json()
            assert doc["client_id"] == "https://bindify.example/oauth/client-metadata.json"
            assert doc["redirect_uris"] == ["https://bindify.example/oauth/callback"]
            assert doc["grant_types"] == ["authorization_code", "refresh_token"]
            upstream.cimd_documents[doc["client_id"]] = doc
            connection, client_id = await _connect(app, member)
            assert client_id == doc["client_id"]
            assert upstream.registrations == [] and counts(app.store)["registrations"] == 0
            payload_call = upstream.token_requests[-1]
            assert payload_call.form["client_id"] == doc["client_id"]
            assert "client_secret" not in payload_call.form
            assert app.store.call(lambda: Connection.get_by_id(connection)).auth_type == "oauth"
    finally:
        await app.close()


async def test_no_metadata_document_without_https(appliance: Appliance) -> None:
    assert (await fetch(appliance.url + "/oauth/client-metadata.json")).status == 404


async def test_discovery_failures_are_clear_and_store_nothing(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    browser = await appliance.browser(member_id)
    async with OAuthUpstream(clock=appliance.clock, metadata="none") as no_metadata:
        await _service(appliance, admin_token, no_metadata.mcp_url, "nometa")
        refused = await browser.api("POST", "/api/v1/connections/nometa/authorize", {})
        assert refused.status == 502 and "publishes no metadata" in refused.json()["message"]
    async with OAuthUpstream(clock=appliance.clock, dcr=False) as no_dcr:
        await _service(appliance, admin_token, no_dcr.mcp_url, "nodcr")
        refused = await browser.api("POST", "/api/v1/connections/nodcr/authorize", {})
        assert refused.status == 400 and "client_id" in refused.json()["message"]
    assert counts(appliance.store) == {"connections": 0, "events": 0, "registrations": 0}
    assert await live_kv_keys(appliance.ctx.kv, "oauth_state:") == []


async def test_openid_configuration_and_issuer_with_a_path(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(
        clock=appliance.clock, metadata="openid", issuer_path="/tenant1"
    ) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        await _connect(appliance, member_id)
        assert appliance.store.call(lambda: DcrRegistration.get()).issuer == upstream.issuer


async def test_servers_of_the_2025_03_26_revision(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    # No protected-resource metadata: the MCP server's origin is the authorization server.
    async with OAuthUpstream(clock=appliance.clock, prm=False) as upstream:
        await _service(appliance, admin_token, upstream.mcp_url)
        connection, _ = await _connect(appliance, member_id)
        assert upstream.token_requests[-1].form["resource"] == upstream.mcp_url
        assert appliance.store.call(lambda: Connection.get_by_id(connection)) is not None


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_registration_rows_on_both_engines(
    request: pytest.FixtureRequest, tmp_path: Path, engine: str
) -> None:
    """Connect on each engine; a second instance that registered at the same time loses the
    unique (service, issuer) race and uses the winner's row."""
    from datetime import UTC, datetime

    from bindify_appliance.errors import ConflictError
    from bindify_appliance.store import dcr as dcr_rows

    db = None if engine == "sqlite" else str(request.getfixturevalue("pg_migrated_url"))
    app = await start_appliance(
        tmp_path,
        allow_private_upstreams=True,
        database_url=db,
        environ={
            "BINDIFY_SINGLE_INSTANCE": "true",
            "BINDIFY_SECRET_KEY": secrets.token_urlsafe(32),
        },
    )
    try:
        async with OAuthUpstream(clock=app.clock) as upstream:
            admin = add_user(app, "admin@example.com", "admin")
            member = add_user(app, "member@example.com")
            await _service(app, add_token(app, admin), upstream.mcp_url)
            await _connect(app, member)
            await _connect(app, member)
            assert len(upstream.registrations) == 1
            row = app.store.call(lambda: DcrRegistration.get())
            now = datetime.now(UTC)
            with pytest.raises(ConflictError):
                app.store.call(
                    lambda: dcr_rows.insert_registration(
                        "other-id",
                        service="acme",
                        issuer=row.issuer,
                        registration_sealed="v1:x",
                        key_fingerprint="fp",
                        client_id_expires_at=None,
                        now=now,
                    )
                )
            assert not app.store.call(
                lambda: dcr_rows.replace_registration(
                    row.id,
                    expected_sealed="v1:stale",
                    registration_sealed="v1:y",
                    key_fingerprint="fp",
                    client_id_expires_at=None,
                    now=now,
                )
            )
            assert app.store.call(lambda: dcr_rows.count_registrations("acme")) == 1
    finally:
        await app.close()
