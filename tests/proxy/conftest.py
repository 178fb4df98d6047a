"""Fixtures for the proxy tests: real upstream processes, the proxy app on a free port.

Upstreams are real servers on 127.0.0.1: `mcp` 2.x `MCPServer` (stateful, stateless, legacy SSE,
resumable with an event store) in subprocesses of this venv, `mcp` 1.30 `FastMCP` in
subprocesses of `.venv-mcp1` (created by `tests/peers/ensure_mcp1.sh`; missing → the tests
fail with a message saying so, they never skip), and the raw Tornado upstream in-process.

Every upstream process serves on a listening socket the test created, so the port is known
before the process starts, and a restart (same socket, new process) keeps the port.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import tornado.web
from peers.raw_upstream import RawUpstream
from support.mcp_peers import UpstreamProcess
from support.ports import free_socket
from tornado.httpserver import HTTPServer

from bindify_appliance.clock import SystemClock
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.http.base import access_log_function
from bindify_appliance.http.not_found import NotFoundHandler
from bindify_appliance.kv import MemoryKV
from bindify_appliance.proxy import ProxyConfig, UpstreamClient, proxy_routes
from bindify_appliance.proxy.sessions import LegacySessions

from .resolver import StaticResolver

REPO = Path(__file__).resolve().parents[2]
MCP1_PYTHON = REPO / ".venv-mcp1" / "bin" / "python"


def _mcp1_python() -> Path:
    if not MCP1_PYTHON.exists():
        pytest.fail(
            f"{MCP1_PYTHON} is missing: run tests/peers/ensure_mcp1.sh (make test does) to create "
            "the mcp 1.30.0 virtualenv the proxy tests use as the 2025-11-25-era peer"
        )
    return MCP1_PYTHON


@pytest.fixture(scope="session")
def _processes() -> Iterator[dict[str, UpstreamProcess]]:
    started: dict[str, UpstreamProcess] = {}
    yield started
    for proc in started.values():
        proc.close()


def _upstream(
    registry: dict[str, UpstreamProcess], name: str, python: Path | str, script: str, *args: str
) -> UpstreamProcess:
    proc = registry.get(name)
    if proc is None:
        proc = UpstreamProcess(python, script, *args)
        proc.start()
        registry[name] = proc
    elif proc.proc is None or proc.proc.poll() is not None:
        proc.start()
    return proc


@pytest.fixture
def mcp2_stateful(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(_processes, "mcp2_stateful", sys.executable, "mcp2_server.py")


@pytest.fixture
def mcp2_stateless(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(_processes, "mcp2_stateless", sys.executable, "mcp2_server.py", "--stateless")


@pytest.fixture
def mcp2_sse(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(_processes, "mcp2_sse", sys.executable, "mcp2_server.py", "--transport", "sse")


@pytest.fixture
def mcp2_resumable(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(
        _processes,
        "mcp2_resumable",
        sys.executable,
        "mcp2_server.py",
        "--event-store",
        "--retry-ms",
        "200",
    )


@pytest.fixture
def mcp2_restartable() -> Iterator[UpstreamProcess]:
    """A stateful upstream of the test's own, so restarting it disturbs no other test."""
    proc = UpstreamProcess(sys.executable, "mcp2_server.py")
    proc.start()
    yield proc
    proc.close()


@pytest.fixture
def mcp1_streamable(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(_processes, "mcp1_streamable", _mcp1_python(), "mcp1_server.py")


@pytest.fixture
def mcp1_sse(_processes: dict[str, UpstreamProcess]) -> UpstreamProcess:
    return _upstream(_processes, "mcp1_sse", _mcp1_python(), "mcp1_server.py", "--transport", "sse")


@pytest.fixture
def mcp1_python() -> Path:
    return _mcp1_python()


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@dataclass
class ProxyHarness:
    url: str
    port: int
    resolver: StaticResolver
    ctx: AppContext
    upstream: UpstreamClient
    config: ProxyConfig
    server: HTTPServer

    def path_url(self, service: str, credentials: str, suffix: str = "") -> str:
        return f"{self.url}/mcp/{service}/{credentials}{suffix}"

    def key_url(self, service: str, suffix: str = "") -> str:
        return f"{self.url}/mcp/{service}{suffix}"

    async def legacy_session(self, connection_id: str, message_url: str) -> str:
        """Open a legacy session binding directly (as a legacy stream would)."""
        sessions = LegacySessions(self.ctx.kv, ttl=self.config.legacy_session_ttl)
        return (await sessions.open(connection_id, message_url)).session_id


async def make_proxy(
    *,
    config: ProxyConfig | None = None,
    settings: dict[str, Any] | None = None,
    resolver: StaticResolver | None = None,
) -> ProxyHarness:
    sockets, port = free_socket()
    base_url = f"http://127.0.0.1:{port}"
    opts: dict[str, Any] = {"base_url": base_url, **(settings or {})}
    ctx = AppContext(
        settings=Settings(**opts),
        store=cast(Any, None),  # the relay never touches the database
        kv=MemoryKV(),
        keys=cast(Any, None),
        clock=SystemClock(),
        secret_key=b"test-secret-key-0123456789abcdef",
        instance_id="test-instance",
    )
    resolver = resolver or StaticResolver()
    upstream = UpstreamClient(allow_private=True)  # the upstreams are on loopback
    config = config or ProxyConfig(keepalive_interval=0.3)
    app = tornado.web.Application(
        proxy_routes(ctx, resolver, upstream, config),
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        log_function=access_log_function,
        compress_response=False,
    )
    server = HTTPServer(app, max_body_size=16 * 1024 * 1024, idle_connection_timeout=3600)
    server.add_sockets(sockets)
    return ProxyHarness(base_url, port, resolver, ctx, upstream, config, server)


async def close_proxy(harness: ProxyHarness) -> None:
    harness.server.stop()
    await harness.server.close_all_connections()
    await harness.upstream.close()
    await harness.ctx.kv.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ProxyHarness]:
    harness = await make_proxy()
    yield harness
    await close_proxy(harness)


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    """A raw HTTP client for byte-level checks (no decompression, no cookies)."""
    import aiohttp

    async with aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:
        yield session
