"""Administrators' metadata-only overview of connections; members' own sign-in sessions."""

from __future__ import annotations

from support.inprocess import Appliance, api

from bindify_appliance.store.models import Connection, Session


async def test_admins_see_every_connection_as_metadata_only(
    appliance: Appliance, admin_token: str, member_token: str, member_id: str, other_id: str
) -> None:
    body = {
        "id": "open",
        "name": "Open",
        "mcp_url": "http://127.0.0.1:9/mcp",
        "auth": {"type": "none"},
    }
    assert (await api(appliance, "POST", "/api/v1/services", body, token=admin_token)).status == 201
    made = []
    for who in (member_id, other_id, member_id):
        browser = await appliance.browser(who)
        answer = await browser.api("POST", "/api/v1/connections", {"service": "open", "label": "L"})
        assert answer.status == 201
        made.append(answer.json())
    assert (
        await api(appliance, "GET", "/api/v1/admin/connections", token=member_token)
    ).status == 403
    first = await api(appliance, "GET", "/api/v1/admin/connections?limit=2", token=admin_token)
    assert first.status == 200, first.text
    page = first.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await api(
        appliance,
        "GET",
        f"/api/v1/admin/connections?limit=2&cursor={page['next_cursor']}",
        token=admin_token,
    )
    items = page["items"] + rest.json()["items"]
    assert sorted(i["id"] for i in items) == sorted(m["connection"]["id"] for m in made)
    assert {i["owner"]["email"] for i in items} == {"member@example.com", "other@example.com"}
    assert set(items[0]) == {
        "id",
        "owner",
        "service",
        "label",
        "status",
        "auth_type",
        "key_storage_mode",
        "disabled_by",
        "created_at",
        "last_used_at",
    }
    text = first.text + rest.text
    for m in made:
        assert m["secret_url"].rsplit("/", 1)[1] not in text
    hashes = appliance.store.call(lambda: [c.secret1_hash for c in Connection.select()])
    assert not any(h in text for h in hashes)
    only = await api(
        appliance, "GET", f"/api/v1/admin/connections?user_id={other_id}", token=admin_token
    )
    assert [i["owner"]["id"] for i in only.json()["items"]] == [other_id]


async def test_members_list_and_end_their_own_sessions(
    appliance: Appliance, member_id: str, other_id: str
) -> None:
    laptop = await appliance.browser(member_id)
    phone = await appliance.browser(member_id)
    theirs = await appliance.browser(other_id)
    listed = await laptop.api("GET", "/api/v1/sessions")
    assert listed.status == 200, listed.text
    items = listed.json()["items"]
    assert len(items) == 2 and sum(i["current"] for i in items) == 1
    stored = appliance.store.call(lambda: [s.id for s in Session.select()])
    assert not any(s in listed.text for s in stored)
    other_phone = next(i["id"] for i in items if not i["current"])
    # Someone else cannot end it: "not found", nothing changes.
    assert (await theirs.api("DELETE", f"/api/v1/sessions/{other_phone}")).status == 404
    assert (await phone.api("GET", "/api/v1/me")).status == 200
    ended = await laptop.api("DELETE", f"/api/v1/sessions/{other_phone}")
    assert ended.status == 204
    assert (await phone.api("GET", "/api/v1/me")).status == 401
    assert (await laptop.api("GET", "/api/v1/me")).status == 200
