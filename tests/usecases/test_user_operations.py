"""Changing, disabling and deleting a user is one operation whoever acts (issue #13 item 3):
the API, the admin page and `/api/v1/me` all make this instance's proxy drop the member's
connections at once and leave the same audit entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import mcp_tool_call
from support.inprocess import Appliance, add_token, add_user, api, start_appliance

from bindify_appliance.store.models import AuditEntry


class Forgets:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def forget(self, connection_id: str) -> None:
        self.ids.append(connection_id)


async def _connection(app: Appliance, admin_token: str, member_token: str) -> str:
    """An open (no sign-in) service and one connection of the member's to it."""
    body = {"id": "open", "name": "Open", "mcp_url": "https://open.example/mcp"}
    made = await api(
        app, "POST", "/api/v1/services", {**body, "auth": {"type": "none"}}, token=admin_token
    )
    assert made.status == 201, made.text
    conn = await api(app, "POST", "/api/v1/connections", {"service": "open"}, token=member_token)
    assert conn.status == 201, conn.text
    return str(conn.json()["connection"]["id"])


def _entries(app: Appliance, action: str) -> list[dict[str, Any]]:
    rows = app.store.call(
        lambda: list(
            AuditEntry.select().where(AuditEntry.action == action).order_by(AuditEntry.seq)
        )
    )
    return [
        {"actor": r.actor_id, "target": r.target_id, "detail": json.loads(r.detail)} for r in rows
    ]


async def test_api_disable_and_delete_forget_the_members_connections(
    appliance: Appliance, admin_token: str, member_id: str, member_token: str
) -> None:
    cid = await _connection(appliance, admin_token, member_token)
    forgets = Forgets()
    appliance.connect.resolver = forgets
    path = f"/api/v1/users/{member_id}"
    off = await api(appliance, "PATCH", path, {"disabled": True}, token=admin_token)
    assert off.status == 200, off.text
    assert forgets.ids == [cid]
    on = await api(appliance, "PATCH", path, {"disabled": False}, token=admin_token)
    assert on.status == 200 and forgets.ids == [cid, cid]
    gone = await api(appliance, "DELETE", path, token=admin_token)
    assert gone.status == 204
    assert forgets.ids == [cid, cid, cid]


async def test_page_actions_forget_and_record_the_role(
    appliance: Appliance, admin_id: str, admin_token: str, member_id: str, member_token: str
) -> None:
    cid = await _connection(appliance, admin_token, member_token)
    forgets = Forgets()
    appliance.connect.resolver = forgets
    admin = await appliance.browser(admin_id)
    page = f"/admin/users/{member_id}"
    for action, done in (("make-admin", "role"), ("disable", "disabled"), ("enable", "enabled")):
        answer = await admin.post(page, {"action": action})
        assert answer.status == 303, answer.text
        assert (answer.location or "").endswith(f"done={done}")
    assert forgets.ids == [cid, cid]  # disable and enable; a role change alone reads no memo
    # The page's entries carry the role, like the API's.
    assert _entries(appliance, "user.role") == [
        {"actor": admin_id, "target": member_id, "detail": {"role": "admin"}}
    ]
    assert _entries(appliance, "user.disable")[0]["detail"] == {"role": "admin"}
    await admin.post(page, {"action": "make-member"})
    deleted = await admin.post(page, {"action": "delete", "confirm": "yes"})
    assert deleted.status == 303
    assert forgets.ids == [cid, cid, cid]
    assert _entries(appliance, "user.delete") == [
        {"actor": admin_id, "target": member_id, "detail": {}}
    ]


async def test_deleting_ones_own_account_forgets_and_is_audited(
    appliance: Appliance, admin_token: str, member_id: str, member_token: str
) -> None:
    cid = await _connection(appliance, admin_token, member_token)
    forgets = Forgets()
    appliance.connect.resolver = forgets
    gone = await api(appliance, "DELETE", "/api/v1/me", token=member_token)
    assert gone.status == 204
    assert forgets.ids == [cid]
    assert _entries(appliance, "user.delete") == [
        {"actor": member_id, "target": member_id, "detail": {}}
    ]


async def test_a_member_disabled_on_the_page_is_refused_by_the_proxy_at_once(
    tmp_path: Path,
) -> None:
    """The composition root's proxy memoises a connection's row with its owner's disabled state;
    the test clock never moves, so only the operation's invalidation makes the next request
    see the disable."""
    import aiohttp

    app = await start_appliance(tmp_path, allow_private_upstreams=True)
    try:
        admin_id = add_user(app, "admin@example.com", "admin")
        member_id = add_user(app, "member@example.com")
        admin_token = add_token(app, admin_id)
        member_token = add_token(app, member_id)
        async with OAuthUpstream(api_keys={"Bearer good-key"}) as up:
            body = {"id": "keyed", "name": "Keyed", "mcp_url": up.mcp_url}
            auth = {"type": "api_key", "header": "Authorization", "prefix": "Bearer "}
            made = await api(
                app, "POST", "/api/v1/services", {**body, "auth": auth}, token=admin_token
            )
            assert made.status == 201, made.text
            key = {"service": "keyed", "api_key": "good-key"}
            conn = await api(app, "POST", "/api/v1/connections", key, token=member_token)
            assert conn.status == 201, conn.text
            url = conn.json()["secret_url"]
            answer = await mcp_tool_call(url, "echo", {"text": "ok"})
            assert answer["result"]["content"][0]["text"] == "echo:ok"

            admin = await app.browser(admin_id)
            off = await admin.post(f"/admin/users/{member_id}", {"action": "disable"})
            assert off.status == 303, off.text
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
            headers = {"Accept": "application/json, text/event-stream"}
            async with (
                aiohttp.ClientSession() as http,
                http.post(url, json=init, headers=headers) as refused,
            ):
                assert refused.status == 403
                assert (await refused.json())["error"]["code"] == -32002
    finally:
        await app.close()
