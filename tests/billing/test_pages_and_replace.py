"""Members' pages under billing (banner, suspended status, the connect form's 402) and the rule
that replacing a connection never needs a free slot."""

from __future__ import annotations

from support.inprocess import session_browser

from .conftest import Billed

DAY = 86400


async def test_replacing_at_the_limit_needs_no_free_slot(billed: Billed) -> None:
    _, token = await billed.member("m@example.com")
    first = (await billed.connect(token)).json()["connection"]["id"]
    await billed.connect(token)
    assert (await billed.connect(token)).status == 402
    replaced = await billed.call(
        "POST", "/api/v1/connections", token, {"service": "open", "replace": first}
    )
    assert replaced.status == 201, replaced.text
    assert len(await billed.statuses(token)) == 2


async def test_pages_show_the_banner_and_suspended_connections(billed: Billed) -> None:
    member, token = await billed.member("m@example.com")
    await billed.connect(token)
    browser = await session_browser(billed.server, member)
    home = await browser.get("/")
    assert 'id="billing-banner"' in home.text and "free trial ends" in home.text
    assert 'href="/billing"' in home.text
    billed.server.clock.advance(5 * DAY)
    browser = await session_browser(billed.server, member)  # the old session went idle
    home = await browser.get("/")
    assert "status-suspended" in home.text
    assert "Your trial has ended" in home.text or "suspended until you choose a plan" in home.text
    page = await browser.get("/billing")
    assert "No plan" in page.text and "0 of 0" in page.text
    # Admins see no banner and are told they are not billed.
    admin_id = billed.server.store.call(
        lambda: (
            __import__("bindify_appliance.store.models", fromlist=["User"])
            .User.get(role="admin")
            .id
        )
    )
    admin = await session_browser(billed.server, admin_id)
    assert 'id="billing-banner"' not in (await admin.get("/")).text
    assert "Administrators are not billed" in (await admin.get("/billing")).text


async def test_the_connect_form_beyond_the_allowance_shows_the_billing_link(
    billed: Billed,
) -> None:
    member, token = await billed.member("m@example.com")
    await billed.connect(token)
    await billed.connect(token)
    browser = await session_browser(billed.server, member)
    await browser.get("/connect/open")
    refused = await browser.post("/connect/open", {"key_storage_mode": "zero_knowledge"})
    assert refused.status == 402
    assert "Connection limit reached" in refused.text and "/billing" in refused.text
    assert len(await billed.statuses(token)) == 2
