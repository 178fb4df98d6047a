"""Every shape of request that carries a secret, for checking a reverse proxy's access log.

`secret_requests()` lists one request per shape (DESIGN §5, §9): secret URLs in every form
(streamable, legacy SSE and messages, percent-escaped), the setup and invite tokens, a claim,
OAuth and OIDC callbacks, a claim read through the API, API keys and personal tokens in
`Authorization`, a Basic credential, the session cookie, a Referer holding a setup URL and a
long token under an unknown path. `assert_log_redacted()` then checks a log: one line per
request, each naming its method and a redaction marker where the request had a secret in its
URL, and no secret anywhere — neither as sent nor percent-decoded.

Values are random per run; only the setup token is the appliance's real one (the others have
the right shape, which is all a proxy sees).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPConnection
from urllib.parse import unquote, urlsplit

__all__ = ["SecretRequest", "assert_log_redacted", "logged", "secret_requests", "send"]


@dataclass(frozen=True)
class SecretRequest:
    method: str
    path: str
    secrets: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    url_secret: bool = True  # the secret is in the URL, so the line must show a marker


def _percent_escape_every_third(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if i % 3 == 0 else c for i, c in enumerate(text))


def secret_requests(setup_token: str) -> list[SecretRequest]:
    credentials = secrets.token_urlsafe(64)[:86]
    escaped_credentials = secrets.token_urlsafe(64)[:86]
    invite, claim, api_claim = (secrets.token_urlsafe(32) for _ in range(3))
    code, state, oidc_code, oidc_state = (secrets.token_urlsafe(24) for _ in range(4))
    session_id, session_value = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    api_key = "bnd_live_" + secrets.token_urlsafe(64)[:86]
    personal = "bndpat_" + secrets.token_urlsafe(32)
    basic_password = secrets.token_urlsafe(18)
    basic = base64.b64encode(f"ops:{basic_password}".encode()).decode()
    referer_token = secrets.token_urlsafe(32)
    stray = secrets.token_urlsafe(48)
    query_session = secrets.token_urlsafe(24)
    return [
        SecretRequest("POST", f"/mcp/linear/{credentials}", (credentials,)),
        SecretRequest("GET", f"/mcp/linear/{credentials}/sse", (credentials,)),
        SecretRequest(
            "POST",
            f"/mcp/linear/{credentials}/messages?sessionId={session_id}",
            (credentials, session_id),
        ),
        SecretRequest(
            "POST",
            f"/mcp/linear/{_percent_escape_every_third(escaped_credentials)}",
            (escaped_credentials,),
        ),
        SecretRequest("GET", f"/setup?token={setup_token}", (setup_token,)),
        SecretRequest("GET", f"/invite?token={invite}", (invite,)),
        SecretRequest("GET", f"/connections/1?claim={claim}", (claim,)),
        SecretRequest("GET", f"/oauth/callback?code={code}&state={state}", (code, state)),
        SecretRequest(
            "GET",
            f"/login/oidc/callback?code={oidc_code}&state={oidc_state}",
            (oidc_code, oidc_state),
        ),
        SecretRequest("GET", f"/api/v1/claims/{api_claim}", (api_claim,)),
        SecretRequest("GET", f"/?session={query_session}", (query_session,)),
        SecretRequest("GET", f"/static/x/{stray}", (stray,)),
        SecretRequest(
            "POST",
            "/mcp/linear",
            (api_key[9:],),
            {"Authorization": f"Bearer {api_key}"},
            url_secret=False,
        ),
        SecretRequest(
            "GET",
            "/mcp/linear/sse",
            (api_key[9:],),
            {"Authorization": f"Bearer {api_key}"},
            url_secret=False,
        ),
        SecretRequest(
            "GET",
            "/api/v1/me",
            (personal[7:],),
            {"Authorization": f"Bearer {personal}"},
            url_secret=False,
        ),
        SecretRequest(
            "GET",
            "/api/v1/me",
            (basic, basic_password, "ops"),
            {"Authorization": f"Basic {basic}"},
            url_secret=False,
        ),
        SecretRequest(
            "GET",
            "/login",
            (session_value, referer_token),
            {
                "Cookie": f"bindify_session={session_value}",
                "Referer": f"https://bindify.example.com/setup?token={referer_token}",
            },
            url_secret=False,
        ),
    ]


def logged(read: Callable[[], str], count: int, timeout: float = 10.0) -> str:
    """The log once it holds `count` lines (or whatever it holds at the deadline).

    A front proxy writes a request's access line after the response is sent, so the client can
    see its answer before the line exists: read until the lines are all there.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if sum(1 for line in text.splitlines() if line.strip()) >= count:
            return text
        if time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def assert_log_redacted(log: str, requests: list[SecretRequest], marker: str) -> None:
    """One line per request, in order; a marker on each URL-secret line; no secret anywhere."""
    decoded = unquote(log)
    for request in requests:
        for secret in request.secrets:
            # "ops" (a Basic user name) is short: look for it as the user field only.
            needle = f" {secret} " if len(secret) < 8 else secret
            assert needle not in log and needle not in decoded, (request.path, secret)
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) == len(requests), lines
    for line, request in zip(lines, requests, strict=True):
        assert request.method in line, (line, request.path)
        if request.url_secret:
            assert marker in line, (line, request.path)


def send(base_url: str, request: SecretRequest) -> int:
    """Send `request` once (redirects are not followed: one request, one log line)."""
    parts = urlsplit(base_url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        body = b"{}" if request.method == "POST" else None
        headers = {"Content-Type": "application/json", **request.headers}
        conn.request(request.method, request.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
