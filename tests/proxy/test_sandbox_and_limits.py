"""DESIGN §9 against a running appliance, as the outside review attacked it.

- Proxied responses cannot act on the UI's origin: every `/mcp/` answer is sandboxed, an upstream
  `Content-Type` other than JSON or an event stream goes out as `application/octet-stream`, and a
  browser navigation to an MCP URL gets a short page without the upstream being contacted.
- The unknown-credential block never refuses a valid credential; IPv6 clients count per /64;
  forwarding headers from an untrusted peer are warned about (once).
- A per-connection cap on concurrent upstream streams.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.appliance import Appliance, admin_token, api_post, http

SANDBOX = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
    "x-frame-options": "DENY",
}
CALL = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).encode()


def made_up(i: int) -> str:
    """A well-formed credential nobody was given (canonical base64url of 64 bytes)."""
    return chr(ord("B") + i % 24) * 85 + "A"


@dataclass
class Upstream:
    """A stdlib upstream whose next answer the test chooses; counts what reached it."""

    url: str = ""
    content_type: str | None = "application/json"
    body: bytes = b'{"jsonrpc":"2.0","id":7,"result":{}}'
    requests: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    streams_open: int = 0


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = Upstream()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            state.requests += 1
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            if state.content_type is not None:
                self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def do_GET(self) -> None:  # an event stream held open until the test releases it
            state.requests += 1
            state.streams_open += 1
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b": open\n\n")
                self.wfile.flush()
                state.release.wait(30)
            finally:
                state.streams_open -= 1

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def _start(data: Path, upstream: Upstream, env: dict[str, str] | None = None) -> tuple[Any, str]:
    token = admin_token(data)
    app = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true", **(env or {})}).start()
    api_post(
        app,
        token,
        "/services",
        {"id": "open", "name": "Open", "mcp_url": upstream.url, "auth": {"type": "none"}},
    )
    made = api_post(app, token, "/connections", {"service": "open"})
    return app, made["secret_url"]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[tuple[Appliance, str]]:
    app, secret_url = _start(tmp_path_factory.mktemp("sandbox") / "data", upstream)
    try:
        yield app, secret_url
    finally:
        app.stop()


def _sandboxed(headers: dict[str, str]) -> None:
    lower = {k.lower(): v for k, v in headers.items()}
    for name, value in SANDBOX.items():
        assert lower.get(name) == value, (name, lower)


@pytest.mark.parametrize(
    ("upstream_type", "sent_type"),
    [
        ("text/html; charset=utf-8", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("application/javascript", "application/octet-stream"),
        (None, "application/octet-stream"),
        ("application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("text/event-stream", "text/event-stream"),
    ],
)
def test_relayed_answers_are_sandboxed_and_only_json_or_sse_keep_their_type(
    served: tuple[Appliance, str], upstream: Upstream, upstream_type: str | None, sent_type: str
) -> None:
    _, secret_url = served
    upstream.content_type = upstream_type
    upstream.body = b"<html><script>steal(document.cookie)</script></html>"
    try:
        status, headers, body = http("POST", secret_url, body=CALL)
    finally:
        upstream.content_type = Upstream.content_type
        upstream.body = Upstream.body
    assert status == 200
    assert body == b"<html><script>steal(document.cookie)</script></html>"  # body untouched
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == sent_type
    _sandboxed(headers)


def test_refusals_are_sandboxed_too(served: tuple[Appliance, str]) -> None:
    app, _ = served
    for path in ("/mcp/open/" + made_up(0), "/mcp/open/x", "/mcp/nope/" + made_up(0)):
        status, headers, _ = http("POST", app.url + path, body=CALL)
        assert status in (400, 404)
        _sandboxed(headers)


def test_a_browser_navigation_gets_a_page_and_never_reaches_the_upstream(
    served: tuple[Appliance, str], upstream: Upstream
) -> None:
    _, secret_url = served
    before = upstream.requests
    status, headers, body = http(
        "GET",
        secret_url,
        headers={"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Accept": "text/html"},
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    _sandboxed(headers)
    page = body.decode()
    assert "MCP" in page
    assert secret_url.rsplit("/", 1)[1] not in page  # the credential is never echoed
    assert "<script" not in page
    assert upstream.requests == before


def test_the_unknown_credential_block_never_refuses_a_valid_credential(
    tmp_path: Path, upstream: Upstream
) -> None:
    app, secret_url = _start(tmp_path / "data", upstream)
    try:
        service_path = secret_url.rsplit("/", 1)[0]
        for i in range(30):
            status, _, _ = http("POST", f"{service_path}/{made_up(i)}", body=CALL)
            assert status == 404
        status, _, _ = http("POST", f"{service_path}/{made_up(99)}", body=CALL)
        assert status == 429
        # The member whose client shares the address (one NAT, or nginx without trusted
        # proxies) keeps working.
        status, _, body = http("POST", secret_url, body=CALL)
        assert status == 200, body
        assert json.loads(body)["id"] == 7
    finally:
        app.stop()


def test_ipv6_clients_count_per_64_and_untrusted_forwarding_is_warned_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    app, secret_url = _start(
        tmp_path / "data", upstream, {"BINDIFY_TRUSTED_PROXIES": "127.0.0.1/32"}
    )
    try:
        service_path = secret_url.rsplit("/", 1)[0]
        for i in range(30):  # spread over one /64
            status, _, _ = http(
                "POST",
                f"{service_path}/{made_up(i)}",
                body=CALL,
                headers={"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"},
            )
            assert status == 404
        unknown = f"{service_path}/{made_up(99)}"
        same_64 = {"X-Forwarded-For": "2001:db8:1:2:ffff::9"}
        other_64 = {"X-Forwarded-For": "2001:db8:1:3::1"}
        assert http("POST", unknown, body=CALL, headers=same_64)[0] == 429
        assert http("POST", unknown, body=CALL, headers=other_64)[0] == 404
    finally:
        app.stop()

    app, secret_url = _start(tmp_path / "data2", upstream)
    try:
        for _ in range(3):
            status, _, _ = http(
                "POST", secret_url, body=CALL, headers={"X-Forwarded-For": "198.51.100.4"}
            )
            assert status == 200
    finally:
        app.stop()
    warnings = [r for r in app.log_records() if r.get("event") == "untrusted_forwarding"]
    assert len(warnings) == 1, warnings
    assert "198.51.100.4" not in json.dumps(warnings)


def test_concurrent_streams_per_connection_are_capped(tmp_path: Path, upstream: Upstream) -> None:
    import socket

    app, secret_url = _start(
        tmp_path / "data", upstream, {"BINDIFY_MAX_STREAMS_PER_CONNECTION": "2"}
    )
    path = "/" + secret_url.split("/", 3)[3]
    upstream.release.clear()
    socks: list[socket.socket] = []
    try:
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            socks.append(sock)
        status, headers, _ = http("GET", secret_url, headers={"Accept": "text/event-stream"})
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        status, _, body = http("POST", secret_url, body=CALL)
        assert status == 200
        answer = json.loads(body)
        assert answer["id"] == 7
        assert answer["error"]["code"] == -31029
        assert upstream.streams_open == 2
        socks.pop().close()  # one stream ends: there is room again
        status, _, body = http("POST", secret_url, body=CALL)
        assert "error" not in json.loads(body), body
    finally:
        upstream.release.set()
        for sock in socks:
            sock.close()
        app.stop()


def test_untrusted_forwarding_on_the_pages_is_warned_once(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    try:
        for _ in range(2):
            status, _, _ = http("GET", app.url + "/login", headers={"X-Forwarded-For": "192.0.2.9"})
            assert status == 200
    finally:
        app.stop()
    warnings = [r for r in app.log_records() if r.get("event") == "untrusted_forwarding"]
    assert len(warnings) == 1, warnings
    assert "192.0.2.9" not in json.dumps(warnings)
