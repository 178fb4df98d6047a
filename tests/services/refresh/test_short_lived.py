"""Tokens that live shorter than the 300 s refresh window are refreshed once per lifetime.

A token is due when 75 % of its own lifetime has passed, or 300 s before expiry, whichever
comes LATER; before the fix every token shorter than the window was "due" from the moment it
was issued, so every request after the 1 s resolution memo refreshed it again. The appliance
here is in-process on the ManualClock, the OAuth server and MCP upstream are the real peer on
the same clock, and each simulated second carries a burst of concurrent calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.inprocess import Appliance
from support.managed import Connected, payload, refresh_calls, rpc


@pytest.fixture
async def upstream(appliance: Appliance) -> AsyncIterator[OAuthUpstream]:
    up = OAuthUpstream(clock=appliance.clock, access_ttl=20)
    await up.start()
    yield up
    await up.stop()


async def test_a_20_second_token_is_refreshed_once_per_lifetime_under_load(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    seconds = 100
    for second in range(seconds):
        answers = await asyncio.gather(*(rpc(url, rid=i + 1) for i in range(5)))
        assert all("result" in a for a in answers), (second, answers[:1])
        appliance.clock.advance(1)
    # Refreshed at 75 % of each 20 s lifetime: every 15 s, so 6 in 100 s (7 at most).
    assert 5 <= refresh_calls(upstream) <= seconds // 15 + 1, refresh_calls(upstream)
    times = [c.at for c in upstream.token_requests if c.form.get("grant_type") == "refresh_token"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each refresh came before the previous token expired (20 s): no call ever met a 401.
    assert all(15 <= gap < 20 for gap in gaps), gaps
    assert upstream.revoked_families == set()
    stored = payload(appliance, connected.connection_id)
    assert stored["expires_at"] - stored["issued_at"] == 20  # the lifetime is stored
