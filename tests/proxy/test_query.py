"""The client's query string on an MCP URL (DESIGN §14, a §6 relay rule): forwarded to the
upstream after the service URL's own query; never able to override the service URL's parameters
or the ones it injects (its API key), compared after percent-decoding, every duplicate dropped;
the appliance's own legacy `session` parameter never forwarded; never in a log line.

Upstream: the raw Tornado echo, which records the exact query string it received.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from peers.raw_upstream import RawUpstream
from support.appliance import Appliance, admin_token, api_post

from .conftest import ProxyHarness

CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}'
MESSAGE = b'{"jsonrpc":"2.0","id":3,"method":"tools/list"}'


async def _seen_query(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, creds: str, query: str
) -> str:
    """POST through the proxy with `query` (raw, "" for none); the query the upstream saw."""
    url = proxy.path_url("acme", creds) + (f"?{query}" if query else "")
    before = len(raw.hits("/echo"))
    async with http.post(url, data=CALL, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.read()
        await resp.read()
    hits = raw.hits("/echo")
    assert len(hits) == before + 1
    return hits[-1].query


async def test_plain_client_params_follow_the_services_own_in_order(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo?tenant=t1"), inject_query={"key": "K"})
    seen = await _seen_query(proxy, raw, http, creds, "b=2&a=1&b=3&flag&q=caf%C3%A9%20x+y")
    # The client's bytes are kept as sent (no re-encoding), after the service's own query.
    assert seen == "tenant=t1&key=K&b=2&a=1&b=3&flag&q=caf%C3%A9%20x+y"


async def test_plain_client_params_reach_an_upstream_url_without_a_query(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    assert await _seen_query(proxy, raw, http, creds, "a=1&b=2") == "a=1&b=2"


async def test_no_client_query_leaves_the_upstream_url_unchanged(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo?tenant=t1"), inject_query={"key": "K"})
    assert await _seen_query(proxy, raw, http, creds, "") == "tenant=t1&key=K"
    bare, _ = proxy.resolver.add("acme", raw.url("/echo"))
    assert await _seen_query(proxy, raw, http, bare, "") == ""
    # A lone "?" or empty pieces carry no parameter: nothing is added.
    assert await _seen_query(proxy, raw, http, bare, "&&") == ""


async def test_client_cannot_override_the_services_params_or_its_injected_key(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo?tenant=t1"), inject_query={"key": "K"})
    attack = "&".join(
        [
            "key=evil",  # the injected API key
            "tenant=t2",  # the service URL's own parameter
            "k%65y=evil2",  # percent-encoded name
            "%6B%65%79=evil3",  # fully encoded
            "KEY=evil4",  # case variant (servers that fold case)
            "x=1",
            "key",  # no value
            "te%6Eant",
            "y=2;key=evil5",  # a `;` separator some servers honour
            "key=evil6",  # every duplicate
        ]
    )
    assert await _seen_query(proxy, raw, http, creds, attack) == "tenant=t1&key=K&x=1"


async def test_duplicate_client_params_are_all_forwarded(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"), inject_query={"key": "K"})
    seen = await _seen_query(proxy, raw, http, creds, "a=1&a=2&key=x&a=3&key=y")
    assert seen == "key=K&a=1&a=2&a=3"


async def test_legacy_messages_never_forward_the_appliances_session_param(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, target = proxy.resolver.add(
        "acme", raw.url("/legacy/sse"), transport="sse", inject_query={"key": "K"}
    )
    message_url = raw.url("/legacy/messages?session_id=up-1")
    session = await proxy.legacy_session(target.connection_id, message_url)
    # The appliance reads the last `session` value; every `session` piece stays here.
    query = f"s%65ssion=3&x=1&session_id=hijack&key=evil&session={session}"
    url = proxy.path_url("acme", creds, f"/messages?{query}")
    async with http.post(url, data=MESSAGE, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 202, await resp.read()
    seen = raw.hits("/legacy/messages")[-1].query
    # The upstream's own session id (from its endpoint event) cannot be replaced either.
    assert seen == "session_id=up-1&key=K&x=1"


async def test_the_legacy_stream_forwards_the_client_query(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    raw.endpoint_chunks = [b"event: endpoint\ndata: /legacy/messages?session_id=abc\n\n"]
    creds, _ = proxy.resolver.add(
        "acme", raw.url("/legacy/sse?tenant=t1"), transport="sse", inject_query={"key": "K"}
    )
    url = proxy.path_url("acme", creds, "/sse?a=1&key=evil&tenant=t2")
    async with http.get(url, headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")
    assert raw.hits("/legacy/sse")[-1].query == "tenant=t1&key=K&a=1"


async def test_the_client_query_never_reaches_a_log_line(tmp_path: Path, raw: RawUpstream) -> None:
    """The real `bindify serve` with its JSON log: the query goes upstream, not into the log."""
    marker = "qmarker7c1e"
    data = tmp_path / "data"
    token = admin_token(data)
    app = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
    try:
        service = {
            "id": "echo",
            "name": "Echo",
            "mcp_url": raw.url("/echo?tenant=t1"),
            "auth": {"type": "none"},
        }
        await asyncio.to_thread(api_post, app, token, "/services", service)
        made = await asyncio.to_thread(api_post, app, token, "/connections", {"service": "echo"})
        headers = {"Authorization": f"Bearer {made['api_key']}", "Content-Type": "application/json"}
        import aiohttp

        async with aiohttp.ClientSession() as http:
            query = f"?{marker}=v-{marker}&tenant={marker}"
            for url, method in (
                (f"{app.url}/mcp/echo{query}", "POST"),
                (f"{app.url}/mcp/echo{query}", "GET"),
                (f"{app.url}/mcp/nosuch{query}", "POST"),  # a refusal
                (f"{app.url}/mcp/echo/sse{query}", "GET"),  # not a legacy service: refused
                (f"{app.url}/nowhere{query}", "GET"),  # matches no route
            ):
                async with http.request(method, url, data=CALL, headers=headers) as resp:
                    await resp.read()
        assert raw.hits("/echo")[0].query == f"tenant=t1&{marker}=v-{marker}"
    finally:
        assert app.stop() == 0
    log = app.stderr()
    assert '"route"' in log  # the access log did write lines
    assert marker not in log


def test_with_client_query_edges() -> None:
    from bindify_appliance.proxy.query import with_client_query

    assert with_client_query("http://u/m", "") == "http://u/m"
    assert with_client_query("http://u/m?", "a=1") == "http://u/m?a=1"
    assert with_client_query("http://u/m?k=1&", "a=1&k=2") == "http://u/m?k=1&a=1"
    assert with_client_query("http://u/m#f", "a=1") == "http://u/m?a=1#f"
    assert with_client_query("http://u/m?k=1", "k=2") == "http://u/m?k=1"
    # Names with `+` match in both readings; a value never protects its own text.
    assert with_client_query("http://u/m?a+b=1", "a%20b=2&a+b=3&c=a") == "http://u/m?a+b=1&c=a"
    assert with_client_query("http://u/m", "session=s&x=1", frozenset({"session"})) == (
        "http://u/m?x=1"
    )
