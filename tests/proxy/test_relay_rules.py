"""Relay rules seen from both ends (DESIGN §6): headers, statuses, bodies, DELETE, the one refresh
and retry on upstream 401/403, session binding, record_use. Upstream: the raw Tornado echo."""

from __future__ import annotations

import json
from typing import Any

from peers.raw_upstream import RawUpstream, seen_json

from bindify_appliance.proxy.target import ProxyRefusal

from .conftest import ProxyHarness
from .resolver import with_headers

CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}'

STATUS_BODY = b'{"jsonrpc":"2.0","id":"srv","error":{"code":-32600,"message":"upstream says no"}}'

CLIENT_HEADERS = {
    "Authorization": "Bearer client-secret-token",
    "Cookie": "bindify_session=abc",
    "Referer": "http://somewhere.example/page",
    "Connection": "keep-alive, X-Hop",
    "X-Hop": "hop-value",
    "Keep-Alive": "timeout=5",
    "TE": "trailers",
    "Proxy-Authorization": "Basic eA==",
    "X-Forwarded-For": "203.0.113.9",
    "X-Custom": "not forwarded",
    "Accept-Encoding": "gzip, br",
    "MCP-Protocol-Version": "2025-11-25",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "add",
    "Mcp-Param-Region": "eu-west",
    "Last-Event-ID": "ev-41",
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "User-Agent": "test-client/1.0",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=1",
    "baggage": "k=v",
}


async def test_request_headers_seen_by_the_upstream(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add(
        "acme",
        raw.url("/echo"),
        inject_headers={"Authorization": "Bearer upstream-token", "X-Api-Key": "k"},
        inject_query={"key": "q1"},
    )
    headers = {**CLIENT_HEADERS, "Origin": proxy.url}
    async with http.post(proxy.path_url("acme", creds), data=CALL, headers=headers) as resp:
        assert resp.status == 200
        seen = seen_json(await resp.read())
    got = {k.lower(): v for k, v in seen["headers"]}
    assert got["host"] == f"127.0.0.1:{raw.port}"
    assert got["accept-encoding"] == "identity"
    assert got["authorization"] == "Bearer upstream-token"
    assert got["x-api-key"] == "k"
    for name in (
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "mcp-param-region",
        "last-event-id",
        "accept",
        "content-type",
        "user-agent",
        "traceparent",
        "tracestate",
        "baggage",
    ):
        assert got[name] == next(v for k, v in CLIENT_HEADERS.items() if k.lower() == name)
    for name in (
        "cookie",
        "origin",
        "referer",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-forwarded-for",
        "x-custom",
    ):
        assert name not in got, name
    assert seen["query"] == "key=q1"
    assert seen["body"].encode("latin-1") == CALL
    assert seen["method"] == "POST"


async def test_api_key_form_never_forwards_the_clients_authorization(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    key = f"Bearer bnd_live_{creds}"
    async with http.post(proxy.key_url("acme"), data=CALL, headers={"Authorization": key}) as resp:
        assert resp.status == 200
        seen = seen_json(await resp.read())
    names = {k.lower() for k, _ in seen["headers"]}
    assert "authorization" not in names
    assert creds not in json.dumps(seen)


async def test_response_headers_are_limited(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        await resp.read()
        names = {k.lower() for k in resp.headers}
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Mcp-Session-Id"] == "echo-session"
        assert resp.headers["Cache-Control"] == "no-store"
        # The appliance's sandbox, never a policy of the upstream's (DESIGN §9).
        assert resp.headers.getall("Content-Security-Policy") == [
            "default-src 'none'; sandbox; frame-ancestors 'none'"
        ]
    assert "set-cookie" not in names
    assert "www-authenticate" not in names
    assert "x-upstream-secret" not in names


async def test_statuses_and_bodies_pass_through_untouched(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/status/0"))
    for code in (202, 400, 404, 405, 406, 409, 421, 500, 503):
        proxy.resolver.set_url(creds, raw.url(f"/status/{code}"))
        async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
            body = await resp.read()
            assert resp.status == code
            assert resp.headers.get("Allow") == "POST"
            assert resp.headers.get("Retry-After") == "7"
            assert "WWW-Authenticate" not in resp.headers
        if code == 202:
            assert body == b""
        else:
            assert body == STATUS_BODY


async def test_unparseable_and_empty_bodies_are_forwarded_unchanged(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    for body in (b'{"jsonrpc": "2.0", "method": broken', b"", b"\xff\x00\xfe binary", b"ping"):
        async with http.post(proxy.path_url("acme", creds), data=body) as resp:
            assert resp.status == 200
            seen = seen_json(await resp.read())
        assert seen["body"].encode("latin-1") == body
    assert len(raw.hits("/echo")) == 4


async def test_ping_is_relayed_like_any_request(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    async with http.post(proxy.path_url("acme", creds), data=ping) as resp:
        seen = seen_json(await resp.read())
    assert seen["body"].encode() == ping
    assert len(raw.hits("/echo")) == 1


async def test_delete_and_get_are_relayed(proxy: ProxyHarness, raw: RawUpstream, http: Any) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    async with http.delete(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 200
        assert seen_json(await resp.read())["method"] == "DELETE"
    async with http.get(proxy.path_url("acme", creds), headers={"Last-Event-ID": "5"}) as resp:
        seen = seen_json(await resp.read())
    assert seen["method"] == "GET"
    assert ("last-event-id", "5") in [(k.lower(), v) for k, v in seen["headers"]]
    kinds = [u.kind for u in proxy.resolver.uses]
    assert kinds == ["streamable-http:delete", "streamable-http:get"]
    assert all(u.upstream_status == 200 for u in proxy.resolver.uses)


async def test_upstream_401_refreshes_once_and_retries(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, target = proxy.resolver.add(
        "acme", raw.url("/auth"), inject_headers={"Authorization": "Bearer stale"}
    )
    proxy.resolver.refresh_with(target, with_headers(target, {"Authorization": "Bearer good"}))
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        assert resp.status == 200
        assert await resp.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert "WWW-Authenticate" not in resp.headers
    hits = raw.hits("/auth")
    assert [h.header("Authorization") for h in hits] == ["Bearer stale", "Bearer good"]
    assert all(h.body == CALL for h in hits)
    assert proxy.resolver.auth_failures == [(target.connection_id, 401)]


async def test_upstream_401_after_the_refresh_means_reconnect(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, target = proxy.resolver.add(
        "acme", raw.url("/auth"), inject_headers={"Authorization": "Bearer stale"}
    )
    proxy.resolver.refresh_with(target, with_headers(target, {"Authorization": "Bearer also-bad"}))
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        assert resp.status == 200
        body = await resp.json()
        assert "WWW-Authenticate" not in resp.headers
    assert body["id"] == 7
    assert body["error"]["code"] == -32003
    assert target.reconnect_url in body["error"]["message"]
    assert len(raw.hits("/auth")) == 2
    assert len(proxy.resolver.auth_failures) == 1
    assert proxy.resolver.uses[-1].upstream_status == 401


async def test_refresh_refused_means_reconnect_without_retry(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _target = proxy.resolver.add(
        "acme", raw.url("/auth"), inject_headers={"Authorization": "Bearer stale"}
    )
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["error"]["code"] == -32003
    assert len(raw.hits("/auth")) == 1


async def test_cooldown_on_refresh_is_answered_per_call(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, target = proxy.resolver.add(
        "acme", raw.url("/auth"), inject_headers={"Authorization": "Bearer stale"}
    )
    proxy.resolver.refresh_with(target, ProxyRefusal("cooldown", "Refresh cooling down."))
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["error"] == {
        "code": -32007,
        "message": "Refresh cooling down.",
        "data": {"retry_after": 60},
    }


async def test_session_ids_are_bound_to_the_connection_that_opened_them(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    url = raw.url("/echo")
    creds_a, _ = proxy.resolver.add("acme", url)
    creds_b, _ = proxy.resolver.add("acme", url)
    # The upstream hands session "S-1" to connection A.
    proxy.resolver.set_url(creds_a, url + "?session=S-1")
    async with http.post(proxy.path_url("acme", creds_a), data=CALL) as resp:
        assert resp.headers["Mcp-Session-Id"] == "S-1"
    hits = len(raw.requests)

    with_session = {"Mcp-Session-Id": "S-1"}
    async with http.post(proxy.path_url("acme", creds_a), data=CALL, headers=with_session) as r:
        assert r.status == 200
    assert len(raw.requests) == hits + 1

    # Connection B presents A's session id: 404 with the request's id, upstream never reached.
    async with http.post(proxy.path_url("acme", creds_b), data=CALL, headers=with_session) as r:
        assert r.status == 404
        body = await r.json()
    assert body["id"] == 7
    assert len(raw.requests) == hits + 1
    # A session id nobody was handed: 404 too.
    unknown = {"Mcp-Session-Id": "never-issued"}
    async with http.get(proxy.path_url("acme", creds_a), headers=unknown) as r:
        assert r.status == 404
    assert len(raw.requests) == hits + 1

    # DELETE ends the binding.
    async with http.delete(proxy.path_url("acme", creds_a), headers=with_session) as r:
        assert r.status == 200
    async with http.post(proxy.path_url("acme", creds_a), data=CALL, headers=with_session) as r:
        assert r.status == 404


async def test_record_use_carries_metadata_only(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, target = proxy.resolver.add("acme", raw.url("/status/404"))
    async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
        await resp.read()
    assert len(proxy.resolver.uses) == 1
    use = proxy.resolver.uses[0]
    assert (use.connection_id, use.upstream_status, use.kind) == (
        target.connection_id,
        404,
        "streamable-http:post",
    )
