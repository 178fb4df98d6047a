"""The sign-in pages as a browser sees them, and the whole first run against `bindify serve`."""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest
from accounts.test_setup_invite import invite, setup_path
from support.appliance import Appliance
from support.inprocess import PASSWORD, Browser, Server, fetch

SETUP_URL = re.compile(r"(http://127\.0\.0\.1:\d+)(/setup\?token=[A-Za-z0-9_-]{43})")


class _Form(HTMLParser):
    """Collects inputs and the labels that point at them."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.labels: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "input" and values.get("name"):
            self.inputs[str(values["name"])] = values
        if tag == "label" and values.get("for"):
            self.labels.add(str(values["for"]))


def form_of(html: str) -> _Form:
    parser = _Form()
    parser.feed(html)
    return parser


def assert_labelled(html: str, *names: str) -> None:
    form = form_of(html)
    assert "_xsrf" in form.inputs
    for name in names:
        field = form.inputs[name]
        assert field.get("id") in form.labels, name


async def test_login_page(server: Server) -> None:
    response = await Browser(server.url).get("/login")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert_labelled(response.text, "email", "password")
    assert form_of(response.text).inputs["password"]["type"] == "password"
    assert "No administrator exists yet" in response.text  # first run hint


async def test_input_is_escaped_when_a_form_comes_back(server: Server, admin_id: str) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    evil = '"><script>alert(1)</script>@example.com'
    response = await browser.post(
        "/login", {"email": evil, "password": "x", "next": '/"><script>x</script>'}
    )
    assert response.status == 400
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text or "&quot;&gt;" in response.text
    assert "No administrator exists yet" not in response.text


async def test_forms_without_the_csrf_token_are_refused(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    for path, form in (
        ("/login", {"email": "member@example.com", "password": PASSWORD}),
        ("/setup", {"token": "x", "email": "a@example.com", "password": PASSWORD}),
        ("/invite", {"token": "x", "password": PASSWORD}),
        ("/logout", {}),
    ):
        response = await browser.request("POST", path, form=form, xsrf=False)
        assert response.status == 403, path
        assert "form expired" in response.text
        assert response.headers["Content-Type"].startswith("text/html")
        # A token from another browser does not help either.
        forged = await browser.request(
            "POST", path, form={**form, "_xsrf": "2|deadbeef|" + "0" * 32 + "|1"}, xsrf=False
        )
        assert forged.status == 403, path
    assert "bindify_session" not in browser.cookies


async def test_home_needs_a_session_and_offers_sign_out(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    anonymous = await browser.get("/")
    assert anonymous.status == 302 and anonymous.location == "/login?" + urlencode({"next": "/"})
    await browser.login("member@example.com")
    home = await browser.get("/")
    assert home.status == 200 and "member@example.com" in home.text
    assert 'action="/logout"' in home.text and "_xsrf" in form_of(home.text).inputs
    assert (await browser.get("/login")).status == 302  # already signed in


async def test_error_pages_are_html_and_say_nothing_secret(server: Server) -> None:
    response = await Browser(server.url).get("/setup?token=secret-looking-value")
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "secret-looking-value" not in response.text
    api_missing = await fetch(server.url + "/api/v1/nope")
    assert api_missing.headers["Content-Type"] == "application/json"


async def test_setup_and_invite_pages_are_labelled(server: Server, admin_token: str) -> None:
    browser = Browser(server.url)
    setup_page = await browser.get(setup_path(server))
    assert_labelled(setup_page.text, "email", "password")
    invite_page = await browser.get(await invite(server, admin_token, "n@example.com"))
    assert_labelled(invite_page.text, "password")


@pytest.mark.slow
@pytest.mark.binary
def test_first_run_end_to_end(tmp_path: Path) -> None:
    """`bindify serve` prints the setup URL; a browser creates the admin and is signed in."""
    data = tmp_path / "data"
    data.mkdir()
    appliance = Appliance(data).start()
    try:
        deadline = time.monotonic() + 20
        match = None
        while match is None and time.monotonic() < deadline:
            match = SETUP_URL.search(appliance.stderr())
            if match is None:
                time.sleep(0.05)
        assert match is not None, appliance.stderr()
        origin, path = match.group(1), match.group(2)

        async def flow() -> None:
            browser = Browser(origin)
            page = await browser.get(path)
            assert page.status == 200
            token = path.split("token=", 1)[1]
            done = await browser.post(
                "/setup", {"token": token, "email": "owner@example.com", "password": PASSWORD}
            )
            assert done.status == 303 and done.location == "/"
            me = await browser.api("GET", "/api/v1/me")
            assert me.json()["user"]["role"] == "admin"
            assert (await Browser(origin).get(path)).status == 404

        asyncio.run(flow())
    finally:
        assert appliance.stop() == 0
    # The URL went to stderr only, never into a log record.
    for record in appliance.log_records():
        assert "/setup?token=" not in str(record)
