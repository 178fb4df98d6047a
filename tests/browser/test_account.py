"""Setup without JavaScript, password change, and user management on /admin/users.

One appliance for the module; tests run in order: the first creates the administrator through
the printed setup URL in a browser with JavaScript disabled, the others build on it.
"""

from __future__ import annotations

import re
from typing import Any

from browser.conftest import App, shot, watch

ADMIN = "owner@example.com"
FIRST = "correct horse battery staple"
SECOND = "another long passphrase"
MEMBER = "helper@example.com"


def _sign_in(page: Any, app: App, email: str, password: str) -> None:
    page.goto(app.url + "/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _row(page: Any, email: str) -> Any:
    return page.locator("tbody tr", has_text=email)


def test_setup_with_javascript_disabled(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory(javascript=False).new_page(), errors)
    page.goto(app.setup_url())
    assert page.locator("#warn-https").is_visible()
    # The form is refused without the acknowledgement (the browser's own `required`)...
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(FIRST)
    page.get_by_role("button", name="Create administrator and sign in").click()
    assert "/setup" in page.url
    # ...and with it a plain form POST creates the administrator and signs in.
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")
    assert page.get_by_role("heading", name="Your connections").is_visible()
    assert ADMIN in page.content()
    assert page.goto(app.setup_url()).status == 404
    assert errors == []


def test_password_change_ends_other_sessions(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    here = watch(context_factory().new_page(), errors)
    elsewhere = watch(context_factory().new_page(), errors)
    for page in (here, elsewhere):
        _sign_in(page, app, ADMIN, FIRST)
        page.wait_for_url(app.url + "/")
    here.get_by_role("link", name="Password").click()
    here.wait_for_url(app.url + "/account/password")
    shot(here, "account-password")
    here.get_by_label("Current password").fill("not the password")
    here.get_by_label("New password (at least 10 characters)").fill(SECOND)
    here.get_by_role("button", name="Change password").click()
    assert here.get_by_role("alert").inner_text() == "The current password is not correct."
    here.get_by_label("Current password").fill(FIRST)
    here.get_by_label("New password (at least 10 characters)").fill(SECOND)
    here.get_by_role("button", name="Change password").click()
    here.wait_for_url(app.url + "/account/password?done=changed")
    assert "other sessions were signed out" in here.get_by_role("status").inner_text()
    # This browser carries on; the other one is signed out.
    here.goto(app.url + "/")
    assert here.get_by_role("heading", name="Your connections").is_visible()
    elsewhere.goto(app.url + "/")
    assert re.search(r"/login\?next=", elsewhere.url)
    # The old password no longer works; the new one does.
    _sign_in(elsewhere, app, ADMIN, FIRST)
    assert elsewhere.get_by_role("alert").inner_text() == "Incorrect email or password."
    _sign_in(elsewhere, app, ADMIN, SECOND)
    elsewhere.wait_for_url(app.url + "/")
    assert errors == []


def test_admin_manages_users(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    admin = watch(context_factory().new_page(), errors)
    _sign_in(admin, app, ADMIN, SECOND)
    admin.wait_for_url(app.url + "/")
    admin.goto(app.url + "/admin/users")
    # The last administrator cannot demote or disable themselves: a readable message, no change.
    _row(admin, ADMIN).get_by_role("button", name="Make member").click()
    assert "no active administrator" in admin.get_by_role("alert").inner_text()
    assert _row(admin, ADMIN).locator("td").nth(1).inner_text() == "admin"
    _row(admin, ADMIN).get_by_role("button", name="Disable").click()
    assert "no active administrator" in admin.get_by_role("alert").inner_text()
    assert _row(admin, ADMIN).locator("td").nth(2).inner_text() == "active"

    # A member joins through an invite.
    admin.goto(app.url + "/admin/users")
    admin.get_by_label("Email").fill(MEMBER)
    admin.get_by_role("button", name="Create invitation").click()
    invite = admin.locator("#invite-url").input_value()
    member = watch(context_factory().new_page(), errors)
    member.goto(invite)
    member.get_by_label("Password (at least 10 characters)").fill(FIRST)
    member.get_by_role("button", name="Set password and sign in").click()
    member.wait_for_url(app.url + "/")

    admin.goto(app.url + "/admin/users")
    _row(admin, MEMBER).get_by_role("button", name="Make admin").click()
    admin.wait_for_url(app.url + "/admin/users?done=role")
    assert admin.get_by_role("status").inner_text() == "Role changed."
    assert _row(admin, MEMBER).locator("td").nth(1).inner_text() == "admin"
    _row(admin, MEMBER).get_by_role("button", name="Make member").click()
    admin.wait_for_url(app.url + "/admin/users?done=role")
    assert _row(admin, MEMBER).locator("td").nth(1).inner_text() == "member"

    # Disabling signs the member out at once; enabling lets them sign in again.
    _row(admin, MEMBER).get_by_role("button", name="Disable").click()
    admin.wait_for_url(app.url + "/admin/users?done=disabled")
    assert _row(admin, MEMBER).locator("td").nth(2).inner_text() == "disabled"
    shot(admin, "admin-users-managed")
    member.goto(app.url + "/")
    assert "/login" in member.url
    _sign_in(member, app, MEMBER, FIRST)
    assert "disabled" in member.get_by_role("alert").inner_text()
    _row(admin, MEMBER).get_by_role("button", name="Enable").click()
    admin.wait_for_url(app.url + "/admin/users?done=enabled")
    _sign_in(member, app, MEMBER, FIRST)
    member.wait_for_url(app.url + "/")

    # Delete asks first; cancelling keeps the user, confirming removes them.
    _row(admin, MEMBER).get_by_role("button", name="Delete").click()
    assert admin.get_by_role("heading", name=f"Delete {MEMBER}?").is_visible()
    admin.get_by_role("link", name="Cancel").click()
    admin.wait_for_url(app.url + "/admin/users")
    _row(admin, MEMBER).get_by_role("button", name="Delete").click()
    # A plain delete (no revocation at the providers): untick it, then "Remove member".
    admin.get_by_label("Revoke their grants", exact=False).uncheck()
    admin.get_by_role("button", name="Remove member").click()
    admin.wait_for_url(app.url + "/admin/users?done=deleted")
    assert _row(admin, MEMBER).count() == 0
    member.goto(app.url + "/")
    assert "/login" in member.url
    assert errors == []
