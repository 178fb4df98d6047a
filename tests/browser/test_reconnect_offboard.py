"""Reconnect in place, "Remove member" with revocation, the admin connections page and the
account page's sign-in sessions, in a real browser against a real `bindify serve` (DESIGN §15).

One local provider for the module (`peers.oauth_upstream.OAuthUpstream` on its own loop, as in
`test_oauth_connect.py`): an OAuth authorization server with RFC 7009 revocation that records
every revocation, and an MCP server that also takes configured API keys. It stands in for the
built-in Todoist too (`BINDIFY_TODOIST_MCP_URL` / `_VALIDATE_URL`), so API-key connections
have the provider's authorized-apps link that offboarding lists. The MCP client is the real
`mcp` 2.x `Client`, run on its own thread (Playwright's sync API owns this thread's loop).
Tests run in order and build on each other's state. Screenshots land in
`test-artifacts/screenshots/` (copied to `docs/screenshots/` for the README).
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from peers.oauth_upstream import OAuthUpstream
from support.appliance import Appliance

from browser.conftest import App, shot, watch
from browser.test_flows import ADMIN, PASSWORD
from browser.test_oauth_connect import NAME, SERVICE, _add_oauth_service, _Provider, _set_up_admin

KEY_ONE, KEY_TWO = "todoist-key-one", "todoist-key-two"
MEMBER = "leaver@example.com"
STAYER = "stayer@example.com"
TODOIST_APPS = "https://app.todoist.com/app/settings/integrations/connected"


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthUpstream]:
    running = _Provider()
    try:
        upstream = running.start()
        _accept_key(upstream, KEY_ONE)
        yield upstream
    finally:
        running.stop()


@pytest.fixture(scope="module")
def app(provider: OAuthUpstream) -> Iterator[App]:
    env = {
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
        "BINDIFY_TODOIST_MCP_URL": provider.mcp_url,
        "BINDIFY_TODOIST_VALIDATE_URL": provider.validate_url,
    }
    with tempfile.TemporaryDirectory() as tmp:
        appliance = Appliance(Path(tmp) / "data", env).start()
        try:
            yield App(appliance)
        finally:
            appliance.stop()


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


def _accept_key(provider: OAuthUpstream, key: str) -> None:
    """The provider takes `key` only, from now on (a rotated or revoked key stops working)."""
    provider.api_keys.clear()
    provider.api_keys.add(f"Bearer {key}")
    provider.validate_headers.clear()
    provider.validate_headers["Authorization"] = f"Bearer {key}"


def _mcp_call(url: str) -> dict[str, Any]:
    """A real MCP client through `url`: initialize, tools/list, tools/call whoami."""

    async def run() -> dict[str, Any]:
        async with (
            create_mcp_http_client({}) as http_client,
            Client(streamable_http_client(url, http_client=http_client)) as client,
        ):
            tools = await client.list_tools()
            assert {"echo", "whoami"} <= {t.name for t in tools.tools}
            seen = await client.call_tool("whoami", {})
            return json.loads(seen.content[0].text)  # type: ignore[union-attr]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(60)


def _mcp_refused(url: str) -> bool:
    try:
        _mcp_call(url)
    except Exception:
        return True
    return False


def _sign_in(page: Any, app: App, email: str) -> None:
    page.goto(app.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(app.url + "/")


def _secrets(page: Any, errors: list[str]) -> tuple[str, str]:
    page.wait_for_selector("#secret-url", timeout=15_000)
    assert errors == []
    connection_id = page.url.split("?")[0].rsplit("/", 1)[1]
    return connection_id, page.locator("#secret-url").input_value()


def _connect_todoist(
    page: Any, app: App, errors: list[str], mode: str, key: str = KEY_TWO
) -> tuple[str, str]:
    page.goto(app.url + "/connect/todoist")
    page.get_by_label(mode).check()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Check key and connect").click()
    return _secrets(page, errors)


def _connect_oauth(page: Any, app: App, errors: list[str]) -> tuple[str, str]:
    page.goto(f"{app.url}/connect/{SERVICE}")
    page.get_by_label("Managed key").check()
    page.get_by_role("button", name=f"Continue to {NAME}").click()
    return _secrets(page, errors)


def _invite(admin: Any, app: App, context_factory: Any, email: str, errors: list[str]) -> Any:
    """The administrator invites `email`; the member's signed-in page."""
    admin.goto(app.url + "/admin/users")
    admin.get_by_label("Email").fill(email)
    admin.get_by_role("button", name="Create invitation").click()
    invite = admin.locator("#invite-url").input_value()
    member = watch(context_factory().new_page(), errors)
    member.goto(invite)
    member.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    member.get_by_role("button", name="Set password and sign in").click()
    member.wait_for_url(app.url + "/")
    return member


def test_reconnect_api_key_in_place_managed_and_zero_knowledge(
    app: App, context_factory: Any, provider: OAuthUpstream, state: dict[str, Any]
) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _set_up_admin(page, app)
    _add_oauth_service(page, app, provider.mcp_url)
    managed_id, managed_url = _connect_todoist(page, app, errors, "Managed key", KEY_ONE)
    zk_id, zk_url = _connect_todoist(page, app, errors, "Zero-knowledge (recommended)", KEY_ONE)
    for url in (managed_url, zk_url):
        assert _mcp_call(url) == {"scheme": "Bearer"}
        assert provider.mcp_authorizations[-1] == f"Bearer {KEY_ONE}"

    _accept_key(provider, KEY_TWO)  # the member rotated the key at the provider
    assert _mcp_refused(managed_url)

    page.goto(f"{app.url}/connections/{managed_id}")
    page.get_by_role("link", name="Reconnect").last.click()
    page.wait_for_url(f"{app.url}/connections/{managed_id}/reconnect")
    assert page.locator("#current").count() == 0  # managed: no current URL asked
    page.get_by_label("API key").fill(KEY_TWO)
    page.get_by_role("button", name="Check key and reconnect").click()
    page.wait_for_url(f"{app.url}/connections/{managed_id}?done=reconnected")
    assert page.get_by_role("status").inner_text().startswith("Reconnected.")

    page.goto(f"{app.url}/connections/{zk_id}/reconnect")
    # A wrong current URL is refused and echoed nowhere; the form stays.
    page.get_by_label("Current secret URL or API key", exact=False).fill(managed_url)
    page.get_by_label("API key", exact=True).fill(KEY_TWO)
    page.get_by_role("button", name="Check key and reconnect").click()
    assert page.get_by_role("alert").is_visible()
    assert managed_url not in page.content() and KEY_TWO not in page.content()
    errors.clear()  # the refusal's own 400 status line
    page.get_by_label("Current secret URL or API key", exact=False).fill(zk_url)
    page.get_by_label("API key", exact=True).fill(KEY_TWO)
    shot(page, "reconnect")
    page.get_by_role("button", name="Check key and reconnect").click()
    page.wait_for_url(f"{app.url}/connections/{zk_id}?done=reconnected")

    # The same secret URLs, unchanged in the client, now carry the new key.
    for url in (managed_url, zk_url):
        assert _mcp_call(url) == {"scheme": "Bearer"}
        assert provider.mcp_authorizations[-1] == f"Bearer {KEY_TWO}"
    state["admin_urls"] = [managed_url, zk_url]
    assert errors == []


def test_reconnect_oauth_in_place(
    app: App, context_factory: Any, provider: OAuthUpstream, state: dict[str, Any]
) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, ADMIN)
    connection_id, secret_url = _connect_oauth(page, app, errors)
    _mcp_call(secret_url)
    first = provider.mcp_authorizations[-1]
    codes = sum(c.form["grant_type"] == "authorization_code" for c in provider.token_requests)

    page.goto(f"{app.url}/connections/{connection_id}/reconnect")
    page.get_by_role("button", name=f"Continue to {NAME}").click()
    # Provider (auto-approve) → /oauth/callback → the same connection, no claim, no new URL.
    page.wait_for_url(f"{app.url}/connections/{connection_id}?done=reconnected", timeout=15_000)
    assert page.locator("#secret-url").count() == 0
    after = sum(c.form["grant_type"] == "authorization_code" for c in provider.token_requests)
    assert after == codes + 1

    _mcp_call(secret_url)
    renewed = provider.mcp_authorizations[-1]
    assert renewed != first and renewed.removeprefix("Bearer ") in provider.valid_access_tokens()
    assert errors == []


def test_remove_member_revokes_at_the_provider(
    app: App, context_factory: Any, provider: OAuthUpstream, state: dict[str, Any]
) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app, ADMIN)
    member = _invite(admin, app, context_factory, MEMBER, errors)
    _, oauth_url = _connect_oauth(member, app, errors)
    _, key_url = _connect_todoist(member, app, errors, "Managed key")
    _mcp_call(oauth_url)
    token = provider.mcp_authorizations[-1].removeprefix("Bearer ")
    revoked_before = len(provider.revocation_requests)

    admin.goto(app.url + "/admin/users")
    admin.get_by_role("button", name=f"Delete {MEMBER}").click()
    assert admin.get_by_role("heading", name=f"Delete {MEMBER}?").is_visible()
    assert admin.get_by_label("Revoke their grants", exact=False).is_checked()
    admin.get_by_role("button", name="Remove member").click()
    admin.wait_for_selector("h1")
    assert admin.get_by_role("heading", name="Member removed").is_visible()
    shot(admin, "remove-member")

    revoked = admin.locator('tr[data-result="revoked"]')
    assert revoked.count() == 1 and SERVICE in revoked.inner_text()
    by_hand = admin.locator('tr[data-result="api_key"]')
    assert by_hand.count() == 1
    assert by_hand.get_by_role("link").get_attribute("href") == TODOIST_APPS
    # The provider really received the revocation, and the grant is gone there.
    assert len(provider.revocation_requests) > revoked_before
    assert token not in provider.valid_access_tokens()
    for url in (oauth_url, key_url):
        assert _mcp_refused(url)

    # The audit trail says what happened, per connection and for the member.
    admin.goto(app.url + "/admin/audit?action=connection.revoke")
    assert admin.locator("td", has_text="result=revoked").count() == 1
    assert admin.locator("td", has_text="result=api_key").count() == 1
    admin.goto(app.url + "/admin/audit?action=user.offboard")
    assert admin.locator("td", has_text="deleted=True").count() == 1
    assert errors == []


def test_admin_connections_page_lists_filters_and_disables(
    app: App, context_factory: Any, provider: OAuthUpstream, state: dict[str, Any]
) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app, ADMIN)
    stayer = _invite(admin, app, context_factory, STAYER, errors)
    stayer_id, stayer_url = _connect_todoist(stayer, app, errors, "Managed key")
    state["stayer"] = stayer
    assert _mcp_call(stayer_url) == {"scheme": "Bearer"}

    admin.get_by_role("link", name="All connections").click()
    admin.wait_for_url(app.url + "/admin/connections")
    rows = admin.locator("tbody tr")
    assert rows.count() == 4  # the admin's three and the stayer's one
    owners = {rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())}
    assert owners == {ADMIN, STAYER}
    content = admin.content()
    for secret in (stayer_url, *state["admin_urls"], KEY_ONE, KEY_TWO):
        assert secret.rsplit("/", 1)[-1] not in content
    shot(admin, "admin-connections")

    admin.get_by_label("Member").select_option(label=STAYER)
    admin.get_by_role("button", name="Show").click()
    admin.wait_for_url(re.compile(r".*/admin/connections\?user_id=.*"))
    assert admin.locator("tbody tr").count() == 1
    row = admin.locator(f'tr[data-connection="{stayer_id}"]')
    assert row.locator("td").nth(5).inner_text() != "never"  # used once above
    row.get_by_role("button", name=re.compile("^Disable")).click()
    admin.wait_for_url(re.compile(r".*/admin/connections\?.*done=disabled.*"))
    assert admin.locator("tbody tr").count() == 1  # the filter kept
    assert "disabled (by admin)" in admin.locator(f'tr[data-connection="{stayer_id}"]').inner_text()
    assert _mcp_refused(stayer_url)

    # The owner cannot undo an administrator's disable.
    stayer.goto(f"{app.url}/connections/{stayer_id}")
    answer = stayer.request.post(
        f"{app.url}/connections/{stayer_id}/enable",
        form={"_xsrf": stayer.locator("input[name=_xsrf]").first.input_value()},
        max_redirects=0,
    )
    assert answer.status == 403
    assert _mcp_refused(stayer_url)

    admin.locator(f'tr[data-connection="{stayer_id}"]').get_by_role(
        "button", name=re.compile("^Enable")
    ).click()
    admin.wait_for_url(re.compile(r".*done=enabled.*"))
    assert _mcp_call(stayer_url) == {"scheme": "Bearer"}
    assert errors == []


def test_sessions_section_ends_another_browser(
    app: App, context_factory: Any, state: dict[str, Any]
) -> None:
    errors: list[str] = []
    here = watch(context_factory().new_page(), errors)
    there = watch(context_factory().new_page(), errors)
    _sign_in(here, app, STAYER)
    _sign_in(there, app, STAYER)

    here.get_by_role("link", name="Password").click()
    here.wait_for_url(app.url + "/account/password")
    section = here.locator("section", has=here.get_by_role("heading", name="Sign-in sessions"))
    listed = section.locator("tbody tr")
    assert listed.count() == 3  # the invite's session, and these two
    assert section.locator("tr[data-current]").count() == 1
    assert "(this session)" in section.locator("tr[data-current]").inner_text()
    shot(here, "account-sessions")

    # End the most recently seen session that is not this one: `there`'s.
    other = section.locator("tbody tr:not([data-current])").first
    other.get_by_role("button", name=re.compile("^End session")).click()
    here.wait_for_url(re.compile(r".*/account/password\?done=session-ended.*"))
    assert here.get_by_role("status").inner_text().startswith("Session ended")
    assert here.locator("section tbody tr").count() == 2

    there.goto(app.url + "/")
    assert "/login" in there.url  # that browser is signed out
    here.goto(app.url + "/")
    assert here.url == app.url + "/"  # this one is not

    # Ending this browser's own session signs it out here.
    here.goto(app.url + "/account/password")
    here.locator("tr[data-current]").get_by_role("button").click()
    here.wait_for_url(re.compile(r".*/login.*"))
    here.goto(app.url + "/")
    assert "/login" in here.url
    assert errors == []
