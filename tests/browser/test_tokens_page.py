"""Personal API tokens through the account's "API tokens" page.

A token created on the page is shown once (with a copy button), works against `/api/v1/me`,
is listed by name (never its text), and stops working the moment it is revoked. A bad name
is refused with a message and makes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from support.appliance import http

from browser.conftest import App, shot, watch

ADMIN = "tokens-admin@example.com"
PASSWORD = "correct horse battery staple"


def _me(app: App, token: str) -> int:
    status, _, body = http(
        "GET", app.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
    )
    if status == 200:
        assert json.loads(body)["user"]["email"] == ADMIN
    return status


def _listed(page: Any, app: App) -> list[dict[str, Any]]:
    response = page.request.get(app.url + "/api/v1/tokens")
    assert response.status == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_create_use_and_revoke_a_token(app: App, context_factory: Any) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    page.goto(app.setup_url())
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(app.url + "/account/tokens")
    assert "You have no API tokens." in page.content()

    # Bad input: an empty (all-space) name and one too long; nothing is made.
    for name, status in (("   ", 400), ("x" * 101, 400)):
        page.goto(app.url + "/account/tokens")
        page.locator("#token-name").evaluate("el => el.removeAttribute('maxlength')")
        page.get_by_label("Token name (what it is for)").fill(name)
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Create token").click()
        assert posted.value.status == status
        assert "name must be 1 to 100 characters" in page.get_by_role("alert").inner_text()
        assert page.locator("#token-value").count() == 0
        assert _listed(page, app) == []

    page.get_by_label("Token name (what it is for)").fill("nightly backup script")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Create token").click()
    assert posted.value.status == 201
    assert posted.value.headers["cache-control"] == "no-store"
    token = page.locator("#token-value").input_value()
    assert token.startswith("bndpat_")
    assert page.get_by_role("button", name="Copy").is_visible()
    shot(page, "account-tokens")
    assert _me(app, token) == 200

    # Listed by name with its dates; the text itself is shown only that once.
    page.goto(app.url + "/account/tokens")
    assert token not in page.content()
    row = page.locator("tr[data-token]")
    assert row.count() == 1
    assert "nightly backup script" in row.inner_text()
    assert "never" not in row.inner_text()  # just used against /api/v1/me
    listed = _listed(page, app)
    assert [t["name"] for t in listed] == ["nightly backup script"]

    page.get_by_role("button", name="Revoke token nightly backup script").click()
    page.wait_for_url(app.url + "/account/tokens?done=revoked")
    assert "Token revoked" in page.get_by_role("status").inner_text()
    assert _me(app, token) == 401
    assert _listed(page, app) == []
    audit = page.request.get(app.url + "/api/v1/audit?action=token.").json()["items"]
    assert sorted(e["action"] for e in audit) == ["token.create", "token.delete"]

    # Revoking again (or someone else's id) is "not found" and changes nothing.
    xsrf = page.locator("input[name=_xsrf]").first.input_value()
    again = page.request.post(
        app.url + f"/account/tokens/{listed[0]['id']}/revoke",
        form={"_xsrf": xsrf},
        max_redirects=0,
    )
    assert again.status == 404
    assert errors == []
