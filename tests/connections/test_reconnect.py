"""Reconnecting in place (DESIGN §15): same id, same secret URL and key, history kept.

Driven end to end against the real OAuth upstream and the proxy: the member's URL works before
and after, the upstream sees the new token, the events survive with a `reconnected` one, and for
a zero-knowledge OAuth reconnect over real Redis no KV key or value holds the credential.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import counts, mcp_tool_call, path_of, play_authorize
from support.inprocess import Appliance, add_user, api, start_appliance

from bindify_appliance.connections.secrets import open_payload
from bindify_appliance.crypto.credentials import parse_credentials
from bindify_appliance.kv.redis import RedisKV
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection
from bindify_appliance.store.refresh import commit_refresh, read_refresh_row


async def _oauth_service(app: Appliance, token: str, upstream: OAuthUpstream) -> None:
    body = {"id": "acme", "name": "Acme", "mcp_url": upstream.mcp_url, "auth": {"type": "oauth"}}
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


async def _connect(app: Appliance, browser: Any, mode: str) -> dict[str, Any]:
    started = await browser.api(
        "POST", "/api/v1/connections/acme/authorize", {"key_storage_mode": mode}
    )
    assert started.status == 200, started.text
    done = await browser.get(path_of(await play_authorize(started.json()["url"])))
    claim = str(done.location).split("claim=")[1]
    claimed = await browser.api("GET", f"/api/v1/claims/{claim}")
    assert claimed.status == 200, claimed.text
    return dict(claimed.json())


async def _echo(app: Appliance, secret_url: str) -> str:
    assert app.proxy_url is not None
    answer = await mcp_tool_call(app.proxy_url + secret_url[len(app.url) :], "echo", {"text": "hi"})
    return str(answer["result"]["content"][0]["text"])


async def _echo_with_key(app: Appliance, api_key: str) -> str:
    assert app.proxy_url is not None
    answer = await mcp_tool_call(
        app.proxy_url + "/mcp/acme", "echo", {"text": "k"}, {"Authorization": "Bearer " + api_key}
    )
    return str(answer["result"]["content"][0]["text"])


def _events(app: Appliance, connection_id: str) -> list[str]:
    from bindify_appliance.store.models import ConnectionEvent

    return app.store.call(
        lambda: [
            f"{e.event_type}/{e.category}"
            for e in ConnectionEvent.select()
            .where(ConnectionEvent.connection == connection_id)
            .order_by(ConnectionEvent.id)
        ]
    )


@pytest.mark.parametrize("mode", ["zero_knowledge", "managed"])
async def test_oauth_reconnect_keeps_id_url_key_and_history(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    mode: str,
) -> None:
    await _oauth_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    secrets_ = await _connect(appliance, browser, mode)
    cid = secrets_["connection"]["id"]
    assert await _echo(appliance, secrets_["secret_url"]) == "echo:hi"
    old_token = upstream.mcp_authorizations[-1]
    # The grant dies at the provider; the connection is flagged.
    upstream.revoked_families.update(g.family for g in upstream.access_tokens.values())
    appliance.store.call(
        lambda: rows.set_needs_reconnect(cid, "upstream refused", appliance.clock.now())
    )
    history = _events(appliance, cid)
    credentials = secrets_["secret_url"].rsplit("/", 1)[1]

    if mode == "zero_knowledge":
        refused = await browser.api("POST", f"/api/v1/connections/{cid}/reconnect", {})
        assert refused.status == 409, refused.text
        assert refused.json()["error"] == "conflict"
        body: dict[str, Any] = {"credentials": credentials}
    else:
        body = {}
    started = await browser.api("POST", f"/api/v1/connections/{cid}/reconnect", body)
    assert started.status == 200, started.text
    url = started.json()["url"]
    assert url.startswith(upstream.authorize_url + "?")
    done = await browser.get(path_of(await play_authorize(url)))
    assert done.status == 302, done.text
    assert done.location == f"/connections/{cid}?done=reconnected"

    assert counts(appliance.store)["connections"] == 1
    row = appliance.store.call(lambda: Connection.get_by_id(cid))
    assert row.status == "active" and row.needs_reconnect_at is None
    # The same URL and the same key keep working, now with the new grant's token.
    assert await _echo(appliance, secrets_["secret_url"]) == "echo:hi"
    assert upstream.mcp_authorizations[-1] != old_token
    assert await _echo_with_key(appliance, secrets_["api_key"]) == "echo:k"
    after = _events(appliance, cid)
    assert after[: len(history)] == history and "connection/reconnected" in after
    page = await browser.get(f"/connections/{cid}?done=reconnected")
    assert page.status == 200 and "reconnected" in page.text.lower()


async def test_zero_knowledge_reconnect_needs_this_connections_credentials(
    appliance: Appliance,
    upstream: OAuthUpstream,
    admin_token: str,
    member_id: str,
    other_id: str,
) -> None:
    await _oauth_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    mine = await _connect(appliance, browser, "zero_knowledge")
    second = await _connect(appliance, browser, "zero_knowledge")
    cid = mine["connection"]["id"]
    before = appliance.store.call(lambda: Connection.get_by_id(cid).token_generation)
    foreign = second["secret_url"].rsplit("/", 1)[1]
    wrong = await browser.api(
        "POST", f"/api/v1/connections/{cid}/reconnect", {"credentials": foreign}
    )
    assert wrong.status == 400 and wrong.json()["field"] == "credentials", wrong.text
    junk = await browser.api("POST", f"/api/v1/connections/{cid}/reconnect", {"credentials": "x"})
    assert junk.status == 400, junk.text
    # Another member cannot even see it.
    other = await appliance.browser(other_id)
    theirs = await other.api(
        "POST",
        f"/api/v1/connections/{cid}/reconnect",
        {"credentials": mine["secret_url"].rsplit("/", 1)[1]},
    )
    assert theirs.status == 404
    assert appliance.store.call(lambda: Connection.get_by_id(cid).token_generation) == before


async def test_api_key_reconnect_in_place(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    upstream.api_keys.update({"Bearer key-one", "Bearer key-two"})
    body = {
        "id": "acme",
        "name": "Acme",
        "mcp_url": upstream.mcp_url,
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    assert (await api(appliance, "POST", "/api/v1/services", body, token=admin_token)).status == 201
    browser = await appliance.browser(member_id)
    made = await browser.api(
        "POST", "/api/v1/connections", {"service": "acme", "api_key": "key-one"}
    )
    assert made.status == 201, made.text
    result = made.json()
    cid = result["connection"]["id"]
    credentials = result["secret_url"].rsplit("/", 1)[1]
    assert await _echo(appliance, result["secret_url"]) == "echo:hi"
    assert upstream.mcp_authorizations[-1] == "Bearer key-one"

    # A rejected key changes nothing.
    upstream.api_keys.discard("Bearer key-one")
    bad = await browser.api(
        "POST",
        f"/api/v1/connections/{cid}/reconnect",
        {"api_key": "key-wrong", "credentials": credentials},
    )
    assert bad.status == 422, bad.text
    no_creds = await browser.api(
        "POST", f"/api/v1/connections/{cid}/reconnect", {"api_key": "key-two"}
    )
    assert no_creds.status == 409, no_creds.text
    ok = await browser.api(
        "POST",
        f"/api/v1/connections/{cid}/reconnect",
        {"api_key": "key-two", "credentials": credentials},
    )
    assert ok.status == 200, ok.text
    assert ok.json()["connection"]["id"] == cid and "secret_url" not in ok.json()
    assert await _echo(appliance, result["secret_url"]) == "echo:hi"
    assert upstream.mcp_authorizations[-1] == "Bearer key-two"
    assert await _echo_with_key(appliance, result["api_key"]) == "echo:k"
    assert "connection/reconnected" in _events(appliance, cid)
    assert counts(appliance.store)["connections"] == 1


async def test_a_refresh_that_read_before_the_reconnect_cannot_overwrite_it(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    await _oauth_service(appliance, admin_token, upstream)
    browser = await appliance.browser(member_id)
    made = await _connect(appliance, browser, "managed")
    cid = made["connection"]["id"]
    keyring = appliance.ctx.keys.keyring
    # A refresher reads the row (generation N) and goes to the provider…
    stale = appliance.store.call(lambda: read_refresh_row(cid))
    assert stale is not None
    base = open_payload(stale, None, keyring)
    # …meanwhile the member reconnects.
    started = await browser.api("POST", f"/api/v1/connections/{cid}/reconnect", {})
    await browser.get(path_of(await play_authorize(started.json()["url"])))
    fresh = appliance.store.call(lambda: Connection.get_by_id(cid))
    reconnected = open_payload(fresh, None, keyring)
    assert reconnected["access_token"] != base["access_token"]
    # The refresher's commit against generation N loses and writes nothing.
    outcome = appliance.store.call(
        lambda: commit_refresh(
            cid,
            expected_generation=stale.token_generation,
            base_payload=base,
            seal=lambda row: (stale.encrypted_tokens or "", stale.key_fingerprint),
            open_row=lambda row: open_payload(row, None, keyring),
            token_expires_at=None,
            now=appliance.clock.now(),
            detail="late refresh",
        )
    )
    assert not outcome.committed and outcome.reason == "superseded"
    final = appliance.store.call(lambda: Connection.get_by_id(cid))
    assert open_payload(final, None, keyring)["access_token"] == reconnected["access_token"]


async def _redis_dump(url: str, namespace: str) -> list[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        out: list[str] = []
        async for key in client.scan_iter(match=namespace + "*"):
            out.append(key)
            kind = await client.type(key)
            if kind == "string":
                out.append(str(await client.get(key)))
            elif kind == "hash":
                out.extend(str(v) for v in (await client.hgetall(key)).items())
            elif kind == "zset":
                out.extend(str(v) for v in await client.zrange(key, 0, -1))
            elif kind == "set":
                out.extend(str(v) for v in await client.smembers(key))
        return out
    finally:
        await client.aclose()


async def test_zero_knowledge_oauth_reconnect_keeps_the_credential_out_of_redis(
    tmp_path: Path, redis_url: str
) -> None:
    namespace = f"bindify-test-{secrets.token_hex(6)}:"
    kv = RedisKV(redis_url, namespace)
    app = await start_appliance(tmp_path, allow_private_upstreams=True, proxy=True, kv=kv)
    try:
        from support.inprocess import add_token

        admin = add_user(app, "admin@example.com", "admin")
        member = add_user(app, "member@example.com")
        token = add_token(app, admin, "admin")
        async with OAuthUpstream(clock=app.clock, access_ttl=60) as upstream:
            await _oauth_service(app, token, upstream)
            browser = await app.browser(member)
            made = await _connect(app, browser, "zero_knowledge")
            cid = made["connection"]["id"]
            credentials = made["secret_url"].rsplit("/", 1)[1]
            creds = parse_credentials(credentials)
            started = await browser.api(
                "POST", f"/api/v1/connections/{cid}/reconnect", {"credentials": credentials}
            )
            assert started.status == 200, started.text
            # The state is in Redis now, waiting for the provider's redirect.
            dumped = "\n".join(await _redis_dump(redis_url, namespace))
            assert "oauth_state:" in dumped
            for secret in (credentials, creds.secret1_b64, creds.secret2_b64, made["api_key"]):
                assert secret not in dumped
            done = await browser.get(path_of(await play_authorize(started.json()["url"])))
            assert done.location == f"/connections/{cid}?done=reconnected"
            assert await _echo(app, made["secret_url"]) == "echo:hi"
            dumped = "\n".join(await _redis_dump(redis_url, namespace))
            assert credentials not in dumped and creds.secret2_b64 not in dumped
    finally:
        await app.close()


async def test_the_reconnect_page_for_an_api_key_connection(
    appliance: Appliance, upstream: OAuthUpstream, admin_token: str, member_id: str
) -> None:
    upstream.api_keys.update({"Bearer key-one", "Bearer key-two"})
    body = {
        "id": "acme",
        "name": "Acme",
        "mcp_url": upstream.mcp_url,
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    assert (await api(appliance, "POST", "/api/v1/services", body, token=admin_token)).status == 201
    browser = await appliance.browser(member_id)
    made = await browser.api(
        "POST", "/api/v1/connections", {"service": "acme", "api_key": "key-one"}
    )
    result = made.json()
    cid = result["connection"]["id"]
    appliance.store.call(
        lambda: rows.set_needs_reconnect(cid, "upstream rejected the key", appliance.clock.now())
    )
    page = await browser.get(f"/connections/{cid}")
    assert f'href="/connections/{cid}/reconnect"' in page.text
    assert "?replace=" not in page.text.split("needs to be connected again")[1].split("</p>")[0]
    form = await browser.get(f"/connections/{cid}/reconnect")
    assert form.status == 200 and 'name="current"' in form.text
    # Without the current URL: refused, nothing changes, nothing pasted is echoed.
    refused = await browser.post(f"/connections/{cid}/reconnect", {"f__api_key": "key-two"})
    assert refused.status == 409 and "key-two" not in refused.text
    done = await browser.post(
        f"/connections/{cid}/reconnect",
        {"current": result["secret_url"], "f__api_key": "key-two"},
    )
    assert done.status == 303 and done.location == f"/connections/{cid}?done=reconnected"
    assert await _echo(appliance, result["secret_url"]) == "echo:hi"
    assert upstream.mcp_authorizations[-1] == "Bearer key-two"
    shown = await browser.get(done.location)
    assert "Reconnected" in shown.text and "needs to be connected again" not in shown.text
