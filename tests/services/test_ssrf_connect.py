"""The SSRF guard seen through the connect flows: upstream URLs whose names resolve to refused
ranges, and discovered endpoints that point inside — a clear 502 and nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import MapResolver, counts, live_kv_keys
from support.inprocess import Appliance, add_token, add_user, api, start_appliance

from bindify_appliance.config import Settings
from bindify_appliance.outbound import OutboundClient

NAMES = {
    "internal.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "loop.test": ["127.0.0.2"],
    "six.test": ["fd00::5"],
    "mapped.test": ["::ffff:192.168.1.1"],
    "public.test": ["127.0.0.1"],  # exempted below: plays a public server
}


def _guarded(settings: Settings) -> OutboundClient:
    # The production guard, except that exactly 127.0.0.1 may stand in for the internet (the
    # stand-in servers live there) and plain http is allowed (they have no TLS).
    return OutboundClient(
        allow_private=False,
        allow_http=True,
        allowed_networks=["127.0.0.1/32"],
        resolver=MapResolver(NAMES),
    )


@pytest.fixture
async def guarded_app(tmp_path: Path) -> AsyncIterator[tuple[Appliance, str, str]]:
    app = await start_appliance(tmp_path, allow_private_upstreams=True, outbound=_guarded)
    admin = add_user(app, "admin@example.com", "admin")
    member = add_user(app, "member@example.com")
    yield app, add_token(app, admin), add_token(app, member)
    await app.close()


async def _add(app: Appliance, token: str, sid: str, url: str, auth: dict[str, object]) -> None:
    body = {"id": sid, "name": sid.title(), "mcp_url": url, "auth": auth}
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


@pytest.mark.parametrize(
    "host", ["internal.test", "metadata.test", "loop.test", "six.test", "mapped.test"]
)
async def test_oauth_discovery_towards_refused_ranges(
    guarded_app: tuple[Appliance, str, str], host: str
) -> None:
    app, admin, member = guarded_app
    await _add(app, admin, "inside", f"http://{host}:9/mcp", {"type": "oauth"})
    answer = await api(app, "POST", "/api/v1/connections/inside/authorize", {}, token=member)
    assert answer.status == 502, answer.text
    assert answer.json()["error"] == "upstream_error"
    assert "refusing to connect" in answer.json()["message"]
    assert counts(app.store) == {"connections": 0, "events": 0, "registrations": 0}
    assert await live_kv_keys(app.ctx.kv) == []


async def test_api_key_validation_towards_a_refused_range(
    guarded_app: tuple[Appliance, str, str],
) -> None:
    app, admin, member = guarded_app
    await _add(
        app,
        admin,
        "keyed",
        "http://metadata.test/latest/mcp",
        {"type": "api_key", "header": "X-Key"},
    )
    answer = await api(
        app,
        "POST",
        "/api/v1/connections",
        {"service": "keyed", "api_key": "k-123456"},
        token=member,
    )
    assert answer.status == 502 and "refusing to connect" in answer.json()["message"]
    assert "k-123456" not in answer.text
    assert counts(app.store) == {"connections": 0, "events": 0, "registrations": 0}


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/token",
        "http://10.1.1.1/token",
        "http://2130706433/token",
        "http://[::ffff:127.0.0.1]/token",
        "http://0.0.0.0/token",
    ],
)
async def test_discovered_endpoints_pointing_inside_are_refused(
    guarded_app: tuple[Appliance, str, str], endpoint: str
) -> None:
    app, admin, member = guarded_app
    async with OAuthUpstream(metadata_overrides={"token_endpoint": endpoint}) as up:
        await _add(app, admin, "acme", up.mcp_url, {"type": "oauth"})
        answer = await api(app, "POST", "/api/v1/connections/acme/authorize", {}, token=member)
        assert answer.status == 502, answer.text
        assert "token_endpoint is refused" in answer.json()["message"]
        assert up.registrations == []
    assert counts(app.store) == {"connections": 0, "events": 0, "registrations": 0}
    assert await live_kv_keys(app.ctx.kv) == []


async def test_the_guarded_appliance_still_reaches_public_upstreams(
    guarded_app: tuple[Appliance, str, str],
) -> None:
    app, admin, member = guarded_app
    async with OAuthUpstream(host="public.test") as up:
        await _add(app, admin, "acme", up.mcp_url, {"type": "oauth"})
        answer = await api(app, "POST", "/api/v1/connections/acme/authorize", {}, token=member)
        assert answer.status == 200, answer.text
        assert len(up.registrations) == 1
