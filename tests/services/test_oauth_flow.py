"""The real OAuth-protected upstream driven end to end: discovery, registration, authorize,
callback, claim, and a proxied MCP call with the stored token."""

from __future__ import annotations

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import (
    counts,
    live_kv_keys,
    mcp_tool_call,
    path_of,
    play_authorize,
    query_of,
)
from support.inprocess import Appliance, api

from bindify_appliance.store.models import Connection, DcrRegistration


async def _add_service(app: Appliance, token: str, upstream: OAuthUpstream, **auth: object) -> None:
    body = {
        "id": "acme",
        "name": "Acme",
        "mcp_url": upstream.mcp_url,
        "auth": {"type": "oauth", **auth},
    }
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


async def test_discovered_oauth_service_end_to_end(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    started = await browser.api("POST", "/api/v1/connections/acme/authorize", {"label": "Work"})
    assert started.status == 200, started.text
    url = started.json()["url"]
    params = query_of(url)
    assert url.startswith(upstream.authorize_url + "?")
    assert params["response_type"] == "code"
    assert params["redirect_uri"] == appliance.url + "/oauth/callback"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["resource"] == upstream.mcp_url
    assert params["scope"] == "mcp:read mcp:write"
    # Dynamic registration happened once, with what strict servers demand.
    [registration] = upstream.registrations
    assert registration["grant_types"] == ["authorization_code", "refresh_token"]
    assert registration["redirect_uris"] == [appliance.url + "/oauth/callback"]
    assert registration["token_endpoint_auth_method"] == "none"
    assert params["client_id"] == upstream.registered_clients()[0].client_id

    callback = await play_authorize(url)
    assert callback.startswith(appliance.url + "/oauth/callback?")
    done = await browser.get(path_of(callback))
    assert done.status == 302, done.text
    location = done.location or ""
    assert location.startswith("/connections/") and "?claim=" in location
    connection_id = location.split("/")[2].split("?")[0]

    token_call = upstream.token_requests[-1]
    assert token_call.form["grant_type"] == "authorization_code"
    assert token_call.form["resource"] == upstream.mcp_url
    assert "code_verifier" in token_call.form and "client_secret" not in token_call.form

    claim = location.split("claim=")[1]
    claimed = await browser.api("GET", f"/api/v1/claims/{claim}")
    assert claimed.status == 200, claimed.text
    result = claimed.json()
    assert result["connection"]["id"] == connection_id
    assert result["connection"]["label"] == "Work"
    assert result["connection"]["auth_type"] == "oauth"
    assert result["connection"]["key_storage_mode"] == "zero_knowledge"
    assert result["api_key"].startswith("bnd_live_")
    again = await browser.api("GET", f"/api/v1/claims/{claim}")
    assert again.status == 404

    # The registration is stored sealed: the client id is not readable in the row.
    row = appliance.store.call(lambda: DcrRegistration.get())
    assert upstream.registered_clients()[0].client_id not in row.registration_sealed
    stored = appliance.store.call(lambda: Connection.get_by_id(connection_id))
    assert (
        stored.encrypted_tokens and upstream.valid_access_tokens()[0] not in stored.encrypted_tokens
    )

    # A proxied MCP call with the secret URL reaches the upstream with the stored token.
    assert appliance.proxy_url is not None
    secret_path = result["secret_url"][len(appliance.url) :]
    answer = await mcp_tool_call(appliance.proxy_url + secret_path, "echo", {"text": "hi"})
    assert answer["result"]["content"][0]["text"] == "echo:hi"
    assert upstream.mcp_authorizations[-1] == "Bearer " + upstream.valid_access_tokens()[0]
    # …and with the API key form.
    answer = await mcp_tool_call(
        appliance.proxy_url + "/mcp/acme",
        "whoami",
        {},
        {"Authorization": "Bearer " + result["api_key"]},
    )
    assert "Bearer" in answer["result"]["content"][0]["text"]
    assert counts(appliance.store)["connections"] == 1
    assert await live_kv_keys(appliance.ctx.kv, "oauth_state:") == []


# -- helpers --------------------------------------------------------------------------------


async def _authorize(app: Appliance, browser: object, service: str = "acme", **body: object) -> str:
    started = await browser.api("POST", f"/api/v1/connections/{service}/authorize", body)  # type: ignore[attr-defined]
    assert started.status == 200, started.text
    return str(started.json()["url"])


async def _connect(app: Appliance, browser: object, service: str = "acme", **body: object) -> str:
    """A whole connect; the new connection id."""
    callback = await play_authorize(await _authorize(app, browser, service, **body))
    done = await browser.get(path_of(callback))  # type: ignore[attr-defined]
    assert done.status == 302, done.text
    return str(done.location).split("/")[2].split("?")[0]


def _nothing_stored(app: Appliance, before: dict[str, int]) -> None:
    after = counts(app.store)
    assert after["connections"] == before["connections"], after
    assert after["registrations"] == before["registrations"], after


# -- bad inputs: a clear error and nothing stored -------------------------------------------


async def test_unknown_state_is_a_clear_error(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    before = counts(appliance.store)
    page = await browser.get("/oauth/callback?code=abc&state=" + "A" * 43)
    assert page.status == 400 and "unknown, expired" in page.text
    page = await browser.get("/oauth/callback?code=abc")
    assert page.status == 400
    _nothing_stored(appliance, before)
    assert await live_kv_keys(appliance.ctx.kv, "claim:") == []


async def test_replayed_state_creates_nothing_more(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    callback = await play_authorize(await _authorize(appliance, browser))
    first = await browser.get(path_of(callback))
    assert first.status == 302
    before = counts(appliance.store)
    replay = await browser.get(path_of(callback))
    assert replay.status == 400 and "already used" in replay.text
    _nothing_stored(appliance, before)
    assert len(upstream.token_requests) == 1  # the code was never presented twice
    assert len(await live_kv_keys(appliance.ctx.kv, "claim:")) == 1


async def test_provider_error_is_a_readable_page(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    upstream.authorize_error = "access_denied"
    url = await _authorize(appliance, browser)
    before = counts(appliance.store)  # the client registration is the authorize step's
    callback = await play_authorize(url)
    assert "error=access_denied" in callback
    page = await browser.get(path_of(callback))
    assert page.status == 400
    assert "You declined the request at Acme" in page.text
    assert page.headers["Content-Type"].startswith("text/html")
    _nothing_stored(appliance, before)
    assert upstream.token_requests == []
    assert await live_kv_keys(appliance.ctx.kv, "oauth_state:") == []  # the flow is over
    # Another provider error, with a description that must be escaped and truncated.
    upstream.authorize_error = "server_error"
    callback = await play_authorize(await _authorize(appliance, browser))
    page = await browser.get(path_of(callback) + "&error_description=%3Cscript%3Ex" + "y" * 500)
    assert page.status == 400 and "<script>" not in page.text and "server_error" in page.text


@pytest.mark.parametrize(
    ("status", "content_type", "body", "shown"),
    [
        (500, "text/html", b"<h1>down</h1>", "HTTP 500"),
        (400, "application/json", b'{"error":"invalid_grant"}', "invalid_grant"),
        (200, "application/json", b"{not json", "could not be parsed"),
        (200, "application/json", b'["access_token"]', "not an object"),
        (200, "application/json", b'{"token_type":"Bearer"}', "no usable access_token"),
        (200, "application/json", b'{"access_token":"A","expires_in":"later"}', "expires_in"),
        (
            200,
            "application/x-www-form-urlencoded",
            b"error=bad_verification_code",
            "bad_verification_code",
        ),
    ],
)
async def test_token_endpoint_failures_store_nothing(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    status: int,
    content_type: str,
    body: bytes,
    shown: str,
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    callback = await play_authorize(await _authorize(appliance, browser))
    before = counts(appliance.store)
    upstream.next_token_response = (status, content_type, body)
    page = await browser.get(path_of(callback))
    assert page.status == 502, page.text
    assert shown in page.text and "Acme did not issue tokens" in page.text
    _nothing_stored(appliance, before)
    assert await live_kv_keys(appliance.ctx.kv, "claim:") == []
    assert await live_kv_keys(appliance.ctx.kv, "oauth_state:") == []


async def test_another_users_state_is_refused_without_consuming_it(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    other_id: str,
) -> None:
    await _add_service(appliance, admin_token, upstream)
    owner = await appliance.browser(member_id)
    intruder = await appliance.browser(other_id)
    callback = await play_authorize(await _authorize(appliance, owner))
    refused = await intruder.get(path_of(callback))
    assert refused.status == 403 and "another account" in refused.text
    assert counts(appliance.store)["connections"] == 0
    done = await owner.get(path_of(callback))
    assert done.status == 302


async def test_signed_out_callback_asks_to_sign_in_and_keeps_the_state(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    from support.inprocess import Browser

    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    callback = await play_authorize(await _authorize(appliance, browser))
    anonymous = await Browser(appliance.url).get(path_of(callback))
    assert anonymous.status == 302 and (anonymous.location or "").startswith("/login?next=")
    assert (await browser.get(path_of(callback))).status == 302


async def test_expired_state_and_expired_claim(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    callback = await play_authorize(await _authorize(appliance, browser))
    appliance.clock.advance(601)
    late = await browser.get(path_of(callback))
    assert late.status == 400 and counts(appliance.store)["connections"] == 0
    upstream.clock = appliance.clock
    callback = await play_authorize(await _authorize(appliance, browser))
    done = await browser.get(path_of(callback))
    claim = str(done.location).split("claim=")[1]
    appliance.clock.advance(301)
    assert (await browser.api("GET", f"/api/v1/claims/{claim}")).status == 404
    page = await browser.get(str(done.location))
    assert page.status == 200 and "already shown" in page.text


async def test_a_claim_is_only_for_its_owner(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    other_id: str,
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    callback = await play_authorize(await _authorize(appliance, browser))
    done = await browser.get(path_of(callback))
    claim = str(done.location).split("claim=")[1]
    intruder = await appliance.browser(other_id)
    assert (await intruder.api("GET", f"/api/v1/claims/{claim}")).status == 403
    connection_id = str(done.location).split("/")[2].split("?")[0]
    assert (await intruder.get(f"/connections/{connection_id}?claim={claim}")).status == 404
    # The owner's page shows the secrets once.
    page = await browser.get(str(done.location))
    assert page.status == 200 and "bnd_live_" in page.text and "Copy these now" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    again = await browser.get(str(done.location))
    assert "bnd_live_" not in again.text and "already shown" in again.text


async def test_issuer_mismatch_is_refused(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(clock=appliance.clock, send_iss=True) as upstream:
        await _add_service(appliance, admin_token, upstream)
        browser = await appliance.browser(member_id)
        callback = await play_authorize(await _authorize(appliance, browser))
        assert "iss=" in callback
        forged = path_of(callback).replace("iss=", "iss=https%3A%2F%2Fevil.example&was=")
        page = await browser.get(forged)
        assert page.status == 400 and "issuer mismatch" in page.text
        assert counts(appliance.store)["connections"] == 0 and upstream.token_requests == []


async def test_replace_on_authorize_must_be_yours(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    other_id: str,
) -> None:
    await _add_service(appliance, admin_token, upstream)
    owner = await appliance.browser(member_id)
    theirs = await _connect(appliance, owner)
    intruder = await appliance.browser(other_id)
    refused = await intruder.api("POST", "/api/v1/connections/acme/authorize", {"replace": theirs})
    assert refused.status == 404 and refused.json()["field"] == "replace"
    bad_mode = await owner.api(
        "POST", "/api/v1/connections/acme/authorize", {"key_storage_mode": "plaintext"}
    )
    assert bad_mode.status == 400
    assert await live_kv_keys(appliance.ctx.kv, "oauth_state:") == []


# -- storage modes, several connections, reconnect ------------------------------------------


async def test_managed_mode_several_connections_and_replace(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    first = await _connect(appliance, browser, key_storage_mode="managed")
    second = await _connect(appliance, browser)
    rows = {c.id: c for c in appliance.store.call(lambda: list(Connection.select()))}
    assert rows[first].key_storage_mode == "managed" and rows[first].key_fingerprint
    assert rows[first].last_refreshed_at is not None
    assert rows[second].key_storage_mode == "zero_knowledge"
    assert (rows[first].label, rows[second].label) == ("Acme 1", "Acme 2")
    assert rows[first].token_expires_at is not None

    # Reconnect: the new connection takes the old one's place only once it is stored.
    upstream.next_token_response = (500, "text/plain", b"down")
    callback = await play_authorize(await _authorize(appliance, browser, replace=first))
    assert (await browser.get(path_of(callback))).status == 502
    assert first in {c.id for c in appliance.store.call(lambda: list(Connection.select()))}
    third = await _connect(appliance, browser, replace=first, label="Renewed")
    ids = {c.id: c.label for c in appliance.store.call(lambda: list(Connection.select()))}
    assert first not in ids and ids[third] == "Renewed" and second in ids
    listed = await browser.api("GET", "/api/v1/connections")
    assert {c["id"] for c in listed.json()["items"]} == {second, third}


async def test_stored_payload_refreshes_and_the_upstream_detects_reuse(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    """The payload says how to refresh (for the token-lifecycle work), and the test upstream
    rotates refresh tokens and revokes the family when a rotated one is presented again."""
    from bindify_appliance.connections.secrets import open_payload
    from bindify_appliance.errors import OAuthError
    from bindify_appliance.services import oauth

    await _add_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    connection_id = await _connect(appliance, browser, key_storage_mode="managed")
    row = appliance.store.call(lambda: Connection.get_by_id(connection_id))
    payload = open_payload(row, None, appliance.ctx.keys.keyring)
    endpoint = oauth.endpoint_from_payload(payload)
    assert endpoint is not None and endpoint.client.kind == "dcr"
    appliance.clock.advance(61)  # the 60-second access token has expired
    assert upstream.valid_access_tokens() == []
    fresh = await oauth.refresh_tokens(
        appliance.connect.outbound, endpoint, payload["refresh_token"]
    )
    assert fresh.refresh_token and fresh.refresh_token != payload["refresh_token"]
    assert upstream.valid_access_tokens() == [fresh.access_token]
    with pytest.raises(OAuthError) as reused:
        await oauth.refresh_tokens(appliance.connect.outbound, endpoint, payload["refresh_token"])
    assert reused.value.error == "invalid_grant"
    assert upstream.valid_access_tokens() == []  # the whole family is revoked
    with pytest.raises(OAuthError):
        await oauth.refresh_tokens(appliance.connect.outbound, endpoint, fresh.refresh_token)
