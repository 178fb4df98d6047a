"""axe-core on the main pages: no "serious" or "critical" violations (contrast, labels, landmarks).

The tool-policy forms are checked blank, saved and showing an error, on the service page and
on the connection page (beside the administrator's policy).

axe.min.js comes from npm (`tests/browser/package.json`). Injecting it is an inline script, which
the pages' CSP refuses, so these contexts bypass CSP — only here; every other browser test keeps
the real policy. One appliance for the module: the first test goes through setup, the next
ones build on the administrator and the API-key service it leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser.conftest import GOOD_KEY, App

ADMIN = "axe-admin@example.com"
PASSWORD = "correct horse battery staple"
BAD = ("serious", "critical")

_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    targets: v.nodes.slice(0, 5).map(n => n.target.join(" ")),
  }));
}"""


def _violations(page: Any, axe: Path) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(axe))
    found: list[dict[str, Any]] = page.evaluate(_RUN)
    return [v for v in found if v["impact"] in BAD]


def _check(page: Any, axe: Path, url: str, failures: dict[str, Any]) -> None:
    response = page.goto(url)
    assert response is not None and response.status < 400, url
    bad = _violations(page, axe)
    if bad:
        failures[url] = bad


def test_axe_finds_nothing_serious(
    app: App, context_factory: Any, upstream: str, axe_script: Path
) -> None:
    failures: dict[str, Any] = {}
    page = context_factory(bypass_csp=True).new_page()
    setup = app.setup_url()
    _check(page, axe_script, setup, failures)
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")

    anonymous = context_factory(bypass_csp=True).new_page()
    _check(anonymous, axe_script, app.url + "/login", failures)

    page.goto(app.url + "/admin/services")
    page.get_by_label("Id (lower-case letters, digits and -)").fill("axe")
    page.get_by_label("Name").fill("Acme axe")
    page.get_by_label("MCP URL").fill(upstream)
    page.get_by_label("Authentication").select_option("api_key")
    page.get_by_role("button", name="Add service").click()
    page.wait_for_url(app.url + "/admin/services")

    _check(page, axe_script, app.url + "/connect", failures)
    _check(page, axe_script, app.url + "/connect/axe", failures)
    page.get_by_label("API key").fill(GOOD_KEY)
    page.get_by_role("button", name="Check key and connect").click()
    page.wait_for_selector("#secret-url")
    bad = _violations(page, axe_script)  # the result page, secrets on screen
    if bad:
        failures["connection result"] = bad
    connection = page.url.split("?")[0]
    _check(page, axe_script, connection, failures)  # the connection page afterwards
    # The connection's tool-policy form with an error on it, and the admin's policy beside it.
    page.get_by_label("Allowed tools (empty: every tool)").fill("x" * 201)
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_selector("#policy-error")
    bad = _violations(page, axe_script)
    if bad:
        failures["connection policy error"] = bad
    # The service page's policy form, blank, then saved, then with an error.
    _check(page, axe_script, app.url + "/admin/services/axe", failures)
    page.get_by_label("Denied tools (win over allowed)").fill("delete_*")
    page.get_by_label("Read-only: only tools the server marks read-only").check()
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_url(app.url + "/admin/services/axe?done=policy")
    bad = _violations(page, axe_script)
    if bad:
        failures["service policy saved"] = bad
    _check(page, axe_script, connection, failures)  # now with the admin's policy shown
    page.goto(app.url + "/admin/services/axe")
    page.get_by_label("Denied tools (win over allowed)").fill("bad\tglob")
    page.get_by_role("button", name="Save policy").click()
    page.wait_for_selector("#policy-error")
    bad = _violations(page, axe_script)
    if bad:
        failures["service policy error"] = bad
    _check(page, axe_script, connection + "/reconnect", failures)
    # The service editor with an error on it, a built-in's OAuth app form, the tokens page
    # blank, with a new token shown once, and with an error.
    page.goto(app.url + "/admin/services/axe")
    page.locator("#surl").fill("ftp://not-an-mcp-server")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_role("alert").wait_for()
    bad = _violations(page, axe_script)
    if bad:
        failures["service settings error"] = bad
    _check(page, axe_script, app.url + "/admin/services/github", failures)
    _check(page, axe_script, app.url + "/account/tokens", failures)
    page.get_by_label("Token name (what it is for)").fill("axe script")
    page.get_by_role("button", name="Create token").click()
    page.wait_for_selector("#token-value")
    bad = _violations(page, axe_script)
    if bad:
        failures["token created"] = bad
    page.locator("#token-name").evaluate("el => el.removeAttribute('maxlength')")
    page.get_by_label("Token name (what it is for)").fill("x" * 101)
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("alert").wait_for()
    bad = _violations(page, axe_script)
    if bad:
        failures["token error"] = bad
    # "/account/password" carries the sign-in sessions section.
    pages = ("/", "/account/password", "/admin/users", "/admin/services", "/admin/keys")
    for path in (*pages, "/admin/jobs", "/admin/connections"):
        _check(page, axe_script, app.url + path, failures)

    # "Remove member": the confirmation page, then the results page.
    page.goto(app.url + "/admin/users")
    page.get_by_label("Email").fill("axe-leaver@example.com")
    page.get_by_role("button", name="Create invitation").click()
    page.get_by_role("button", name="Delete axe-leaver@example.com").click()
    page.wait_for_selector("#revoke")
    bad = _violations(page, axe_script)
    if bad:
        failures["remove member confirmation"] = bad
    page.get_by_role("button", name="Remove member").click()
    page.get_by_role("heading", name="Member removed").wait_for()
    bad = _violations(page, axe_script)
    if bad:
        failures["remove member results"] = bad
    assert failures == {}
