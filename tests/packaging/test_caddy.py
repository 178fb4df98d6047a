"""The shipped Caddyfile, run by the real Caddy in front of the appliance (DESIGN §9).

Every request shape that carries a secret goes through Caddy; its access log (the shipped `log`
block with its filters; tests/support/caddy.py only moves the file) must hold one JSON line per
request with the credential parts of the URI replaced, no headers, and none of the secrets, as
sent or percent-decoded. With the appliance down Caddy answers 502 and logs the failed dial in
its own log; that log must not hold the secret URL either.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.appliance import Appliance, http
from support.caddy import caddy_in_front
from support.secret_requests import assert_log_redacted, logged, secret_requests, send

_SETUP = re.compile(r"/setup\?token=([A-Za-z0-9_-]+)")


@pytest.mark.binary
def test_caddy_proxies_and_its_access_log_holds_no_secret(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    try:
        found = _SETUP.search(app.stderr())
        assert found, "the appliance printed no setup URL"
        requests = secret_requests(found.group(1))
        with caddy_in_front(app.url, tmp_path / "caddy") as front:
            status, headers, body = http("GET", front.url + "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"
            assert headers.get("Server") == "Caddy"
            # Only the secret requests below: wait for the /healthz line first (Caddy writes a
            # request's line after answering it), so it cannot land inside the slice.
            before = len(logged(front.access_log, 1).splitlines())
            for request in requests:
                status = send(front.url, request)
                assert status < 500, (request.path, status)
            full = logged(front.access_log, before + len(requests))
            log = "".join(full.splitlines(keepends=True)[before:])
            assert_log_redacted(log, requests, "[REDACTED]")
            entries = [json.loads(line) for line in log.splitlines()]
            assert all("headers" not in e["request"] and "resp_headers" not in e for e in entries)
            uris = [e["request"]["uri"] for e in entries]
            assert uris[:3] == [
                "/mcp/linear/[REDACTED]",
                "/mcp/linear/[REDACTED]/sse",
                "/mcp/linear/[REDACTED]/messages?[REDACTED]",
            ]
            assert "/setup?[REDACTED]" in uris and "/mcp/linear/sse" in uris
            assert "/api/v1/claims/[REDACTED]" in uris
    finally:
        assert app.stop() == 0


def test_caddy_logs_no_secret_when_the_appliance_is_down(tmp_path: Path) -> None:
    requests = secret_requests("s" * 43)[:10]  # the URL-borne shapes
    with caddy_in_front("http://127.0.0.1:9", tmp_path / "caddy") as front:
        for request in requests:
            assert send(front.url, request) == 502
        assert_log_redacted(logged(front.access_log, len(requests)), requests, "[REDACTED]")
        own = front.process_log()
        for request in requests:
            for secret in request.secrets:
                assert secret not in own, request.path
