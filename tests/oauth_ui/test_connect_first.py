""" "Connect a new account first": from the consent page through the existing connect flow and
back. A zero-knowledge connection made meanwhile needs no pasting (its credentials ride in the
pending request, sealed); the way back is only for the member who started it."""

from __future__ import annotations

import re

from support.inprocess import Server, add_user, session_browser

from oauth_ui.flow import answer, answer_query, authorize_path, consent, pkce


async def test_connect_first_then_allow_without_pasting(
    server: Server, client_id: str, member_id: str
) -> None:
    browser = await session_browser(server, member_id)
    path = authorize_path(client_id, pkce().challenge, resource=f"{server.url}/mcp/open")
    page, rid = await consent(browser, path)
    assert "You have no connection to Open yet" in page.text
    went = await answer(browser, rid, action="connect")
    assert went.status == 303 and went.location == "/connect/open"
    made = await browser.post("/connect/open", {"key_storage_mode": "zero_knowledge"})
    assert made.status == 303, made.text[:500]
    claim_page = await browser.get(made.location or "")
    assert claim_page.status == 200
    back = f"/oauth/authorize?request={rid}"
    assert f'href="{back}"' in claim_page.text
    cid = re.search(r"/connections/([^?/]+)\?claim=", made.location or "")
    assert cid
    # Another member with the same way back gets nothing.
    other = await session_browser(server, add_user(server, "other@example.com"))
    assert (await other.get(back)).status == 400
    again = await browser.get(back)
    assert again.status == 200 and "just connected" in again.text
    assert 'name="secret"' not in again.text
    done = await answer(browser, rid, action="approve", connection=cid.group(1))
    assert done.status == 303, done.text[:500]
    assert "code" in answer_query(done.location)
