"""Refresh on demand in the proxy path, against the real OAuth upstream (ManualClock time)."""

from __future__ import annotations

import asyncio

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.inprocess import Appliance
from support.managed import Connected, events, payload, refresh_calls, row, rpc


async def test_expiry_during_use_refreshes_once_and_keeps_working(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    first = await rpc(url)
    assert "result" in first, first
    assert refresh_calls(upstream) == 0
    before = payload(appliance, connected.connection_id)
    generation = row(appliance, connected.connection_id).token_generation
    # Inside the 300 s window: the next call refreshes first.
    appliance.clock.advance(3600 - 200)
    second = await rpc(url)
    assert "result" in second, second
    assert refresh_calls(upstream) == 1
    after = payload(appliance, connected.connection_id)
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] != before["refresh_token"]  # rotated, and stored
    stored = row(appliance, connected.connection_id)
    assert stored.token_generation == generation + 1
    assert stored.refresh_started_at is None and stored.last_refreshed_at is not None
    assert upstream.mcp_authorizations[-1] == "Bearer " + after["access_token"]
    # Past the old token's expiry: still working, no further refresh.
    appliance.clock.advance(400)
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 1
    assert ("token_refresh", "success", "Refreshed for acme") in events(
        appliance, connected.connection_id
    )
    assert upstream.revoked_families == set()


async def test_fifty_concurrent_calls_at_expiry_make_one_refresh(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    appliance.clock.advance(3600 - 10)
    url = appliance.url + connected.secret_path
    answers = await asyncio.gather(*(rpc(url, rid=i + 1) for i in range(50)))
    assert all("result" in a for a in answers), [a for a in answers if "result" not in a][:2]
    assert refresh_calls(upstream) == 1
    assert upstream.revoked_families == set()
    token = payload(appliance, connected.connection_id)["access_token"]
    assert set(upstream.mcp_authorizations[-50:]) == {"Bearer " + token}


@pytest.mark.parametrize("with_200", [False, True])
async def test_invalid_grant_flags_needs_reconnect_with_link_and_event(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected, with_200: bool
) -> None:
    upstream.errors_with_200 = with_200
    upstream.revoked_families.update(g.grant.family for g in upstream.refresh_tokens.values())
    appliance.clock.advance(3600 + 5)
    answer = await rpc(appliance.url + connected.secret_path, rid=42)
    assert answer["id"] == 42
    assert answer["error"]["code"] == -32003
    link = f"{appliance.url}/connections/{connected.connection_id}"
    assert link in answer["error"]["message"]
    assert "invalid_grant" in answer["error"]["message"]
    stored = row(appliance, connected.connection_id)
    assert stored.status == "needs_reconnect" and stored.refresh_started_at is None
    assert ("token_refresh", "invalid_grant", "Refresh refused: invalid_grant") in events(
        appliance, connected.connection_id
    )
    # Later calls refuse at once without asking the provider again.
    again = await rpc(appliance.url + connected.secret_path)
    assert again["error"]["code"] == -32003
    assert refresh_calls(upstream) == 1


async def test_transient_failure_cools_down_valid_token_keeps_working(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    appliance.clock.advance(3600 - 30)  # in the window, still valid
    upstream.next_token_response = (503, "text/plain", b"busy")
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 1
    assert ("token_refresh", "refresh_failed", "Refresh failed: http_error") in events(
        appliance, connected.connection_id
    )
    # During the cool-down: no new attempt; once expired the call gets -32007.
    assert "result" in await rpc(url)
    appliance.clock.advance(20)
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 1
    appliance.clock.advance(15)  # expired now, cool-down still running
    cooled = await rpc(url, rid=9)
    assert cooled["error"]["code"] == -32007 and cooled["error"]["data"]["retry_after"] == 60
    # After the cool-down the refresh succeeds.
    appliance.clock.advance(30)
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 2
    assert row(appliance, connected.connection_id).status == "active"


async def test_upstream_401_refreshes_once_and_retries(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    # The provider revokes the access token early (the refresh token still works).
    token = payload(appliance, connected.connection_id)["access_token"]
    del upstream.access_tokens[token]
    answer = await rpc(url)
    assert "result" in answer, answer
    assert refresh_calls(upstream) == 1
    assert upstream.mcp_authorizations[-2:] == [
        "Bearer " + token,
        "Bearer " + payload(appliance, connected.connection_id)["access_token"],
    ]


async def test_two_refreshers_without_kv_lock_database_alone_decides(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    """Two 'processes' (refreshers) on one database, KV lock off: one provider call."""
    from bindify_appliance.crypto.credentials import parse_credentials, secret1_lookup_hash
    from bindify_appliance.services.refresh import OAuthRefresher
    from bindify_appliance.store.connections import get_auth_by_secret1_hash

    creds = parse_credentials(connected.secret_path.rsplit("/", 1)[1])
    conn = appliance.store.call(lambda: get_auth_by_secret1_hash(secret1_lookup_hash(creds)))
    assert conn is not None
    stale = payload(appliance, connected.connection_id)
    pair = [
        OAuthRefresher(
            appliance.ctx, appliance.connect.registry, appliance.connect.outbound, use_kv_lock=False
        )
        for _ in range(2)
    ]
    appliance.clock.advance(3600 - 60)
    results = await asyncio.gather(
        *(r.fresh_payload(conn, dict(stale), creds) for r in pair for _ in range(5))
    )
    assert refresh_calls(upstream) == 1 and sum(r.provider_calls for r in pair) == 1
    fresh = payload(appliance, connected.connection_id)
    # The winner's callers get the new token; the loser's keep the still-valid old one.
    assert {p["access_token"] for p in results} <= {fresh["access_token"], stale["access_token"]}
    assert upstream.revoked_families == set()


async def test_commit_after_a_rotation_reseal_writes_again(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    """A key rotation re-sealing the row between claim and commit never loses the refresh."""
    import functools

    from bindify_appliance.connections.secrets import open_payload, reseal_payload
    from bindify_appliance.store import refresh as units
    from bindify_appliance.store.connections import swap_tokens

    keyring = appliance.ctx.keys.keyring
    cid = connected.connection_id
    base = payload(appliance, cid)
    start = appliance.store.call(functools.partial(units.read_refresh_row, cid))
    assert start is not None
    now = appliance.clock.now()
    assert appliance.store.call(
        functools.partial(units.claim_refresh, cid, start.token_generation, now)
    )
    # The rotation: same plaintext, new blob, generation + 1.
    blob, fp = reseal_payload(start, base, None, keyring)
    assert appliance.store.call(
        functools.partial(
            swap_tokens,
            cid,
            expected_generation=start.token_generation,
            encrypted_tokens=blob,
            key_fingerprint=fp,
            now=now,
        )
    )
    new = {**base, "access_token": "at-new", "refresh_token": "rt-new"}
    outcome = appliance.store.call(
        functools.partial(
            units.commit_refresh,
            cid,
            expected_generation=start.token_generation,
            base_payload=base,
            seal=lambda r: reseal_payload(r, new, None, keyring),
            open_row=lambda r: open_payload(r, None, keyring),
            token_expires_at=None,
            now=now,
            detail="Refreshed for acme",
        )
    )
    assert outcome.committed and outcome.generation == start.token_generation + 2
    assert payload(appliance, cid)["refresh_token"] == "rt-new"
    assert row(appliance, cid).refresh_started_at is None
    # A real change by another writer is never overwritten.
    other = {**base, "access_token": "at-other", "refresh_token": "rt-other"}
    current = appliance.store.call(functools.partial(units.read_refresh_row, cid))
    assert current is not None
    blob, fp = reseal_payload(current, other, None, keyring)
    appliance.store.call(
        functools.partial(
            swap_tokens,
            cid,
            expected_generation=current.token_generation,
            encrypted_tokens=blob,
            key_fingerprint=fp,
            now=now,
        )
    )
    lost = appliance.store.call(
        functools.partial(
            units.commit_refresh,
            cid,
            expected_generation=current.token_generation,
            base_payload=new,
            seal=lambda r: reseal_payload(r, {**new, "access_token": "at-x"}, None, keyring),
            open_row=lambda r: open_payload(r, None, keyring),
            token_expires_at=None,
            now=now,
            detail="Refreshed for acme",
        )
    )
    assert not lost.committed and lost.reason == "superseded"
    assert payload(appliance, cid)["refresh_token"] == "rt-other"


async def test_an_hour_long_token_is_refreshed_only_in_the_last_300_seconds(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    url = appliance.url + connected.secret_path
    appliance.clock.advance(3600 - 301)  # long past 75 % of the lifetime: not due yet
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 0
    appliance.clock.advance(2)  # inside the window
    assert "result" in await rpc(url)
    assert refresh_calls(upstream) == 1
    stored = payload(appliance, connected.connection_id)
    assert stored["expires_at"] - stored["issued_at"] == 3600  # the lifetime is stored
