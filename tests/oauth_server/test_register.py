"""`POST /oauth/register` (RFC 7591) and its limits (DESIGN §10), by the attacker's requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.inprocess import fetch, later

from bindify_appliance.oauth_server import register
from bindify_appliance.oauth_server.housekeeping import purge_once
from bindify_appliance.store.models import OAuthClientRecord
from oauth_server.harness import World, build_world

REFUSED_URIS = [
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "http://evil.example/cb",
    "http://127.0.0.1.evil.example/cb",
    "https://app.example/cb#fragment",
    "https://user:pw@app.example/cb",
    "vbscript:msgbox",
    "notascheme",
    "",
    "https:///nohost",
    "ftp://app.example/cb",
]
ALLOWED_URIS = [
    "https://app.example/callback",
    "http://127.0.0.1:6274/oauth/callback",
    "http://localhost/cb",
    "http://[::1]:8080/cb",
    "cursor://anysphere.cursor-mcp/oauth/callback",
    "vscode://vscode.dev/redirect",
    "com.example.app:/oauth2redirect",
]


@pytest.mark.parametrize("uri", REFUSED_URIS)
async def test_bad_redirect_uris_are_refused(world: World, uri: str) -> None:
    refused = await world.register(redirect_uris=[uri])
    assert refused.status == 400, refused.text
    assert refused.json()["error"] == "invalid_redirect_uri"
    assert refused.json()["error_description"]
    assert uri not in refused.text or not uri


async def test_good_redirect_uris_are_accepted(world: World) -> None:
    for uri in ALLOWED_URIS:
        registered = await world.register(redirect_uris=[uri], client_name=uri[:20])
        assert registered.status == 201, (uri, registered.text)
        assert registered.json()["redirect_uris"] == [uri]


@pytest.mark.parametrize(
    "metadata",
    [
        {"grant_types": ["password"]},
        {"grant_types": "authorization_code"},
        {"response_types": ["token"]},
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"client_name": 7},
        {"redirect_uris": "https://app.example/cb"},
        {"redirect_uris": []},
    ],
)
async def test_bad_metadata_is_refused(world: World, metadata: dict[str, object]) -> None:
    refused = await world.register(**metadata)
    assert refused.status == 400
    assert refused.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")


async def test_not_json_is_refused(world: World) -> None:
    for body in ("not json", "[1]", "null"):
        refused = await fetch(
            world.url + "/oauth/register",
            "POST",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        assert refused.status == 400
        assert refused.json()["error"] == "invalid_client_metadata"


async def test_identical_public_registrations_are_one_record(world: World) -> None:
    first = await world.client(client_name="Claude")
    second = await world.client(client_name="Claude")
    assert first["client_id"] == second["client_id"]
    assert first["token_endpoint_auth_method"] == "none" and "client_secret" not in first
    different = await world.client(client_name="Claude", redirect_uris=["http://localhost/x"])
    assert different["client_id"] != first["client_id"]
    # Confidential registrations never share a record (each has its own secret).
    one = await world.client(token_endpoint_auth_method="client_secret_post")
    two = await world.client(token_endpoint_auth_method="client_secret_post")
    assert one["client_id"] != two["client_id"]
    assert one["client_secret"] != two["client_secret"]
    assert one["client_secret_expires_at"] == 0
    # The secret is stored only as a hash.
    stored = world.server.store.call(lambda: OAuthClientRecord.get_by_id(one["client_id"]))
    assert one["client_secret"] not in (stored.secret_hash or "")


async def test_twenty_registrations_a_minute_per_address(world: World) -> None:
    for n in range(20):
        assert (await world.register(client_name=f"c{n}")).status == 201
    limited = await world.register(client_name="c20")
    assert limited.status == 429
    assert limited.json()["error"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) >= 1
    later(world.server, seconds=61)
    assert (await world.register(client_name="c21")).status == 201


async def test_unused_registrations_are_capped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(register, "MAX_UNUSED", 3)
    for n in range(3):
        assert (await world.register(client_name=f"c{n}")).status == 201
    full = await world.register(client_name="c3")
    assert full.status == 429 and full.json()["error"] == "too_many_requests"
    # An identical public registration still gets its record back.
    assert (await world.register(client_name="c0")).status == 201


async def test_unused_registrations_expire_after_a_day(world: World) -> None:
    unused = await world.client(client_name="Unused")
    used = await world.client(client_name="Used")
    await world.tokens(world.managed, used["client_id"])
    later(world.server, hours=23)
    await purge_once(world.server.ctx)
    ids = set(world.server.store.call(lambda: [c.id for c in OAuthClientRecord.select()]))
    assert {unused["client_id"], used["client_id"]} <= ids
    later(world.server, hours=2)
    detail = await purge_once(world.server.ctx)
    assert "1 registration(s)" in detail
    ids = set(world.server.store.call(lambda: [c.id for c in OAuthClientRecord.select()]))
    assert unused["client_id"] not in ids and used["client_id"] in ids


async def test_registration_can_be_turned_off(tmp_path: Path) -> None:
    world = await build_world(tmp_path, oauth_dcr=False)
    try:
        refused = await world.register()
        assert refused.status == 404
        meta = await fetch(world.url + "/.well-known/oauth-authorization-server")
        assert meta.status == 200  # the server itself stays on
    finally:
        await world.close()


async def test_redirect_hosts_can_be_restricted(tmp_path: Path) -> None:
    world = await build_world(tmp_path, oauth_redirect_hosts=("claude.ai", ".example.com"))
    try:
        for uri, status in (
            ("https://claude.ai/api/mcp/auth_callback", 201),
            ("https://chat.example.com/cb", 201),
            ("https://evil.example/cb", 400),
            ("https://claude.ai.evil.example/cb", 400),
            ("http://127.0.0.1:5000/cb", 201),
            ("cursor://anysphere.cursor-mcp/oauth/callback", 201),
        ):
            answered = await world.register(redirect_uris=[uri], client_name=uri)
            assert answered.status == status, (uri, answered.text)
    finally:
        await world.close()


async def test_oversized_registrations_are_refused(world: World) -> None:
    body = json.dumps({"redirect_uris": ["https://app.example/cb"], "client_name": "x" * 20_000})
    refused = await fetch(
        world.url + "/oauth/register",
        "POST",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status == 413
