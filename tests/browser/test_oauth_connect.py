"""The UI in a real browser: a member connects an OAuth service against the real test provider.

The provider (`peers.oauth_upstream.OAuthUpstream`: authorization server with DCR, PKCE and
auto-approve, plus an MCP resource server) is asyncio-based while Playwright's sync API owns this
thread's event loop, so it runs on its own loop in a background thread: started before the
appliance process, stopped after it (the module's `app` fixture below overrides conftest's to
say so). The administrator adds it as a discovered OAuth service on the admin services page
(loopback is allowed by `BINDIFY_ALLOW_PRIVATE_UPSTREAMS=true`), connects it from the catalogue
with managed storage, is bounced through the provider and back, and sees the secrets once. A
plain HTTP client then lists the provider's tools through the secret URL.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.appliance import Appliance, http

from browser.conftest import App, shot, watch
from browser.test_flows import ADMIN, PASSWORD

SERVICE = "acme-oauth"
NAME = "Acme OAuth"


async def _drain() -> None:
    """Cancel and await every other task of the running loop, then close its async generators."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class _Provider:
    """An `OAuthUpstream` serving on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.upstream: OAuthUpstream | None = None

    def start(self) -> OAuthUpstream:
        self.thread.start()

        async def make() -> OAuthUpstream:
            # Built on its own loop: the MCP app's lifespan and uvicorn belong to that loop. An
            # hour-long token: no refresh (background or before use) races the assertions.
            return await OAuthUpstream(access_ttl=3600).start()

        self.upstream = asyncio.run_coroutine_threadsafe(make(), self.loop).result(30)
        return self.upstream

    def stop(self) -> None:
        try:
            if self.upstream is not None:
                asyncio.run_coroutine_threadsafe(self.upstream.stop(), self.loop).result(30)
            # Tasks left behind (sse-starlette's shutdown watcher) would otherwise be destroyed
            # pending with the loop and log an ERROR in whichever test runs next.
            asyncio.run_coroutine_threadsafe(_drain(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def provider() -> Iterator[OAuthUpstream]:
    running = _Provider()
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture
def app(provider: OAuthUpstream) -> Iterator[App]:
    """Overrides conftest's `app`: the provider is up first and goes down last, and each test
    gets a fresh appliance and provider (the two CSP variants must not share DCR state)."""
    with tempfile.TemporaryDirectory() as tmp:
        appliance = Appliance(
            Path(tmp) / "data", {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}
        ).start()
        try:
            yield App(appliance)
        finally:
            appliance.stop()


def _set_up_admin(page: Any, app: App) -> None:
    page.goto(app.setup_url())
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    page.get_by_label("I know where the master keys are").check()
    page.get_by_role("button", name="Create administrator and sign in").click()
    page.wait_for_url(app.url + "/")


def _add_oauth_service(page: Any, app: App, mcp_url: str) -> None:
    page.goto(app.url + "/admin/services")
    page.get_by_label("Id (lower-case letters, digits and -)").fill(SERVICE)
    page.get_by_label("Name").fill(NAME)
    page.get_by_label("MCP URL").fill(mcp_url)
    page.get_by_label("Authentication").select_option("oauth")
    page.get_by_role("button", name="Add service").click()
    page.wait_for_url(app.url + "/admin/services")
    assert page.get_by_role("cell", name=f"{NAME} ({SERVICE})").is_visible()


def _rpc(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    """POST one JSON-RPC message; the status, headers and the messages (JSON or SSE)."""
    status, got, raw = http(
        "POST",
        url,
        body=json.dumps(body).encode(),
        headers={
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **headers,
        },
        timeout=30,
    )
    heads = {k.lower(): v for k, v in got.items()}
    text = raw.decode()
    if not text.strip():
        return status, heads, []
    if heads.get("content-type", "").startswith("text/event-stream"):
        data = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
        return status, heads, [json.loads(d) for d in data if d]
    parsed = json.loads(text)
    return status, heads, parsed if isinstance(parsed, list) else [parsed]


def _list_tools(secret_url: str) -> dict[str, Any]:
    """initialize → notifications/initialized → tools/list through the proxy; the list answer."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "browser-test", "version": "1"},
        },
    }
    status, heads, msgs = _rpc(secret_url, init, {})
    assert status == 200, (status, msgs)
    extra = {"MCP-Protocol-Version": msgs[0]["result"]["protocolVersion"]}
    if "mcp-session-id" in heads:
        extra["Mcp-Session-Id"] = heads["mcp-session-id"]
    status, _, _ = _rpc(
        secret_url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, extra
    )
    assert status in (200, 202), status
    status, _, msgs = _rpc(secret_url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, extra)
    assert status == 200, (status, msgs)
    return next(m for m in msgs if m.get("id") == 2)


class _RedirectRefused(AssertionError):
    """The browser refused to follow the connect form's redirect (a CSP console error)."""


def _wait_for_secrets(page: Any, errors: list[str], timeout_ms: int = 15_000) -> None:
    """Until the secrets show, or a console error (a refused navigation) says they never will."""
    waited = 0
    while not errors and page.locator("#secret-url").count() == 0:
        assert waited < timeout_ms, f"no secrets after {timeout_ms} ms at {page.url}"
        page.wait_for_timeout(50)  # also lets Playwright deliver the page's console events
        waited += 50
    if any("form-action" in e for e in errors):
        raise _RedirectRefused(errors)
    assert errors == []


# Chromium applies `form-action` to the redirects that follow a form submission: the connect
# page of an OAuth service widens it (web/connect.py) so the 303 to the provider is followed.
def test_oauth_connect_through_the_provider_shows_secrets_once(
    app: App, context_factory: Any, provider: OAuthUpstream
) -> None:
    errors: list[str] = []
    page = watch(context_factory().new_page(), errors)
    _set_up_admin(page, app)
    _add_oauth_service(page, app, provider.mcp_url)

    page.goto(app.url + "/connect")
    page.get_by_role("link", name=NAME).click()
    page.wait_for_url(f"{app.url}/connect/{SERVICE}")
    page.get_by_label("Managed key").check()
    page.get_by_role("button", name=f"Continue to {NAME}").click()
    # Provider (auto-approve) → /oauth/callback → /connections/{id}?claim=… → claim stripped.
    _wait_for_secrets(page, errors)
    assert re.fullmatch(re.escape(app.url) + r"/connections/[^/?#]+", page.url), page.url
    assert "claim=" not in page.url

    # The browser really went through the provider: one DCR registration, one PKCE authorize
    # with our callback, one code redeemed.
    [registration] = provider.registrations
    assert registration["redirect_uris"] == [app.url + "/oauth/callback"]
    [authorize] = provider.authorize_requests
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["redirect_uri"] == app.url + "/oauth/callback"
    assert [c.form["grant_type"] for c in provider.token_requests] == ["authorization_code"]

    secret_url = page.locator("#secret-url").input_value()
    api_key = page.locator("#api-key").input_value()
    assert re.fullmatch(re.escape(app.url) + rf"/mcp/{SERVICE}/[A-Za-z0-9_\-]{{86}}", secret_url)
    assert api_key.startswith("bnd_")
    facts = page.locator("dl.facts").inner_text()
    assert "oauth" in facts and "managed key" in facts
    shot(page, "connection-secrets-oauth")

    page.reload()
    content = page.content()
    assert secret_url not in content and api_key not in content
    assert page.locator("#secret-url").count() == 0

    # A plain HTTP client reaches the provider's MCP server through the secret URL, with the
    # access token the appliance stored.
    listed = _list_tools(secret_url)
    names = {tool["name"] for tool in listed["result"]["tools"]}
    assert {"echo", "whoami"} <= names
    scheme, _, token = provider.mcp_authorizations[-1].partition(" ")
    assert scheme == "Bearer" and [token] == provider.valid_access_tokens()
    assert [c.form["grant_type"] for c in provider.token_requests] == ["authorization_code"]
    assert errors == []
