"""A member answering the sign-in and consent pages without a browser (plain HTTP forms), and
the same in headless Chromium through Playwright (sync API, run in a worker thread).

Both follow exactly what a person does: open the authorization URL, sign in with the usual
login form, pick a connection on the consent page (pasting a zero-knowledge connection's
secret URL when asked), press Allow; the answer is the redirect back to the client.
"""

from __future__ import annotations

import http.client
import re
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

_REQUEST = re.compile(r'name="request" value="([A-Za-z0-9_-]{43})"')
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class FormMember:
    """Cookies and forms over plain HTTP; never follows a redirect by itself."""

    def __init__(self, base: str, email: str, password: str) -> None:
        self.base = base
        self.email = email
        self.password = password
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, target: str, form: dict[str, str] | None = None
    ) -> tuple[int, str | None, str]:
        url = urlsplit(target if target.startswith("http") else self.base + target)
        assert url.netloc == urlsplit(self.base).netloc, "only the appliance is visited"
        conn = http.client.HTTPConnection(url.netloc, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode({**form, "_xsrf": self.cookies.get("_xsrf", "")})
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        path = url.path + (f"?{url.query}" if url.query else "")
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for header in response.msg.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        conn.close()
        return response.status, response.getheader("Location"), text

    def authorize(self, url: str, connection_id: str, secret: str | None = None) -> str:
        """Sign in and allow `connection_id`; the client's redirect URI with the answer."""
        status, location, page = self.request("GET", url)
        if status == 302 and location and location.startswith("/login?"):
            status, _, _ = self.request("GET", location)
            assert status == 200
            next_path = parse_qs(urlsplit(location).query)["next"][0]
            form = {"email": self.email, "password": self.password, "next": next_path}
            status, location, _ = self.request("POST", "/login", form)
            assert status == 303 and location, status
            status, location, page = self.request("GET", location)
        assert status == 200, (status, location)
        found = _REQUEST.search(page)
        assert found, page[:1000]
        form = {"request": found.group(1), "action": "approve", "connection": connection_id}
        if secret is not None:
            form["secret"] = secret
        status, location, page = self.request("POST", "/oauth/authorize", form)
        assert status == 303 and location, (status, page[:1000])
        return location


def wait_for_url(log: Path, base: str, timeout: float = 60) -> str:
    """The first `{base}/oauth/authorize?…` URL a client printed to `log`."""
    pattern = re.compile(re.escape(base) + r"/oauth/authorize\?\S+")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(0)
        time.sleep(0.1)
    raise AssertionError("no authorization URL printed: " + log.read_text()[-2000:])


def consent_in_chromium(
    chromium: Path,
    url: str,
    *,
    email: str,
    password: str,
    connection_label: str,
    back_to: str,
    secret: str | None = None,
    screenshot: Path | None = None,
) -> dict[str, Any]:
    """Headless Chromium: sign in, choose the connection, Allow; waits for `back_to`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            # Only the appliance's own pages are judged: the client's loopback callback page
            # (mcp-remote's, say) may 404 the browser's favicon request, which is not ours.
            ours = urlsplit(url)._replace(path="", query="", fragment="").geturl()

            def on_console(message: Any) -> None:
                where = (message.location or {}).get("url", "") or page.url
                if message.type == "error" and where.startswith(ours):
                    errors.append(message.text)

            page.on("console", on_console)
            page.goto(url)
            page.fill("#email", email)
            page.fill("#password", password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/oauth/authorize?**")
            title = page.inner_text("h1")
            page.get_by_label(connection_label, exact=True).check()
            if secret is not None:
                page.fill("#secret", secret)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            page.get_by_role("button", name="Allow").click()
            page.wait_for_url(back_to + "**")
            return {"title": title, "landed": page.url, "errors": errors}
        finally:
            browser.close()


def connect_first_in_chromium(
    chromium: Path,
    url: str,
    *,
    email: str,
    password: str,
    service_name: str,
    label: str,
    api_key: str,
    back_to: str,
) -> dict[str, Any]:
    """Headless Chromium: sign in, "Connect a new … account first" (zero-knowledge, by API
    key), back to the consent page from the new connection's page, Allow the new connection
    without pasting anything; waits for `back_to`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            # The client's loopback callback: answered here (the SDK's provider has none).
            page.route(back_to + "**", lambda route: route.fulfill(body="signed in"))
            page.goto(url)
            page.fill("#email", email)
            page.fill("#password", password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/oauth/authorize?**")
            page.get_by_role("button", name=f"Connect a new {service_name} account first").click()
            page.wait_for_url("**/connect/*")
            page.fill("#label", label)
            page.get_by_label("Zero-knowledge (recommended)").check()
            page.get_by_label("API key").fill(api_key)
            page.get_by_role("button", name="Check key and connect").click()
            page.wait_for_selector("#secret-url")
            page.get_by_role("link", name="continue to allow or deny", exact=False).click()
            page.wait_for_url("**/oauth/authorize?request=*")
            page.get_by_label(label, exact=True).check()
            just_connected = page.get_by_text("just connected").count() == 1
            page.get_by_role("button", name="Allow").click()
            page.wait_for_url(back_to + "**")
            return {"errors": errors, "just_connected": just_connected, "landed": page.url}
        finally:
            browser.close()
