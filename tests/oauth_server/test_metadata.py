"""Discovery documents and the sign-in challenge (DESIGN §10), and the server turned off."""

from __future__ import annotations

import json
from pathlib import Path

from support.inprocess import fetch

from oauth_server.harness import World, build_world


async def test_authorization_server_metadata(world: World) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        answered = await fetch(world.url + path)
        assert answered.status == 200
        assert answered.headers["Access-Control-Allow-Origin"] == "*"
        meta = answered.json()
        base = world.url
        assert meta["issuer"] == base
        assert meta["authorization_endpoint"] == f"{base}/oauth/authorize"
        assert meta["token_endpoint"] == f"{base}/oauth/token"
        assert meta["registration_endpoint"] == f"{base}/oauth/register"
        assert meta["revocation_endpoint"] == f"{base}/oauth/revoke"
        assert meta["response_types_supported"] == ["code"]
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["grant_types_supported"] == ["authorization_code", "refresh_token"]
        assert meta["token_endpoint_auth_methods_supported"] == [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ]
        assert meta["client_id_metadata_document_supported"] is True
        assert meta["authorization_response_iss_parameter_supported"] is True
        assert "id_token_signing_alg_values_supported" not in meta  # no OIDC claims


async def test_protected_resource_metadata_per_service(world: World) -> None:
    answered = await fetch(world.url + "/.well-known/oauth-protected-resource/mcp/open")
    assert answered.status == 200
    meta = answered.json()
    assert meta["resource"] == f"{world.url}/mcp/open"
    assert meta["authorization_servers"] == [world.url]
    assert meta["scopes_supported"] == ["mcp"]
    assert meta["bearer_methods_supported"] == ["header"]
    unknown = await fetch(world.url + "/.well-known/oauth-protected-resource/mcp/nope")
    assert unknown.status == 404
    bare = await fetch(world.url + "/.well-known/oauth-protected-resource")
    assert bare.status == 404
    preflight = await fetch(
        world.url + "/.well-known/oauth-protected-resource/mcp/open",
        "OPTIONS",
        headers={"Origin": "https://inspector.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204


async def test_turned_off_everything_is_as_before(tmp_path: Path) -> None:
    world = await build_world(tmp_path, oauth_server=False)
    try:
        for path in (
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
            "/.well-known/oauth-protected-resource/mcp/open",
        ):
            assert (await fetch(world.url + path)).status == 404, path
        registered = await fetch(
            world.url + "/oauth/register",
            "POST",
            body=json.dumps({"redirect_uris": ["http://127.0.0.1/cb"]}),
            headers={"Content-Type": "application/json"},
        )
        assert registered.status == 404
        missing = await world.mcp(None)
        assert missing.status == 400 and "WWW-Authenticate" not in missing.headers
        assert missing.json()["error"]["code"] == -32600
    finally:
        await world.close()


async def test_a_base_url_with_a_path_keeps_the_server_off(tmp_path: Path) -> None:
    world = await build_world(tmp_path, base_url="http://127.0.0.1:9/bindify")
    try:
        assert (await fetch(world.url + "/.well-known/oauth-authorization-server")).status == 404
    finally:
        await world.close()
