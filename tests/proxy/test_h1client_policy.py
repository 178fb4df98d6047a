"""The outbound address policy (DESIGN §9) through the proxy's upstream client, now the lean one:
checked before DNS (non-canonical numbers), after DNS (every answer) and at connect (the socket
factory: IP literals, embedded IPv4), each refusal a logged category and no connection at all;
the canary allowance's one-off connection; and the proxy path without aiohttp.

The end-to-end spellings through the whole appliance are `test_ssrf_proxy.py` and
`tests/upstream/test_canary_allowance.py`; these drive `UpstreamClient` directly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from support.connect_helpers import MapResolver

from bindify_appliance.errors import UpstreamError
from bindify_appliance.outbound_policy import IPAddress
from bindify_appliance.proxy.upstream import UpstreamClient

from .h1_peers import Scripted, ok, replies
from .test_ssrf_proxy import Listener

NAMES = {
    "inside.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "loop.test": ["127.0.0.1"],
    "mixed.test": ["93.184.215.14", "127.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "public.test": ["127.0.0.1"],  # exempted below: plays a public server
}


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    target = await Listener().start()
    yield target
    await target.stop()


def guarded(**kw: object) -> UpstreamClient:
    return UpstreamClient(allow_private=False, resolver=MapResolver(NAMES), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host",
    [
        "inside.test",
        "metadata.test",
        "loop.test",
        "mixed.test",
        "mapped.test",
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "169.254.169.254",
        "0.0.0.0",
        "127.1",
        "2130706433",
        "0x7f.1",
    ],
)
async def test_refused_destinations_never_get_a_connection(
    listener: Listener, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = guarded()
    try:
        url = f"http://{host}:{listener.port}/mcp?key=secret-123"
        with (
            caplog.at_level(logging.WARNING, logger="bindify_appliance.proxy.upstream"),
            pytest.raises(UpstreamError, match="refused") as raised,
        ):
            await client.request("POST", url, {"X-Key": "secret-123"}, b"{}", service="svc")
        await asyncio.sleep(0.05)
    finally:
        await client.close()
    assert listener.accepted == 0
    logged = [r.getMessage() for r in caplog.records]
    assert any("refused" in line for line in logged)
    assert all("secret-123" not in line and "/mcp" not in line for line in logged)
    assert "secret-123" not in str(raised.value) and "/mcp" not in str(raised.value)


async def test_an_exempted_network_and_private_upstreams_allowed_reach_loopback() -> None:
    exempt = guarded(allowed_networks=[ipaddress.ip_network("127.0.0.1/32")])
    private = UpstreamClient(allow_private=True)
    try:
        async with Scripted(replies(ok(b"one"), ok(b"two"))) as server:
            first = await exempt.request("GET", server.url(host="public.test"), {}, None)
            assert await first.read_all() == b"one"
            first.release()
            second = await private.request("GET", server.url(), {}, None)
            assert await second.read_all() == b"two"
            second.release()
    finally:
        await exempt.close()
        await private.close()


class OnePermit:
    """A canary allowance for one service, address and port (`ops/canary_allowance.py`)."""

    def __init__(self, service: str, port: int) -> None:
        self.service = service
        self.port = port
        self.asked: list[str] = []

    async def permit(self, service_id: str, url: str) -> tuple[IPAddress, int] | None:
        self.asked.append(service_id)
        if service_id != self.service:
            return None
        return ipaddress.ip_address("127.0.0.1"), self.port


async def test_a_canary_allowance_admits_one_service_on_a_connection_never_pooled() -> None:
    client = guarded()
    try:
        async with Scripted(replies(ok(b"a"), ok(b"b"))) as server:
            client.allowances = OnePermit("canary-1", server.port)
            for expected in (b"a", b"b"):
                response = await client.request("POST", server.url(), {}, b"{}", service="canary-1")
                assert await response.read_all() == expected
                response.release()
            with pytest.raises(UpstreamError, match="refused"):
                await client.request("POST", server.url(), {}, b"{}", service="other")
            await asyncio.sleep(0.05)
        assert server.connections == 2  # one connection per permitted request, never reused
    finally:
        await client.close()


async def test_an_allowance_for_another_port_admits_nothing(listener: Listener) -> None:
    client = guarded()
    client.allowances = OnePermit("canary-1", listener.port + 1)
    try:
        with pytest.raises(UpstreamError, match="refused"):
            url = f"http://127.0.0.1:{listener.port}/mcp"
            await client.request("POST", url, {}, b"{}", service="canary-1")
        await asyncio.sleep(0.05)
    finally:
        await client.close()
    assert listener.accepted == 0


def test_the_proxy_path_does_not_import_aiohttp() -> None:
    """The proxy, its routes and a relayed request run without aiohttp (outbound.py keeps it
    for OAuth and token refresh, imported on first use)."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import bindify_appliance.proxy.handlers, bindify_appliance.proxy.exchange
        import bindify_appliance.proxy.legacy, bindify_appliance.proxy.relay
        from bindify_appliance.proxy.upstream import UpstreamClient, warm_up

        async def main():
            async def answer(reader, writer):
                await reader.readuntil(b"\\r\\n\\r\\n")
                writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
                await writer.drain()
                writer.close()
            server = await asyncio.start_server(answer, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            client = UpstreamClient(allow_private=True)
            response = await client.request("GET", f"http://127.0.0.1:{port}/", {}, None)
            assert await response.read_all() == b"ok"
            response.release()
            await client.close()
            server.close()

        warm_up()
        asyncio.run(main())
        assert "aiohttp" not in sys.modules, "aiohttp was imported"
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"
