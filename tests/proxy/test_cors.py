"""`Origin` validation and CORS on the MCP routes: refused origins get 403 with no body before
any credential work; allowed ones get CORS headers; preflights never touch credentials."""

from __future__ import annotations

from typing import Any

from peers.raw_upstream import RawUpstream

from .conftest import ProxyHarness, close_proxy, make_proxy

CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'


async def test_foreign_origin_is_refused_before_credential_work(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    for origin in ("http://evil.example", "null", proxy.url.replace("127.0.0.1", "localhost")):
        async with http.post(
            proxy.path_url("acme", creds), data=CALL, headers={"Origin": origin}
        ) as resp:
            assert resp.status == 403
            assert await resp.read() == b""
        async with http.get(proxy.path_url("acme", creds, "/sse"), headers={"Origin": origin}) as r:
            assert r.status == 403
    assert proxy.resolver.resolve_calls == 0
    assert raw.requests == []


async def test_own_origin_and_listed_origins_get_cors_headers(raw: RawUpstream, http: Any) -> None:
    harness = await make_proxy(settings={"allowed_origins": ("https://app.example.com",)})
    try:
        creds, _ = harness.resolver.add("acme", raw.url("/echo"))
        for origin in (harness.url, "https://app.example.com", "https://APP.example.com:443"):
            async with http.post(
                harness.path_url("acme", creds), data=CALL, headers={"Origin": origin}
            ) as resp:
                assert resp.status == 200
                await resp.read()
                assert resp.headers["Access-Control-Allow-Origin"] == origin
                assert resp.headers["Access-Control-Expose-Headers"] == "Mcp-Session-Id"
                assert resp.headers["Vary"] == "Origin"
        # The browser's Origin is never forwarded upstream.
        assert all(r.header("Origin") is None for r in raw.requests)
    finally:
        await close_proxy(harness)


async def test_preflight_is_answered_without_credentials(proxy: ProxyHarness, http: Any) -> None:
    headers = {
        "Origin": proxy.url,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, mcp-session-id, mcp-protocol-version, "
        "authorization, mcp-param-region, x-evil",
    }
    for url in (
        proxy.path_url("nosuch", "not-even-a-credential"),
        proxy.key_url("nosuch"),
        proxy.path_url("nosuch", "x", "/messages"),
        proxy.key_url("nosuch", "/sse"),
    ):
        async with http.options(url, headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == proxy.url
            allowed = {h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"mcp-session-id", "mcp-protocol-version", "authorization"} <= allowed
            assert "mcp-param-region" in allowed
            assert "x-evil" not in allowed
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert resp.headers["Access-Control-Expose-Headers"] == "Mcp-Session-Id"
    assert proxy.resolver.resolve_calls == 0


async def test_preflight_from_a_foreign_origin_is_refused(proxy: ProxyHarness, http: Any) -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    async with http.options(proxy.key_url("acme"), headers=headers) as resp:
        assert resp.status == 403
        assert await resp.read() == b""
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_options_without_origin_lists_methods(proxy: ProxyHarness, http: Any) -> None:
    async with http.options(proxy.key_url("acme")) as resp:
        assert resp.status == 204
        assert resp.headers["Allow"] == "GET, POST, DELETE, OPTIONS"
    async with http.options(proxy.key_url("acme", "/sse")) as resp:
        assert resp.headers["Allow"] == "GET, OPTIONS"
    assert proxy.resolver.resolve_calls == 0
