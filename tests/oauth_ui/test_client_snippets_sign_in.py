"""The connection page's client snippets offer ChatGPT and Claude's connector screen the
sign-in route (the service URL, OAuth) only while the OAuth server is on; the pasted snippet
itself stays the secret URL either way."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from support.inprocess import add_token, add_user, session_browser, start_appliance

from oauth_ui.flow import add_open_service


@pytest.mark.parametrize("on", [True, False])
async def test_the_sign_in_route_follows_the_oauth_server(tmp_path: Path, on: bool) -> None:
    server = await start_appliance(tmp_path, allow_private_upstreams=True, oauth_server=on)
    try:
        await add_open_service(
            server, add_token(server, add_user(server, "a@example.com", "admin"))
        )
        browser = await session_browser(server, add_user(server, "m@example.com"))
        made = await browser.post("/connect/open", {"key_storage_mode": "managed"})
        assert made.status == 303 and "?claim=" in (made.location or ""), made.text[:500]
        page = await browser.get(made.location or "")
        assert page.status == 200
        text = html.unescape(page.text)
        service_url = f"{server.url}/mcp/open"
        chatgpt = f'sign in instead: paste {service_url}, choose "OAuth"'
        claude = f"Add custom connector, paste {service_url} with no client ID"
        assert (chatgpt in text) is on and (claude in text) is on
        assert 'Choose "No authentication"' in text  # the secret URL route stays offered
    finally:
        await server.app.settings["runtime"].close()
        await server.close()
