"""The API and the connection page say which connections refresh in the background: only
managed OAuth ones; a zero-knowledge OAuth connection refreshes on its next request."""

from __future__ import annotations

from support.inprocess import Appliance
from support.managed import Connected, row

from bindify_appliance.store.models import Connection

NOTE = "refreshes on its next request: its key lives only in your URL"


async def test_background_refresh_flag_in_api_and_page(
    appliance: Appliance, connected: Connected
) -> None:
    browser = await appliance.browser(row(appliance, connected.connection_id).user_id)
    path = f"/api/v1/connections/{connected.connection_id}"
    managed = await browser.api("GET", path)
    assert managed.status == 200, managed.text
    assert managed.json()["connection"]["background_refresh"] is True
    listed = await browser.api("GET", "/api/v1/connections")
    assert [c["background_refresh"] for c in listed.json()["items"]] == [True]
    page = await browser.get(f"/connections/{connected.connection_id}")
    assert page.status == 200 and NOTE not in page.text

    appliance.store.call(
        lambda: (
            Connection.update(key_storage_mode="zero_knowledge")
            .where(Connection.id == connected.connection_id)
            .execute()
        )
    )
    zero = await browser.api("GET", path)
    assert zero.json()["connection"]["background_refresh"] is False
    page = await browser.get(f"/connections/{connected.connection_id}")
    assert page.status == 200 and NOTE in page.text
