"""Hostile labels and service names are escaped on every UI page that shows them."""

from __future__ import annotations

from support.inprocess import Server, api, session_browser

HOSTILE = "<script>alert(1)</script>\"'&"


async def test_hostile_label_and_service_name_are_escaped(
    server: Server, admin_id: str, admin_token: str
) -> None:
    created = await api(
        server,
        "POST",
        "/api/v1/services",
        {
            "id": "evil",
            "name": HOSTILE,
            "mcp_url": "https://example.com/mcp",
            "auth": {"type": "none"},
        },
        token=admin_token,
    )
    assert created.status == 201, created.text
    made = await api(
        server,
        "POST",
        "/api/v1/connections",
        {"service": "evil", "label": HOSTILE, "key_storage_mode": "managed"},
        token=admin_token,
    )
    assert made.status == 201, made.text
    connection_id = made.json()["connection"]["id"]
    browser = await session_browser(server, admin_id)
    for path in (
        "/",
        "/connect",
        "/connect/evil",
        "/admin/services",
        f"/connections/{connection_id}",
        f"/connections/{connection_id}/delete",
    ):
        page = await browser.request("GET", path)
        assert page.status == 200, path
        assert "<script>alert(1)" not in page.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text, path
