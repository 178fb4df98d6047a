"""The authorize page's sign-in is the usual one, single sign-on included: a member who signs
in through the identity provider comes back to the same authorization request (SSO's `next`
carries it) and gets the consent page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from peers.oidc_provider import Login, OidcProvider
from support.inprocess import Browser, add_token, add_user, start_appliance

from bindify_appliance.clock import ManualClock
from oauth_ui.flow import (
    REDIRECT,
    add_open_service,
    answer,
    answer_query,
    authorize_path,
    connect,
    pkce,
    register_client,
    request_id,
)

CLIENT_ID = "bindify-test"
CLIENT_SECRET = "provider-secret-value"


async def test_single_sign_on_returns_to_the_consent_page(tmp_path: Path) -> None:
    provider = OidcProvider(ManualClock(), client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    provider.start()
    server = await start_appliance(
        tmp_path,
        allow_private_upstreams=True,
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_allowed_domains=("example.com",),
    )
    provider.clock = server.clock
    try:
        admin = add_token(server, add_user(server, "admin@example.com", "admin"), "admin")
        await add_open_service(server, admin)
        member = add_user(server, "sso.user@example.com", password_hash=None)
        made = await connect(server, add_token(server, member, "m"), "managed")
        client = await register_client(server, [REDIRECT])
        path = authorize_path(client, pkce().challenge, state="x" * 600)
        browser = Browser(server.url)
        login = (await browser.get(path)).location or ""
        next_path = parse_qs(urlsplit(login).query)["next"][0]
        assert next_path == path
        page = await browser.get(login)
        assert f'href="/login/oidc?{urlencode({"next": path})}"'.replace("&", "&amp;") in page.text
        provider.next_token = Login(email="sso.user@example.com")
        start = await browser.get("/login/oidc?" + urlencode({"next": next_path}))
        assert (start.location or "").startswith(provider.url)
        approved = await browser.get(start.location or "")
        back = await browser.get(approved.location or "")
        assert back.status == 303 and back.location == path
        consent = await browser.get(path)
        assert consent.status == 200
        done = await answer(
            browser, request_id(consent), action="approve", connection=made["connection"]["id"]
        )
        assert answer_query(done.location)["state"] == "x" * 600
    finally:
        await server.close()
        await provider.stop()
