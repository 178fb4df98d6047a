"""Admin-added services on the legacy HTTP+SSE transport check API keys over that transport.

Before, the check POSTed `initialize` to the SSE URL, which a legacy server answers 405, so
every valid key was refused with 422. The upstream is the `mcp` SDK's SSE server behind a key
check (tests/peers/sse_keyed.py); the appliance is the running in-process one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from peers.sse_keyed import SseKeyedUpstream
from support.connect_helpers import counts
from support.inprocess import Appliance, api


@pytest.fixture
async def sse_upstream(appliance: Appliance, admin_token: str) -> AsyncIterator[SseKeyedUpstream]:
    async with SseKeyedUpstream({"Bearer good-key"}) as up:
        body = {
            "id": "legacy",
            "name": "Legacy",
            "mcp_url": up.sse_url,
            "transport": "sse",
            "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
        }
        created = await api(appliance, "POST", "/api/v1/services", body, token=admin_token)
        assert created.status == 201, created.text
        yield up


async def test_a_valid_key_connects_over_the_legacy_transport(
    appliance: Appliance, member_token: str, sse_upstream: SseKeyedUpstream
) -> None:
    made = await api(
        appliance,
        "POST",
        "/api/v1/connections",
        {"service": "legacy", "api_key": "good-key"},
        token=member_token,
    )
    assert made.status == 201, made.text
    # The check opened the stream, then posted `initialize` where the stream said.
    methods = [(m, p.rstrip("/")) for m, p, _ in sse_upstream.seen]
    assert methods[:2] == [("GET", "/sse"), ("POST", "/messages")], methods
    assert ("POST", "/sse") not in methods
    assert {a for _, _, a in sse_upstream.seen} == {"Bearer good-key"}


async def test_an_invalid_key_is_refused_422(
    appliance: Appliance, member_token: str, sse_upstream: SseKeyedUpstream
) -> None:
    refused = await api(
        appliance,
        "POST",
        "/api/v1/connections",
        {"service": "legacy", "api_key": "wrong-key"},
        token=member_token,
    )
    assert refused.status == 422, refused.text
    assert refused.json()["error"] == "invalid_api_key"
    assert "wrong-key" not in refused.text
    assert counts(appliance.store)["connections"] == 0
