"""The shipped nginx configuration never writes a secret to its logs (DESIGN §9).

The real nginx runs the shipped file (its log format, log files and levels; tests/support/nginx.py
only moves the files into a scratch folder) in front of a running appliance. Every request shape
that carries a secret goes through it; the access log must then hold one redacted line per
request and none of the secrets, as sent or percent-decoded. With the appliance down (nginx
answers 502 itself, the case where nginx writes the request line to its error log), neither log
may hold the secret URL either.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.appliance import Appliance
from support.nginx import nginx_in_front
from support.secret_requests import assert_log_redacted, logged, secret_requests, send

_SETUP = re.compile(r"/setup\?token=([A-Za-z0-9_-]+)")


def _setup_token(app: Appliance) -> str:
    found = _SETUP.search(app.stderr())
    assert found, "the appliance printed no setup URL"
    return found.group(1)


@pytest.mark.binary
def test_access_log_holds_one_redacted_line_per_request_and_no_secret(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    try:
        requests = secret_requests(_setup_token(app))
        with nginx_in_front(app.url, tmp_path / "nginx") as front:
            for request in requests:
                status = send(front.url, request)
                assert status < 500, (request.path, status)
            log = logged(front.access_log, len(requests))
            assert_log_redacted(log, requests, "[REDACTED]")
            for request in requests:
                for secret in request.secrets:
                    assert secret not in front.error_log()
            # The readable parts stay: the service, the transport, the route.
            assert '"POST /mcp/linear/[REDACTED] HTTP/1.1"' in log
            assert '"GET /mcp/linear/[REDACTED]/sse HTTP/1.1"' in log
            assert '"POST /mcp/linear/[REDACTED]/messages?[REDACTED] HTTP/1.1"' in log
            assert '"GET /setup?[REDACTED] HTTP/1.1"' in log
            assert '"GET /mcp/linear/sse HTTP/1.1"' in log
            assert '"GET /api/v1/claims/[REDACTED] HTTP/1.1"' in log
    finally:
        assert app.stop() == 0


def test_nothing_secret_is_logged_when_the_appliance_is_down(tmp_path: Path) -> None:
    requests = secret_requests("s" * 43)[:10]  # the URL-borne shapes
    with nginx_in_front("http://127.0.0.1:9", tmp_path / "nginx") as front:
        for request in requests:
            assert send(front.url, request) == 502
        assert_log_redacted(logged(front.access_log, len(requests)), requests, "[REDACTED]")
        errors = front.error_log()
        for request in requests:
            for secret in request.secrets:
                assert secret not in errors, request.path
