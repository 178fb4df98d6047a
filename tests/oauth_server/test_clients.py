"""The interface the authorize page builds on: `find_client`, `redirect_uri_allowed`, and the
rules a client ID metadata document must meet."""

from __future__ import annotations

import dataclasses

from bindify_appliance.oauth_server.clients import OAuthClient, find_client, redirect_uri_allowed
from bindify_appliance.oauth_server.documents import _parse, is_document_url
from oauth_server.harness import REDIRECT, World


async def test_find_client_and_redirect_matching(world: World) -> None:
    registered = await world.client(client_name="Claude")
    found = await find_client(world.server.ctx, registered["client_id"])
    assert found is not None
    assert found.client_name == "Claude" and found.redirect_uris == (REDIRECT,)
    assert found.auth_method == "none" and found.self_registered and not found.metadata_document
    assert redirect_uri_allowed(found, REDIRECT)
    assert redirect_uri_allowed(found, "http://127.0.0.1:51000/callback")  # loopback: any port
    assert not redirect_uri_allowed(found, "http://localhost:33418/callback")  # another host
    assert not redirect_uri_allowed(found, "http://127.0.0.1:33418/callback/x")
    assert not redirect_uri_allowed(found, "http://127.0.0.1:33418/callback?x=1")
    assert not redirect_uri_allowed(found, "https://127.0.0.1:33418/callback")
    assert await find_client(world.server.ctx, "bndc_unknown") is None
    assert await find_client(world.server.ctx, "") is None
    # Another issuer (a changed base URL) knows none of them.
    ctx = world.server.ctx
    old = ctx.settings
    ctx.settings = dataclasses.replace(old, base_url="https://bindify.example")
    try:
        assert await find_client(ctx, registered["client_id"]) is None
    finally:
        ctx.settings = old


def test_https_redirects_match_exactly() -> None:
    client = OAuthClient("c", "C", ("https://app.example/cb",), "none", True, False)
    assert redirect_uri_allowed(client, "https://app.example/cb")
    for other in (
        "https://app.example/cb/",
        "https://app.example:444/cb",
        "https://APP.example/cb",
    ):
        assert not redirect_uri_allowed(client, other)


async def test_client_id_metadata_documents(world: World) -> None:
    url = "https://client.example/oauth/metadata.json"
    assert is_document_url(url)
    for not_one in ("http://client.example/m.json", "https://client.example", "https://a@b.c/x"):
        assert not is_document_url(not_one)
    settings = world.server.ctx.settings
    ok = _parse(
        settings, url, {"client_id": url, "client_name": "App", "redirect_uris": [REDIRECT]}
    )
    assert ok is not None and ok.client_name == "App" and ok.redirect_uris == (REDIRECT,)
    unnamed = _parse(settings, url, {"client_id": url, "redirect_uris": [REDIRECT]})
    assert unnamed is not None and unnamed.client_name == "client.example"
    for bad in (
        {"client_id": "https://other.example/m.json", "redirect_uris": [REDIRECT]},
        {"client_id": url, "redirect_uris": ["javascript:alert(1)"]},
        {"client_id": url, "redirect_uris": []},
        {
            "client_id": url,
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
        },
        [url],
    ):
        assert _parse(settings, url, bad) is None, bad
