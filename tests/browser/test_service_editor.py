"""The service editor, a built-in's OAuth app form and deleting a service, through the UI.

One appliance for the module; tests run in order and build on each other: the administrator
(set up first) adds services with the editor's full sign-in options, a member connects to one,
and the administrator then moves it (DESIGN §9: the connection needs reconnecting and the proxy
answers -32003 with the member's own key). What the forms store is read back through the API
with the same browser session; refused forms are checked to change nothing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from support.appliance import Appliance, http

from browser.conftest import GOOD_KEY, App, shot, watch

ADMIN = "editor-admin@example.com"
MEMBER = "editor-member@example.com"
PASSWORD = "correct horse battery staple"
NEEDS_RECONNECT = -32003
STATE: dict[str, str] = {}


def _setup(page: Any, app: App) -> None:
    page.goto(app.setup_url())
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")


def _sign_in(page: Any, app: App, email: str) -> None:
    page.goto(app.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(app.url + "/")


def _api(page: Any, app: App, path: str) -> Any:
    response = page.request.get(app.url + path)
    assert response.status == 200, path
    return response.json()


def _service(page: Any, app: App, sid: str) -> dict[str, Any] | None:
    items = _api(page, app, "/api/v1/services?limit=200")["items"]
    return next((s for s in items if s["id"] == sid), None)


def _audits(page: Any, app: App, action: str, target: str) -> int:
    return len(_api(page, app, f"/api/v1/audit?action={action}&target={target}")["items"])


def _call(app: App) -> dict[str, Any]:
    """An MCP request through the appliance with the member's connection API key."""
    status, _, answer = http(
        "POST",
        f"{app.url}/mcp/moving",
        body=json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Authorization": f"Bearer {STATE['api_key']}",
        },
    )
    assert status == 200, answer
    decoded: dict[str, Any] = json.loads(answer)
    return decoded


def _add(page: Any, app: App, sid: str, name: str, url: str, auth: str) -> None:
    page.goto(app.url + "/admin/services")
    page.get_by_label("Id (lower-case letters, digits and -)").fill(sid)
    page.get_by_label("Name").fill(name)
    page.get_by_label("MCP URL").fill(url)
    page.get_by_label("Authentication").select_option(auth)


def test_the_editor_sets_every_sign_in_option(
    app: App, context_factory: Any, upstream: str
) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _setup(page, app)
    _add(page, app, "hdr", "Header tools", upstream, "api_key")
    page.get_by_label("Header", exact=True).fill("X-Api-Key")
    page.get_by_label("Prefix before the key").fill("")
    page.get_by_label("Transport").select_option("sse")
    page.get_by_role("button", name="Add service").click()
    page.wait_for_url(app.url + "/admin/services")
    added = _service(page, app, "hdr")
    assert added is not None
    assert added["auth"]["api_key"] == {"header": "X-Api-Key", "prefix": ""}
    assert added["transport"] == "sse"

    page.get_by_role("link", name="Header tools").click()
    page.wait_for_url(app.url + "/admin/services/hdr")
    # The editor shows what is stored.
    assert page.get_by_label("Header", exact=True).input_value() == "X-Api-Key"
    assert page.get_by_label("Transport").input_value() == "sse"
    page.get_by_label("Sent in").select_option("query")
    page.get_by_label("Query parameter").fill("key")
    page.get_by_label("Transport").select_option("streamable-http")
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url(app.url + "/admin/services/hdr?done=saved#settings")
    assert "Service saved." in page.get_by_role("status").inner_text()
    saved = _service(page, app, "hdr")
    assert saved is not None
    assert saved["auth"]["api_key"] == {"query": "key"}
    assert saved["transport"] == "streamable-http"

    # OAuth with explicit endpoints and a client; the secret is never shown back.
    page.get_by_label("Authentication").select_option("oauth")
    page.get_by_label("Authorization endpoint").fill(upstream + "/authorize")
    page.get_by_label("Token endpoint").fill(upstream + "/token")
    page.get_by_label("Client id (empty: the appliance registers itself)").fill("hdr-client")
    page.get_by_label("Client secret").fill("hdr-secret-value")
    page.get_by_label("Scopes (separated by spaces)").fill("read write")
    page.get_by_role("button", name="Save settings").click()
    page.wait_for_url(app.url + "/admin/services/hdr?done=saved#settings")
    oauth = _service(page, app, "hdr")["auth"]["oauth"]  # type: ignore[index]
    assert oauth["client_id"] == "hdr-client"
    assert oauth["client_secret_source"] == "stored"
    assert oauth["scopes"] == ["read", "write"]
    assert oauth["authorization_url"] == upstream + "/authorize"
    assert "hdr-secret-value" not in page.content()
    assert _audits(page, app, "oauth_app.set", "hdr") == 1
    assert _audits(page, app, "service.update", "hdr") == 1
    assert errors == []


def test_moving_a_service_needs_its_connections_reconnected(
    app: App, context_factory: Any, upstream: str
) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app, ADMIN)
    _add(admin, app, "moving", "Moving tools", upstream, "api_key")
    admin.get_by_role("button", name="Add service").click()
    admin.wait_for_url(app.url + "/admin/services")
    # The form's default keeps the prefix's space (a stripped "Bearer" would fail upstream).
    added = _service(admin, app, "moving")
    assert added is not None
    assert added["auth"]["api_key"] == {"header": "Authorization", "prefix": "Bearer "}
    admin.goto(app.url + "/admin/users")
    admin.get_by_label("Email").fill(MEMBER)
    admin.get_by_role("button", name="Create invitation").click()
    invite = admin.locator("#invite-url").input_value()

    member = watch(context_factory().new_page(), errors)
    member.goto(invite)
    member.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    member.get_by_role("button", name="Set password and sign in").click()
    member.wait_for_url(app.url + "/")
    member.goto(app.url + "/connect/moving")
    member.get_by_label("API key").fill(GOOD_KEY)
    member.get_by_role("button", name="Check key and connect").click()
    member.wait_for_selector("#api-key")
    STATE["api_key"] = member.locator("#api-key").input_value()
    connection = member.url.split("?")[0].rsplit("/", 1)[1]
    assert "result" in _call(app)

    # The page says what a move does, and to how many connections, before anything is saved.
    admin.goto(app.url + "/admin/services/moving")
    note = admin.locator("#reconnect-note").inner_text()
    assert "needs reconnecting" in note and "1 connection would need reconnecting" in note

    # Bad input: the message, what was typed, and nothing changed.
    admin.get_by_label("MCP URL").fill("ftp://example.com/mcp")
    with admin.expect_response(lambda r: r.request.method == "POST") as posted:
        admin.get_by_role("button", name="Save settings").click()
    assert posted.value.status == 400
    assert "mcp_url" in admin.get_by_role("alert").inner_text()
    assert admin.get_by_label("MCP URL").input_value() == "ftp://example.com/mcp"
    assert _service(admin, app, "moving")["mcp_url"] == upstream  # type: ignore[index]
    assert _audits(admin, app, "service.update", "moving") == 0
    assert "result" in _call(app)

    admin.goto(app.url + "/admin/services/moving")
    admin.get_by_label("MCP URL").fill(upstream + "/v2")
    admin.get_by_role("button", name="Save settings").click()
    admin.wait_for_url(app.url + "/admin/services/moving?done=saved#settings")
    shot(admin, "admin-service-edit")
    assert _service(admin, app, "moving")["mcp_url"] == upstream + "/v2"  # type: ignore[index]
    row = _api(member, app, f"/api/v1/connections/{connection}")["connection"]
    assert row["status"] == "needs_reconnect"
    answer = _call(app)
    assert answer["error"]["code"] == NEEDS_RECONNECT, answer
    assert _audits(admin, app, "service.update", "moving") == 1
    assert errors == []


def test_deleting_a_service(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, ADMIN)
    page.goto(app.url + "/admin/services/moving")
    # Without the confirmation box, and while a connection uses it: refused, nothing deleted.
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Delete service").click()
    assert posted.value.status == 400
    assert "Nothing was deleted" in page.get_by_role("alert").inner_text()
    page.get_by_label("Yes, delete this service").check()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Delete service").click()
    assert posted.value.status == 409
    assert "Connections still use this service" in page.get_by_role("alert").inner_text()
    assert _service(page, app, "moving") is not None
    assert _audits(page, app, "service.delete", "moving") == 0

    page.goto(app.url + "/admin/services/hdr")
    assert "No connection uses this service." in page.content()
    page.get_by_label("Yes, delete this service").check()
    page.get_by_role("button", name="Delete service").click()
    page.wait_for_url(app.url + "/admin/services?done=deleted")
    assert page.get_by_role("status").inner_text() == "Service deleted."
    assert _service(page, app, "hdr") is None
    assert _audits(page, app, "service.delete", "hdr") == 1
    assert errors == []


def test_builtin_oauth_app(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app, ADMIN)
    page.goto(app.url + "/admin/services/github")
    assert page.get_by_role("button", name="Save settings").count() == 0  # built-in
    assert page.get_by_role("button", name="Delete service").count() == 0
    page.get_by_label("Client id (empty: remove the app)").fill("gh-app-id")
    page.get_by_label("Client secret").fill("gh-secret-value")
    page.get_by_role("button", name="Save OAuth app").click()
    page.wait_for_url(app.url + "/admin/services/github?done=oauth-app#oauth-app")
    assert "gh-secret-value" not in page.content()
    oauth = _service(page, app, "github")["auth"]["oauth"]  # type: ignore[index]
    assert (oauth["client_id"], oauth["client_secret_source"]) == ("gh-app-id", "stored")
    # A blank secret keeps the stored one.
    page.get_by_label("Client id (empty: remove the app)").fill("gh-app-2")
    page.get_by_role("button", name="Save OAuth app").click()
    page.wait_for_url(app.url + "/admin/services/github?done=oauth-app#oauth-app")
    oauth = _service(page, app, "github")["auth"]["oauth"]  # type: ignore[index]
    assert (oauth["client_id"], oauth["client_secret_source"]) == ("gh-app-2", "stored")
    assert _audits(page, app, "oauth_app.set", "github") == 2
    # Bad input (a client id longer than the API takes) changes nothing.
    page.locator("#app-client-id").evaluate("el => el.removeAttribute('maxlength')")
    page.get_by_label("Client id (empty: remove the app)").fill("x" * 501)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Save OAuth app").click()
    assert posted.value.status == 400
    assert page.get_by_role("alert").is_visible()
    oauth = _service(page, app, "github")["auth"]["oauth"]  # type: ignore[index]
    assert oauth["client_id"] == "gh-app-2"
    assert _audits(page, app, "oauth_app.set", "github") == 2
    assert errors == []


def test_builtin_oauth_app_set_by_environment(context_factory: Any) -> None:
    """With `BINDIFY_GITHUB_CLIENT_ID` set the page says so and offers no form (DESIGN §4)."""
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {"BINDIFY_GITHUB_CLIENT_ID": "env-client", "BINDIFY_GITHUB_CLIENT_SECRET": "s" * 24}
        appliance = Appliance(Path(tmp) / "data", env).start()
        try:
            other = App(appliance)
            page = watch(context_factory().new_page(), errors)
            _setup(page, other)
            page.goto(other.url + "/admin/services/github")
            section = page.get_by_role("region", name="OAuth app").inner_text()
            assert "Set by environment" in section and "BINDIFY_GITHUB_CLIENT_ID" in section
            assert "s" * 24 not in page.content()
            assert page.get_by_role("button", name="Save OAuth app").count() == 0
            # A post anyway is refused and changes nothing.
            token = page.locator("input[name=_xsrf]").first.input_value()
            response = page.request.post(
                other.url + "/admin/services/github/oauth-app",
                form={"_xsrf": token, "client_id": "other"},
                max_redirects=0,
            )
            assert response.status == 409
            oauth = _service(page, other, "github")["auth"]["oauth"]  # type: ignore[index]
            assert oauth["client_id"] == "env-client"
        finally:
            appliance.stop()
    assert errors == []
