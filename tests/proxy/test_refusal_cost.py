"""DESIGN §9 "Refusals are cheap and bounded", as an anonymous attacker meets a running appliance.

The outside review's findings, each as the request that found it: a large batch to a malformed
secret URL (the whole body was read and one error written per id: 97 MiB answered to 16 MiB),
a body nested too deep for the JSON parser (RecursionError → 500 and a traceback), and
malformed-path refusals that never counted toward the per-IP limit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.appliance import Appliance, http

# A built-in service with a credential that cannot be one (not 86 characters): refused as
# malformed before any database work.
MALFORMED = "/mcp/linear/x"
UNKNOWN = "/mcp/linear/" + "A" * 86


def _batch(count: int) -> bytes:
    return json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": "tools/list"} for i in range(count)]
    ).encode()


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    app = Appliance(tmp_path_factory.mktemp("refusals") / "data").start()
    try:
        yield app
    finally:
        app.stop()


def _send_head_and_part(url_port: int, path: str, declared: int, part: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", url_port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + part)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read until the appliance closes the connection or the declared body is complete."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return status, headers, body


def test_a_refused_request_is_answered_without_reading_its_large_body(
    appliance: Appliance,
) -> None:
    """16 MiB declared, 128 KiB sent: the refusal comes at once and the connection closes."""
    batch = _batch(200_000)  # ~9 MiB of requests with ids
    declared = 16 * 1024 * 1024
    sock = _send_head_and_part(appliance.port, MALFORMED, declared, batch[: 128 * 1024])
    try:
        status, headers, body = _read_response(sock)
        assert status == 400
        assert len(body) < 1024, len(body)
        answer = json.loads(body)
        assert answer["id"] is None  # the ids past the first 64 KiB are never looked for
        assert answer["error"]["code"] == -32600
        assert headers.get("connection", "").lower() == "close"
        # The rest of the body is never accepted: the appliance hangs up after its answer.
        sock.settimeout(10)
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
    finally:
        sock.close()
    status, _, _ = http("GET", appliance.url + "/healthz")
    assert status == 200


@pytest.mark.parametrize("path", [MALFORMED, UNKNOWN])
def test_at_most_100_ids_are_answered(appliance: Appliance, path: str) -> None:
    status, _, body = http("POST", appliance.url + path, body=_batch(100))
    answers = json.loads(body)
    assert isinstance(answers, list)
    assert [a["id"] for a in answers] == list(range(100))

    status, _, body = http("POST", appliance.url + path, body=_batch(101))
    assert status in (400, 404)
    answer = json.loads(body)
    assert isinstance(answer, dict), "beyond 100 ids: one error with id null"
    assert answer["id"] is None


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_a_body_too_deep_to_parse_is_no_ids_not_a_500(appliance: Appliance, opener: bytes) -> None:
    body = opener * 20_000
    status, _, answer = http("POST", appliance.url + MALFORMED, body=body)
    assert status == 400
    assert json.loads(answer)["id"] is None
    log = appliance.stderr()
    assert "RecursionError" not in log
    assert "Traceback" not in log


def test_malformed_path_refusals_count_toward_the_ip_limit(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    try:
        statuses = [http("POST", app.url + MALFORMED, body=_batch(1))[0] for _ in range(30)]
        assert set(statuses) == {400}
        status, headers, body = http("POST", app.url + UNKNOWN, body=_batch(1))
        assert status == 429
        assert int(headers["Retry-After"]) > 0
        assert body == b""
    finally:
        app.stop()
