"""Browser fixtures: a real `bindify serve` process, a tiny MCP upstream, headless Chromium.

Chromium comes from Debian's `chromium` package (`.ci/run` installs it); Playwright for Python
drives it through `executable_path` (never `playwright install`). Without /usr/bin/chromium
every browser test fails at once with one clear line.

`page_errors` collects console errors and uncaught page errors; each test asserts it is empty.
Screenshots go to `test-artifacts/screenshots/`.

axe-core comes from npm (`tests/browser/package.json` pins it): the `axe_script` fixture runs
`npm install` there once when `node_modules/axe-core/axe.min.js` is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.appliance import Appliance

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
GOOD_KEY = "good-upstream-key"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class _Upstream(BaseHTTPRequestHandler):
    """Accepts `Authorization: Bearer good-upstream-key` on an MCP initialize, 401 otherwise."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.headers.get("Authorization") != f"Bearer {GOOD_KEY}":
            self.send_response(401)
            self.end_headers()
            return
        answer = {
            "jsonrpc": "2.0",
            "id": body.get("id", 1),
            "result": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "serverInfo": {"name": "browser-test", "version": "1"},
            },
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    server.shutdown()
    server.server_close()


# Module scope, not session: Playwright's sync API keeps an event loop running on this thread
# while it is open, and every asyncio test collected after the browser tests would fail with
# "Cannot run the event loop while another loop is running".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            "browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """The path of axe.min.js, installed from `package.json` with npm when missing."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                "the accessibility test needs npm to install axe-core (apt-get install npm)"
            )
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return AXE


class App:
    """A running appliance plus the setup URL it printed."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance
        self.url = appliance.url

    def setup_url(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"http://\S+/setup\?token=[A-Za-z0-9_\-]+", self.appliance.stderr())
            if found:
                return found.group(0)
            time.sleep(0.05)
        raise AssertionError("no setup URL printed")


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        appliance = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
        try:
            yield App(appliance)
        finally:
            appliance.stop()


@pytest.fixture
def context_factory(browser: Any) -> Iterator[Any]:
    made: list[Any] = []
    errors: list[str] = []

    def make(javascript: bool = True, width: int = 1200, bypass_csp: bool = False) -> Any:
        # bypass_csp only for the axe test: injecting axe.min.js is an inline script, which
        # the pages' CSP (script-src 'self') rightly refuses.
        ctx = browser.new_context(
            java_script_enabled=javascript,
            viewport={"width": width, "height": 900},
            bypass_csp=bypass_csp,
        )
        made.append(ctx)
        return ctx

    make.errors = errors  # type: ignore[attr-defined]
    yield make
    for ctx in made:
        ctx.close()


def watch(page: Any, errors: list[str]) -> Any:
    """Record console errors and uncaught exceptions of `page` into `errors`."""

    def on_console(msg: Any) -> None:
        # A page that is itself an expected 403/404 logs its own status; anything else counts.
        own = "Failed to load resource" in msg.text and msg.location.get("url") == page.url
        if msg.type == "error" and not own:
            errors.append(f"{msg.text} at {msg.location.get('url')}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
