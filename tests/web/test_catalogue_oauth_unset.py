"""The catalogue and connect page when a built-in service's OAuth app is not configured.

GitHub, Linear, Figma and Todoist sign in with a static OAuth app the operator registers; until
then a member can connect them with an API key only. A member is never offered a sign-in that
ends in the operator's set-up instructions; an administrator sees what to configure.
"""

from __future__ import annotations

import re

from support.inprocess import Server, session_browser

UNSET = ("GitHub", "Linear", "Figma", "Todoist")


def _card(html: str, name: str) -> str:
    """The catalogue card of one service (its <li>)."""
    match = re.search(
        rf'<li class="card">\s*<h2><a href="[^"]+">{name}</a></h2>(.*?)</li>', html, re.S
    )
    assert match, f"no card for {name}"
    return match.group(1)


async def test_members_see_api_key_only_without_an_oauth_app(
    server: Server, member_id: str
) -> None:
    browser = await session_browser(server, member_id)
    page = await browser.get("/connect")
    assert page.status == 200
    for name in UNSET:
        card = _card(page.text, name)
        assert "Sign in" not in card, card
        assert "API key only" in card, card
        assert "BINDIFY_" not in card  # the operator's hint is for administrators
    # Notion registers itself (DCR): sign-in stays on offer.
    assert "Sign in with the service" in _card(page.text, "Notion")

    connect = await browser.get("/connect/github")
    assert connect.status == 200
    assert "sign in with GitHub instead" not in connect.text
    assert 'name="method" value="oauth"' not in connect.text


async def test_a_member_forcing_the_sign_in_gets_a_member_message(
    server: Server, member_id: str
) -> None:
    browser = await session_browser(server, member_id)
    await browser.get("/connect/github")
    answer = await browser.post(
        "/connect/github", {"method": "oauth", "key_storage_mode": "zero_knowledge"}
    )
    assert answer.status == 400
    assert "BINDIFY_GITHUB_CLIENT_ID" not in answer.text
    assert "ask your administrator" in answer.text


async def test_administrators_see_what_to_configure(server: Server, admin_id: str) -> None:
    browser = await session_browser(server, admin_id)
    page = await browser.get("/connect")
    card = _card(page.text, "GitHub")
    assert "API key only" in card
    assert "BINDIFY_GITHUB_CLIENT_ID" in card and "/admin/services" in card
