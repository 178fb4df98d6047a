"""An administrator's disable of a member's connection (DESIGN §9 accounts, §15 administration).

Against a running appliance with two users: the admin disables the member's connection through
`PATCH /api/v1/admin/connections/{id}`; the owner cannot re-enable it (403 `forbidden`, nothing
changes) while a disable of their own they can undo; the events name who acted (user id and
role). The owner routes answer 404 to anyone but the owner — administrators included, for every
body (no metadata through `PATCH {}`).
"""

from __future__ import annotations

from typing import Any

from support.inprocess import Appliance, api


async def call(app: Appliance, method: str, path: str, token: str, body: Any = None) -> Any:
    return await api(app, method, path, body, token=token)


async def _open_service(app: Appliance, admin_token: str) -> None:
    body = {
        "id": "open",
        "name": "Open",
        "mcp_url": "https://open.example/mcp",
        "auth": {"type": "none"},
    }
    assert (await call(app, "POST", "/api/v1/services", admin_token, body)).status == 201


async def _state(app: Appliance, token: str, cid: str) -> str:
    got = await call(app, "GET", f"/api/v1/connections/{cid}", token)
    assert got.status == 200
    return str(got.json()["connection"]["status"])


async def _state_events(app: Appliance, token: str, cid: str) -> list[tuple[str, str | None]]:
    got = await call(app, "GET", f"/api/v1/connections/{cid}/events", token)
    return [
        (e["category"], e["detail"])
        for e in reversed(got.json()["items"])
        if e["event_type"] == "connection" and e["category"] in ("disabled", "enabled")
    ]


async def test_an_owner_cannot_undo_an_admins_disable(
    appliance: Appliance, admin_id: str, admin_token: str, member_id: str, member_token: str
) -> None:
    await _open_service(appliance, admin_token)
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    cid = made.json()["connection"]["id"]

    disabled = await call(
        appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, {"disabled": True}
    )
    assert disabled.status == 200, disabled.text
    assert disabled.json()["connection"]["status"] == "disabled"
    assert disabled.json()["connection"]["id"] == cid

    # The owner's re-enable is refused with a clear error, and nothing changes.
    for body in ({"disabled": False}, {"disabled": False, "label": "Sneaky"}):
        refused = await call(appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, body)
        assert refused.status == 403, refused.text
        assert refused.json()["error"] == "forbidden"
        assert "administrator" in refused.json()["message"]
    assert await _state(appliance, member_token, cid) == "disabled"
    got = await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)
    assert got.json()["connection"]["label"] != "Sneaky"
    # Renaming stays the owner's to do.
    renamed = await call(
        appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, {"label": "Mine"}
    )
    assert renamed.status == 200 and renamed.json()["connection"]["status"] == "disabled"

    # The admin re-enables it; the owner may then disable and re-enable it themselves.
    enabled = await call(
        appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, {"disabled": False}
    )
    assert enabled.status == 200 and enabled.json()["connection"]["status"] == "active"
    for flag, expected in ((True, "disabled"), (False, "active")):
        own = await call(
            appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, {"disabled": flag}
        )
        assert own.status == 200, own.text
        assert own.json()["connection"]["status"] == expected

    assert await _state_events(appliance, member_token, cid) == [
        ("disabled", f"by admin {admin_id}"),
        ("enabled", f"by admin {admin_id}"),
        ("disabled", f"by owner {member_id}"),
        ("enabled", f"by owner {member_id}"),
    ]


async def test_only_the_owner_reaches_the_owner_routes_and_admins_use_the_admin_route(
    appliance: Appliance,
    admin_token: str,
    member_token: str,
    other_token: str,
) -> None:
    await _open_service(appliance, admin_token)
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    cid = made.json()["connection"]["id"]
    for token in (admin_token, other_token):
        for body in ({}, {"disabled": True}, {"disabled": False}, {"label": "x"}):
            answer = await call(appliance, "PATCH", f"/api/v1/connections/{cid}", token, body)
            assert answer.status == 404, (body, answer.text)
            assert cid not in answer.text and "open" not in answer.text
    assert await _state(appliance, member_token, cid) == "active"

    # The admin route: administrators only, `disabled` only.
    refused = await call(
        appliance, "PATCH", f"/api/v1/admin/connections/{cid}", other_token, {"disabled": True}
    )
    assert refused.status == 403
    for bad in ({}, {"label": "x"}, {"disabled": "yes"}, {"disabled": True, "label": "x"}):
        answer = await call(
            appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, bad
        )
        assert answer.status == 400, (bad, answer.text)
    missing = await call(
        appliance,
        "PATCH",
        "/api/v1/admin/connections/00000000-0000-4000-8000-000000000000",
        admin_token,
        {"disabled": True},
    )
    assert missing.status == 404
    assert await _state(appliance, member_token, cid) == "active"


async def test_the_web_ui_refuses_the_owners_re_enable_too(
    appliance: Appliance, admin_id: str, admin_token: str, member_id: str, member_token: str
) -> None:
    await _open_service(appliance, admin_token)
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    cid = made.json()["connection"]["id"]
    browser = await appliance.browser(member_id)

    # The owner's own disable and enable from the connection page.
    for action, expected in (("disable", "disabled"), ("enable", "active")):
        done = await browser.post(f"/connections/{cid}/{action}", {})
        assert done.status == 303, done.text
        assert await _state(appliance, member_token, cid) == expected

    disabled = await call(
        appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, {"disabled": True}
    )
    assert disabled.status == 200
    page = await browser.get(f"/connections/{cid}")
    assert page.status == 200 and "disabled by an administrator" in page.text
    refused = await browser.post(f"/connections/{cid}/enable", {})
    assert refused.status == 403, refused.text
    assert await _state(appliance, member_token, cid) == "disabled"

    # Another member's connection is not found through the UI either.
    admin_browser = await appliance.browser(admin_id)
    assert (await admin_browser.post(f"/connections/{cid}/enable", {})).status == 404
    assert await _state(appliance, member_token, cid) == "disabled"
