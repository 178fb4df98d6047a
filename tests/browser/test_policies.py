"""Tool policies through the UI (DESIGN §13): the service form and the connection form.

One appliance for the module; tests run in order and build on each other: the administrator
(set up first) adds an API-key service and denies `delete_*` on it, a member connects to it
and narrows or tries to widen the policy on their connection page. What the forms store is
read back through the API with the same browser session; what the proxy enforces is checked
with real MCP `tools/call` requests through the appliance (the upstream answers any call, so a
refusal can only come from the policy).
"""

from __future__ import annotations

import json
from typing import Any

from support.appliance import http

from browser.conftest import GOOD_KEY, SHOTS, App, shot, watch

ADMIN = "policy-admin@example.com"
MEMBER = "policy-member@example.com"
PASSWORD = "correct horse battery staple"
SID = "tools"
NOT_ALLOWED = -31005
# Filled by the tests in order: the member's connection id and API key.
STATE: dict[str, str] = {}


def _sign_in(page: Any, app: App, email: str) -> None:
    page.goto(app.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(app.url + "/")


def _api(page: Any, path: str) -> Any:
    """GET an API path with the page's own session cookie (same origin as the page)."""
    origin = "/".join(page.url.split("/", 3)[:3])
    response = page.request.get(origin + path)
    assert response.status == 200, path
    return response.json()


def _service_policy(page: Any) -> Any:
    services = _api(page, "/api/v1/services?limit=200")["items"]
    return next(s for s in services if s["id"] == SID)["policy"]


def _policy_audits(page: Any) -> int:
    """How many `service.update` audit entries record a policy change of the service."""
    entries = _api(page, "/api/v1/audit?action=service.update&target=" + SID)["items"]
    return sum(e["detail"].get("fields") == ["policy"] for e in entries)


def _connection_policy(page: Any) -> Any:
    return _api(page, f"/api/v1/connections/{STATE['connection']}")["connection"]["policy"]


def _call(app: App, tool: str) -> dict[str, Any]:
    """A real MCP tools/call through the appliance with the member's connection API key."""
    body = {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": tool}}
    status, _, answer = http(
        "POST",
        f"{app.url}/mcp/{SID}",
        body=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {STATE['api_key']}",
        },
    )
    assert status == 200, answer
    decoded: dict[str, Any] = json.loads(answer)
    assert decoded["id"] == 41
    return decoded


def _refused(app: App, tool: str) -> bool:
    answer = _call(app, tool)
    if "error" in answer:
        assert answer["error"]["code"] == NOT_ALLOWED, answer
        return True
    assert "result" in answer, answer
    return False


def _fill_policy(page: Any, allow: str, deny: str, read_only: bool = False) -> None:
    page.get_by_label("Allowed tools (empty: every tool)").fill(allow)
    page.get_by_label("Denied tools (win over allowed)").fill(deny)
    page.get_by_label("Read-only: only tools the server marks read-only").set_checked(read_only)


def test_admin_sets_the_service_policy(app: App, context_factory: Any, upstream: str) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    page.goto(app.setup_url())
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")
    page.goto(app.url + "/admin/services")
    page.get_by_label("Id (lower-case letters, digits and -)").fill(SID)
    page.get_by_label("Name").fill("Acme tools")
    page.get_by_label("MCP URL").fill(upstream)
    page.get_by_label("Authentication").select_option("api_key")
    page.get_by_role("button", name="Add service").click()
    page.wait_for_url(app.url + "/admin/services")

    page.get_by_role("link", name="Acme tools").click()
    page.wait_for_url(app.url + f"/admin/services/{SID}")
    assert "No policy is set" in page.content()
    _fill_policy(page, "", "delete_*\n\n  drop_*  \n", read_only=False)
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(app.url + f"/admin/services/{SID}?done=policy")
    assert page.get_by_role("status").inner_text() == "Tool policy saved."
    # Blank lines and surrounding spaces are dropped; the form shows what is stored.
    assert page.get_by_label("Denied tools (win over allowed)").input_value() == "delete_*\ndrop_*"
    assert _service_policy(page) == {
        "tools": {"allow": [], "deny": ["delete_*", "drop_*"]},
        "read_only": False,
    }
    shot(page, "admin-service-policy")

    # Read-only, then cleared, then set again for the member's tests.
    page.get_by_label("Read-only: only tools the server marks read-only").check()
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(app.url + f"/admin/services/{SID}?done=policy")
    assert _service_policy(page)["read_only"] is True
    page.get_by_role("button", name="Clear policy").click()
    page.wait_for_url(app.url + f"/admin/services/{SID}?done=policy-cleared")
    assert _service_policy(page) is None
    assert page.get_by_label("Denied tools (win over allowed)").input_value() == ""
    _fill_policy(page, "", "delete_*")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(app.url + f"/admin/services/{SID}?done=policy")
    assert _service_policy(page) == {
        "tools": {"allow": [], "deny": ["delete_*"]},
        "read_only": False,
    }
    assert _policy_audits(page) == 4  # audited as the API's PATCH is
    assert errors == []


def test_bad_service_globs_show_an_error_and_change_nothing(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, ADMIN)
    before = {"tools": {"allow": [], "deny": ["delete_*"]}, "read_only": False}
    for allow, deny, words in (
        ("search_*", "x" * 201, "Denied tools: each line must be 1-200 characters"),
        ("get_\trepo", "", "Allowed tools: lines must not contain control characters"),
        ("\n".join(f"t{i}" for i in range(201)), "", "Allowed tools: use at most 200 globs"),
    ):
        page.goto(app.url + f"/admin/services/{SID}")
        _fill_policy(page, allow, deny, read_only=True)
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Save policy").click()
        assert posted.value.status == 400
        alert = page.get_by_role("alert").inner_text()
        assert alert.startswith(words) and "Nothing was changed" in alert
        assert "x" * 201 not in alert  # the glob is never echoed in the message
        # What was typed stays in the form to fix; nothing is stored.
        assert page.get_by_label("Allowed tools (empty: every tool)").input_value() == allow
        assert page.get_by_label("Read-only: only tools the server marks read-only").is_checked()
        assert _service_policy(page) == before
    # A control character the browser's textarea would not send is refused too, never
    # cleaned into something else and stored.
    token = page.locator("input[name=_xsrf]").first.input_value()
    response = page.request.post(
        app.url + f"/admin/services/{SID}/policy",
        form={"_xsrf": token, "action": "save", "deny": "drop\x1b_*"},
        max_redirects=0,
    )
    assert response.status == 400
    assert "control characters" in response.text()
    assert _service_policy(page) == before
    assert _policy_audits(page) == 4
    assert errors == []


def test_member_narrows_the_policy_on_their_connection(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app, ADMIN)
    admin.goto(app.url + "/admin/users")
    admin.get_by_label("Email").fill(MEMBER)
    admin.get_by_role("button", name="Create invitation").click()
    invite = admin.locator("#invite-url").input_value()

    page = watch(context_factory().new_page(), errors)
    page.goto(invite)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_role("button", name="Set password and sign in").click()
    page.wait_for_url(app.url + "/")
    page.goto(app.url + "/connect")
    page.get_by_role("link", name="Acme tools").click()
    page.get_by_label("API key").fill(GOOD_KEY)
    page.get_by_role("button", name="Check key and connect").click()
    page.wait_for_selector("#api-key")
    STATE["api_key"] = page.locator("#api-key").input_value()
    STATE["connection"] = page.url.split("?")[0].rsplit("/", 1)[1]
    connection_url = app.url + f"/connections/{STATE['connection']}"

    # Only the admin's policy so far.
    assert _refused(app, "delete_repo")
    assert not _refused(app, "search_code")

    page.goto(connection_url)
    mine = page.get_by_role("group", name="Set by the administrator")
    assert "delete_*" in mine.inner_text()
    assert "only narrow" in page.get_by_role("region", name="Tool policy").inner_text()
    _fill_policy(page, "", "search_*")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(connection_url + "?done=policy#tool-policy")
    assert page.get_by_role("status").inner_text() == "Tool policy saved."
    assert _connection_policy(page) == {
        "tools": {"allow": [], "deny": ["search_*"]},
        "read_only": False,
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    section = page.get_by_role("region", name="Tool policy")
    section.screenshot(path=str(SHOTS / "connection-policy.png"))
    # The merge: the member's deny adds to the admin's; other tools still go through.
    assert _refused(app, "search_code")
    assert _refused(app, "delete_repo")
    assert not _refused(app, "get_repo")
    assert errors == []


def test_a_member_cannot_widen_the_admins_policy(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, MEMBER)
    connection_url = app.url + f"/connections/{STATE['connection']}"
    page.goto(connection_url)
    # Allowing the admin-denied tool by name and by wildcard brings nothing back.
    _fill_policy(page, "delete_repo\n*", "")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(connection_url + "?done=policy#tool-policy")
    assert _connection_policy(page)["tools"]["allow"] == ["delete_repo", "*"]
    assert _refused(app, "delete_repo")
    assert not _refused(app, "search_code")  # the member's own earlier deny is gone

    # Bad input on the member's form: a readable error, the stored policy unchanged.
    stored = _connection_policy(page)
    _fill_policy(page, "y" * 201, "")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save policy").click()
    assert posted.value.status == 400
    assert page.get_by_role("alert").inner_text().startswith("Allowed tools: each line must")
    assert _connection_policy(page) == stored
    assert not _refused(app, "search_code")

    # Clearing the member's policy leaves the admin's in force.
    page.goto(connection_url)
    page.get_by_role("button", name="Clear policy").click()
    page.wait_for_url(connection_url + "?done=policy-cleared#tool-policy")
    assert _connection_policy(page) is None
    assert _refused(app, "delete_repo")
    assert not _refused(app, "get_repo")
    assert errors == []


def test_another_users_connection_policy_is_not_found(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, ADMIN)  # an administrator, but not the owner
    page.goto(app.url + f"/admin/services/{SID}")
    token = page.locator("input[name=_xsrf]").first.input_value()
    response = page.request.post(
        app.url + f"/connections/{STATE['connection']}/policy",
        form={"_xsrf": token, "action": "save", "deny": "*"},
    )
    assert response.status == 404
    assert errors == []
