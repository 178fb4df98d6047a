"""The UI in a real browser: first-run setup, sign-in/out, API-key connect, roles, rename/delete.

One appliance process per module (tests run in order and build on each other's state: the
first creates the administrator through the printed setup URL).
"""

from __future__ import annotations

import re
from typing import Any

from browser.conftest import GOOD_KEY, App, shot, watch

ADMIN = "admin@example.com"
PASSWORD = "correct horse battery staple"


def _sign_in(page: Any, app: App, email: str = ADMIN) -> None:
    page.goto(app.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(app.url + "/")


def _add_key_service(page: Any, app: App, upstream: str, sid: str) -> None:
    page.goto(app.url + "/admin/services")
    page.get_by_label("Id (lower-case letters, digits and -)").fill(sid)
    page.get_by_label("Name").fill(f"Acme {sid}")
    page.get_by_label("MCP URL").fill(upstream)
    page.get_by_label("Authentication").select_option("api_key")
    page.get_by_role("button", name="Add service").click()
    page.wait_for_url(app.url + "/admin/services")


def _connect_with_key(page: Any, app: App, sid: str, key: str = GOOD_KEY) -> None:
    page.goto(app.url + "/connect")
    page.get_by_role("link", name=f"Acme {sid}").click()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Check key and connect").click()


def test_first_run_setup_through_the_printed_url(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    response = page.goto(app.setup_url())
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert page.locator("#warn-https").is_visible()  # http base URL: warned
    assert "master-keys.json" in page.content()
    shot(page, "setup")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")
    assert page.get_by_role("heading", name="Your connections").is_visible()
    assert ADMIN in page.content()
    # The setup URL is single-use.
    assert page.goto(app.setup_url()).status == 404
    assert errors == []


def test_sign_out_and_in(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    page.goto(app.url + "/")
    page.wait_for_url(re.compile(r".*/login\?next=.*"))
    shot(page, "login")
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    _sign_in(page, app)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(app.url + "/login")
    page.goto(app.url + "/")
    assert "/login" in page.url
    assert errors == []


def test_api_key_connect_shows_secrets_once(app: App, context_factory: Any, upstream: str) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app)
    _add_key_service(page, app, upstream, "acme")
    shot(page, "admin-services")
    page.goto(app.url + "/connect")
    shot(page, "catalogue")
    # A wrong key is refused with a readable message and nothing is created.
    _connect_with_key(page, app, "acme", "bad-key")
    assert page.get_by_role("alert").is_visible()
    assert "bad-key" not in page.content()
    shot(page, "connect-api-key")
    _connect_with_key(page, app, "acme")
    page.wait_for_selector("#secret-url")
    secret_url = page.locator("#secret-url").input_value()
    api_key = page.locator("#api-key").input_value()
    assert re.fullmatch(re.escape(app.url) + r"/mcp/acme/[A-Za-z0-9_\-]{86}", secret_url)
    assert api_key.startswith("bnd_")
    assert "claim=" not in page.url  # removed from the address bar
    assert page.locator("#cfg-cursor").text_content().count(api_key) == 1  # header form
    assert page.locator("#cfg-chatgpt").text_content() == secret_url  # no header field there
    page.get_by_text("Cursor", exact=True).click()
    assert page.locator("button.copy").first.is_visible()
    shot(page, "connection-secrets")
    page.reload()
    assert secret_url not in page.content() and api_key not in page.content()
    page.goto(app.url + "/")
    assert page.get_by_role("link", name="Acme acme").is_visible()
    shot(page, "dashboard")
    assert errors == []


def test_member_is_kept_out_of_admin_pages(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app)
    admin.goto(app.url + "/admin/users")
    admin.get_by_label("Email").fill("member@example.com")
    admin.get_by_role("button", name="Create invitation").click()
    invite = admin.locator("#invite-url").input_value()
    shot(admin, "admin-users")
    member = watch(context_factory(width=390).new_page(), errors)
    member.goto(invite)
    member.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    member.get_by_role("button", name="Set password and sign in").click()
    member.wait_for_url(app.url + "/")
    assert member.get_by_role("link", name="Users").count() == 0
    shot(member, "dashboard-phone")
    for path in ("/admin/users", "/admin/services", "/admin/keys", "/admin/jobs"):
        response = member.goto(app.url + path)
        assert response.status == 403, path
        assert member.get_by_role("heading", name="403 · Not allowed").is_visible()
    for path in ("/admin/keys", "/admin/jobs"):
        assert admin.goto(app.url + path).status == 200
        shot(admin, path.rsplit("/", 1)[1])
    assert errors == []


def test_rename_and_delete(app: App, context_factory: Any, upstream: str) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _sign_in(page, app)
    _connect_with_key(page, app, "acme")
    page.wait_for_selector("#secret-url")
    connection_path = page.url.split("?")[0].removeprefix(app.url)
    page.goto(app.url + "/")
    card = page.locator("li.card", has=page.locator(f'a[href="{connection_path}"]'))
    card.get_by_label("New name").fill("<b>My renamed</b>")
    card.get_by_role("button", name="Rename").click()
    page.wait_for_url(app.url + "/?done=renamed")
    assert page.get_by_role("link", name="<b>My renamed</b>").is_visible()  # escaped, literal
    card = page.locator("li.card", has=page.locator(f'a[href="{connection_path}"]'))
    card.get_by_role("link", name="Delete").click()
    shot(page, "confirm-delete")
    page.get_by_role("button", name="Delete connection").click()
    page.wait_for_url(app.url + "/?done=deleted")
    assert page.locator(f'a[href="{connection_path}"]').count() == 0
    assert page.goto(app.url + connection_path).status == 404
    assert errors == []


def test_setup_free_flows_without_javascript(app: App, context_factory: Any, upstream: str) -> None:
    errors: list[str] = []
    page = watch(context_factory(javascript=False).new_page(), errors)
    _sign_in(page, app)
    _connect_with_key(page, app, "acme")
    page.wait_for_selector("#secret-url")
    assert page.locator("#secret-url").input_value().startswith(app.url + "/mcp/acme/")
    assert not page.locator("button.copy").first.is_visible()  # nothing to copy with, no script
    assert "claim=" in page.url  # no script: the claim stays, but it is already used
    page.reload()
    assert page.locator("#secret-url").count() == 0
    assert "already shown" in page.content()
    assert errors == []
