"""The shipped nginx configuration, run for real in front of the appliance and a streaming origin.

What operators install (packaging/nginx/bindify.conf) must: reach the appliance (/healthz and
/readyz), pass responses on chunk by chunk (an SSE event must reach the client while the origin
is still waiting), pass request bodies on chunk by chunk, keep upstream connections alive, and
forward the client's address. The streaming checks need no timing: the origin's next step waits
for proof that the previous chunk already crossed nginx, so a buffering nginx deadlocks and the
test fails on its timeout instead of passing by luck.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.appliance import Appliance, http
from support.nginx import nginx_binary, nginx_in_front
from support.ports import free_socket
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer

STEP_TIMEOUT = 10.0  # a deadlock (buffering) shows up as this timeout


@pytest.mark.binary
def test_appliance_health_and_readiness_through_nginx(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    try:
        with nginx_in_front(app.url, tmp_path / "nginx") as front:
            status, headers, body = http("GET", front.url + "/healthz")
            assert status == 200
            assert json.loads(body)["status"] == "ok"
            assert headers.get("Server", "").startswith("nginx")
            status, _, _ = http("GET", front.url + "/readyz")
            assert status == 200
            status, _, _ = http("GET", front.url + "/no-such-page")
            assert status == 404
            log = front.access_log()
            assert '"GET /healthz HTTP/1.1" 200' in log
            assert '"GET /readyz HTTP/1.1" 200' in log
    finally:
        assert app.stop() == 0


# ----------------------------------------------------------------------------- streaming origin


@dataclass
class Origin:
    """A Tornado origin in the test's loop; each handler's next step waits on an event."""

    url: str = ""
    event_seen_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    first_body_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    body_chunks: list[bytes] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


class SSEHandler(tornado.web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.write("data: first\n\n")
        await self.flush()
        # Only once the client has this event does the origin send the rest.
        await asyncio.wait_for(self.origin.event_seen_by_client.wait(), STEP_TIMEOUT)
        self.write("data: second\n\n")
        self.finish()


@tornado.web.stream_request_body
class UploadHandler(tornado.web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    def data_received(self, chunk: bytes) -> None:
        self.origin.body_chunks.append(chunk)
        self.origin.first_body_chunk.set()

    def put(self) -> None:
        self.write({"received": b"".join(self.origin.body_chunks).decode()})


class EchoHandler(tornado.web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    def get(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        self.origin.peers.append(stream.socket.getpeername()[:2])
        self.origin.headers.append(dict(self.request.headers.get_all()))
        self.write("ok")


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    state = Origin()
    app = tornado.web.Application(
        [
            (r"/sse", SSEHandler, {"origin": state}),
            (r"/upload", UploadHandler, {"origin": state}),
            (r"/echo", EchoHandler, {"origin": state}),
        ]
    )
    sockets, port = free_socket()
    server = HTTPServer(app)
    server.add_sockets(sockets)
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.stop()
        await server.close_all_connections()


async def _within(step: Awaitable[object], what: str) -> None:
    try:
        await asyncio.wait_for(step, STEP_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"{what} did not cross nginx within {STEP_TIMEOUT} s (buffered?)")


async def test_nginx_passes_each_sse_event_on_at_once(origin: Origin, tmp_path: Path) -> None:
    nginx_binary()
    with nginx_in_front(origin.url, tmp_path / "nginx") as front:
        received: list[bytes] = []

        def on_chunk(chunk: bytes) -> None:
            received.append(chunk)
            if b"data: first" in b"".join(received):
                origin.event_seen_by_client.set()

        client = AsyncHTTPClient()
        request = HTTPRequest(front.url + "/sse", streaming_callback=on_chunk, request_timeout=30)
        fetch = asyncio.ensure_future(client.fetch(request))
        await _within(origin.event_seen_by_client.wait(), "the first SSE event")
        response = await fetch
        assert response.code == 200
        assert b"".join(received) == b"data: first\n\ndata: second\n\n"
        assert response.headers["Content-Type"] == "text/event-stream"


async def test_nginx_passes_request_body_chunks_on_at_once(origin: Origin, tmp_path: Path) -> None:
    nginx_binary()
    with nginx_in_front(origin.url, tmp_path / "nginx") as front:

        async def body(write: Callable[[bytes], Awaitable[None]]) -> None:
            await write(b"first-")
            # The second chunk goes only after the origin has the first one.
            await _within(origin.first_body_chunk.wait(), "the first request chunk")
            await write(b"second")

        client = AsyncHTTPClient()
        request = HTTPRequest(
            front.url + "/upload",
            method="PUT",
            body_producer=cast(Any, body),  # Tornado's stub types `write` as returning None
            request_timeout=30,
        )
        response = await client.fetch(request)
        assert json.loads(response.body) == {"received": "first-second"}
        assert len(origin.body_chunks) >= 2


async def test_nginx_reuses_upstream_connections_and_forwards_the_client(
    origin: Origin, tmp_path: Path
) -> None:
    nginx_binary()
    with nginx_in_front(origin.url, tmp_path / "nginx") as front:
        for forwarded in (None, "203.0.113.7"):
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            # In a thread: the origin answers on this very event loop.
            status, _, _ = await asyncio.to_thread(
                http, "GET", front.url + "/echo", headers=headers
            )
            assert status == 200
    # One upstream connection served both requests (keep-alive pool, HTTP/1.1 upstream).
    assert len(origin.peers) == 2 and origin.peers[0] == origin.peers[1]
    first, second = origin.headers
    assert first["X-Forwarded-For"] == "127.0.0.1"
    assert first["X-Forwarded-Proto"] == "http"
    assert first["Host"] == "127.0.0.1"  # $host: the name clients used, without a port
    # A client-sent X-Forwarded-For is kept and nginx appends the address it saw, so the
    # appliance (walking from the right over BINDIFY_TRUSTED_PROXIES) finds the real client.
    assert second["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"


# ----------------------------------------------------------------------------- TLS termination


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for bindify.example.com and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bindify.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("bindify.example.com"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.binary
def test_tls_section_terminates_https_in_front_of_the_appliance(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path / "tls")
    context = ssl.create_default_context(cafile=str(cert))
    app = Appliance(tmp_path / "data").start()
    try:
        with nginx_in_front(app.url, tmp_path / "nginx", tls=(cert, key)) as front:
            host, port = urlsplit(front.url).hostname, urlsplit(front.url).port
            assert front.url.startswith("https://") and host and port
            # HTTP/2 is offered to clients (ALPN), HTTP/1.1 still works.
            context.set_alpn_protocols(["h2", "http/1.1"])
            with (
                socket.create_connection((host, port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls_sock,
            ):
                assert tls_sock.selected_alpn_protocol() == "h2"
            context.set_alpn_protocols(["http/1.1"])
            conn = HTTPSConnection(host, port, context=context, timeout=10)
            try:
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                assert response.status == 200
                assert response.getheader("Strict-Transport-Security", "").startswith("max-age=")
                response.read()
            finally:
                conn.close()
    finally:
        assert app.stop() == 0
