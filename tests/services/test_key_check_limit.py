"""API-key validation is limited per member: 10 checks a minute (DESIGN §9).

Without the limit a member could use the appliance to test stolen keys against any provider at
the appliance's speed. The attacker here is a signed-in member calling the running appliance's
API (and its connect page); the upstream is the real OAuth/API-key peer, which records every
check that reaches it, so "refused before the upstream" is observed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import counts
from support.inprocess import Appliance, api

LIMIT = 10


async def _keyed(appliance: Appliance, admin_token: str) -> OAuthUpstream:
    up = await OAuthUpstream(api_keys={"Bearer good-key"}).start()
    body = {
        "id": "keyed",
        "name": "Keyed",
        "mcp_url": up.mcp_url,
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    created = await api(appliance, "POST", "/api/v1/services", body, token=admin_token)
    assert created.status == 201, created.text
    return up


async def _connect(appliance: Appliance, token: str, key: str) -> Any:
    body = {"service": "keyed", "api_key": key}
    return await api(appliance, "POST", "/api/v1/connections", body, token=token)


async def test_a_member_gets_ten_key_checks_a_minute(
    appliance: Appliance, admin_token: str, member_token: str, other_token: str, member_id: str
) -> None:
    up = await _keyed(appliance, admin_token)
    try:
        for i in range(LIMIT):
            guess = await _connect(appliance, member_token, f"stolen-{i}")
            assert guess.status == 422 and guess.json()["error"] == "invalid_api_key", guess.text
        assert len(up.mcp_authorizations) == LIMIT
        # The 11th check is refused before it reaches the provider — even with the right key.
        refused = await _connect(appliance, member_token, "good-key")
        assert refused.status == 429, refused.text
        assert refused.json()["error"] == "rate_limited" and refused.json()["message"]
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= 60
        assert "good-key" not in refused.text
        assert len(up.mcp_authorizations) == LIMIT
        assert counts(appliance.store)["connections"] == 0  # nothing stored
        # The connect page's error path says so too, with the same header.
        browser = await appliance.browser(member_id)
        page = await browser.request("POST", "/connect/keyed", form={"f__api_key": "good-key"})
        assert page.status == 429, page.text
        assert page.headers["Retry-After"] and "wait" in page.text.lower()
        assert len(up.mcp_authorizations) == LIMIT
        # Per member: another member's check is untouched.
        other = await _connect(appliance, other_token, "good-key")
        assert other.status == 201, other.text
        # Once the window has passed, the member may check again.
        appliance.clock.advance(retry)
        again = await _connect(appliance, member_token, "good-key")
        assert again.status == 201, again.text
    finally:
        await up.stop()


async def test_services_without_a_key_check_are_not_counted(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    body = {
        "id": "open",
        "name": "Open",
        "mcp_url": "https://open.example/mcp",
        "auth": {"type": "none"},
    }
    created = await api(appliance, "POST", "/api/v1/services", body, token=admin_token)
    assert created.status == 201, created.text
    for _ in range(LIMIT + 2):
        made = await api(
            appliance,
            "POST",
            "/api/v1/connections",
            {"service": "open"},
            token=member_token,
        )
        assert made.status == 201, made.text


async def test_the_limit_is_configurable_and_zero_turns_it_off(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    up = await _keyed(appliance, admin_token)
    try:
        appliance.ctx.settings = dataclasses.replace(
            appliance.ctx.settings, key_checks_per_minute=0
        )
        for i in range(LIMIT + 3):
            guess = await _connect(appliance, member_token, f"stolen-{i}")
            assert guess.status == 422, guess.text
        appliance.ctx.settings = dataclasses.replace(
            appliance.ctx.settings, key_checks_per_minute=2
        )
        appliance.clock.advance(60)
        for i in range(2):
            assert (await _connect(appliance, member_token, f"again-{i}")).status == 422
        assert (await _connect(appliance, member_token, "good-key")).status == 429
    finally:
        await up.stop()
