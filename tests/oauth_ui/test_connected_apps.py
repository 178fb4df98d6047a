""" "Connected apps": the connection page and the consent page list the clients holding grants
(with their last use), and each is revocable with POST + CSRF by its member only."""

from __future__ import annotations

import re

from support.inprocess import Browser, Server, add_user, api, session_browser

from oauth_ui.flow import (
    REDIRECT,
    answer,
    answer_query,
    authorize_path,
    connect,
    consent,
    pkce,
    register_client,
)


async def _grant(server: Server, browser: Browser, client_id: str, connection_id: str) -> dict:
    verifier = pkce()
    _page, rid = await consent(browser, authorize_path(client_id, verifier.challenge))
    done = await answer(browser, rid, action="approve", connection=connection_id)
    code = answer_query(done.location)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
        "code_verifier": verifier.verifier,
    }
    from urllib.parse import urlencode

    tokens = await api(
        server,
        "POST",
        "/oauth/token",
        raw_body=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert tokens.status == 200, tokens.text
    return dict(tokens.json())


async def test_connection_page_lists_and_revokes_apps(
    server: Server, member_id: str, member_token: str
) -> None:
    made = await connect(server, member_token, "managed")
    cid = made["connection"]["id"]
    browser = await session_browser(server, member_id)
    empty = await browser.get(f"/connections/{cid}")
    assert empty.status == 200 and "Connected apps" in empty.text
    assert "No application holds access" in empty.text
    client = await register_client(server, [REDIRECT], name="Desk <App>")
    await _grant(server, browser, client, cid)
    page = await browser.get(f"/connections/{cid}")
    assert page.status == 200, page.text[:1000]
    assert "Desk &lt;App&gt;" in page.text and "never" in page.text
    action = re.search(rf'action="(/connections/{cid}/apps/([^/"]+)/revoke)"', page.text)
    assert action
    # Another member cannot revoke it (not found), nor can a POST without the CSRF token.
    other = await session_browser(server, add_user(server, "other@example.com"))
    assert (await other.post(action.group(1), {})).status == 404
    assert (await browser.post(action.group(1), {}, xsrf=False)).status == 403
    listed = await api(server, "GET", f"/api/v1/connections/{cid}/grants", token=member_token)
    assert [g["client_name"] for g in listed.json()["items"]] == ["Desk <App>"]
    # A `back` that is not a pending consent page is ignored: no open redirect.
    done = await browser.post(action.group(1), {"back": "https://evil.example/"})
    assert done.status == 303 and done.location == f"/connections/{cid}?done=app-revoked"
    listed = await api(server, "GET", f"/api/v1/connections/{cid}/grants", token=member_token)
    assert listed.json()["items"] == []
    again = await browser.post(action.group(1), {})
    assert again.status == 404


async def test_consent_page_lists_apps_and_revoking_returns_to_it(
    server: Server, member_id: str, member_token: str
) -> None:
    made = await connect(server, member_token, "managed")
    cid = made["connection"]["id"]
    browser = await session_browser(server, member_id)
    first = await register_client(server, [REDIRECT], name="First App")
    await _grant(server, browser, first, cid)
    second = await register_client(server, ["http://127.0.0.1:9999/cb"], name="Second App")
    path = authorize_path(second, pkce().challenge, redirect_uri="http://127.0.0.1:9999/cb")
    page, rid = await consent(browser, path)
    assert "First App" in page.text
    action = re.search(rf'action="(/connections/{cid}/apps/[^/"]+/revoke)"', page.text)
    assert action
    back = f"/oauth/authorize?request={rid}"
    done = await browser.post(action.group(1), {"back": back})
    assert done.status == 303 and done.location == back
    again = await browser.get(back)
    assert again.status == 200 and "First App" not in again.text
