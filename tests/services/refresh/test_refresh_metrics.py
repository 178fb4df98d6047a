"""Refresh outcomes reach `/metrics` by service and outcome, against the real OAuth upstream."""

from __future__ import annotations

from peers.oauth_upstream import OAuthUpstream
from prometheus_client.parser import text_string_to_metric_families
from support.inprocess import Appliance, fetch
from support.managed import Connected, refresh_calls, rpc


async def _refreshes(appliance: Appliance) -> dict[str, float]:
    text = (await fetch(appliance.url + "/metrics")).body.decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bindify_token_refreshes_total":
                assert sample.labels["service"] == "acme"
                out[sample.labels["outcome"]] = sample.value
    return out


async def test_refresh_outcomes_are_counted(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    assert await _refreshes(appliance) == {}
    # A transient failure inside the window (the token still works), then a success.
    appliance.clock.advance(3600 - 30)
    upstream.next_token_response = (503, "text/plain", b"busy")
    assert "result" in await rpc(url)
    assert await _refreshes(appliance) == {"transient_error": 1}
    appliance.clock.advance(65)  # past the cool-down
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 2
    assert await _refreshes(appliance) == {"transient_error": 1, "success": 1}
    # The provider refuses the grant: counted as refused.
    upstream.revoked_families.update(g.grant.family for g in upstream.refresh_tokens.values())
    appliance.clock.advance(3600 + 5)
    assert (await rpc(url))["error"]["code"] == -32003
    counts = await _refreshes(appliance)
    assert counts == {"transient_error": 1, "success": 1, "refused": 1}
    assert connected.connection_id not in (await fetch(appliance.url + "/metrics")).body.decode()
