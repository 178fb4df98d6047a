"""Helpers for the authorize-page tests: register a client, build an authorize URL with PKCE,
read the consent form, answer it."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from support.inprocess import Browser, Response, Server, api

REDIRECT = "http://127.0.0.1:8765/callback"
_REQUEST = re.compile(r'name="request" value="([A-Za-z0-9_-]{43})"')


@dataclass
class Pkce:
    verifier: str
    challenge: str


def pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return Pkce(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


async def add_open_service(server: Server, admin_token: str, service_id: str = "open") -> None:
    body = {
        "id": service_id,
        "name": service_id.title(),
        "mcp_url": "http://127.0.0.1:9/mcp",
        "auth": {"type": "none"},
    }
    created = await api(server, "POST", "/api/v1/services", body, token=admin_token)
    assert created.status == 201, created.text


async def register_client(
    server: Server, redirect_uris: list[str], name: str = "Test Client"
) -> str:
    body = {
        "client_name": name,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    answer = await api(server, "POST", "/oauth/register", body)
    assert answer.status == 201, answer.text
    return str(answer.json()["client_id"])


async def connect(server: Server, token: str, mode: str, service: str = "open") -> dict[str, Any]:
    """A new connection of the token's member: {connection, secret_url, api_key}."""
    made = await api(
        server,
        "POST",
        "/api/v1/connections",
        {"service": service, "key_storage_mode": mode},
        token=token,
    )
    assert made.status == 201, made.text
    return dict(made.json())


def authorize_path(client: str, challenge: str | None, /, **extra: str | None) -> str:
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client,
        "redirect_uri": REDIRECT,
        "state": "st-123",
    }
    if challenge is not None:
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    for name, value in extra.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return "/oauth/authorize?" + urlencode(params)


def request_id(page: Response) -> str:
    found = _REQUEST.search(page.text)
    assert found, page.text[:2000]
    return found.group(1)


def answer_query(location: str | None) -> dict[str, str]:
    assert location is not None
    parts = urlsplit(location)
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


async def consent(browser: Browser, path: str) -> tuple[Response, str]:
    page = await browser.get(path)
    assert page.status == 200, page.text[:2000]
    return page, request_id(page)


async def answer(browser: Browser, rid: str, **form: str) -> Response:
    return await browser.post("/oauth/authorize", {"request": rid, **form})
