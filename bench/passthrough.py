"""A bare pass-through proxy for the bench: one Tornado process, no credentials, no sessions,
no limits — only relay, with a choice of upstream HTTP client. It is the yardstick the appliance
is compared with ("same HTTP client, doing none of the real work").

Routes: /{name}[/rest] → the upstream given as --route name=URL, body and a few headers
forwarded, `Authorization` injected, response streamed with a flush per chunk.

Usage: python bench/passthrough.py --port P --client aiohttp|httpx|tornado [--uvloop]
                                   --route json=http://… --route mcp=http://… …
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer

FORWARD = ("Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version", "Last-Event-ID")
BACK = ("Content-Type", "Mcp-Session-Id", "Cache-Control")
INJECT = {"Authorization": "Bearer bench-token", "Accept-Encoding": "identity"}

Opener = Callable[
    [str, str, dict[str, str], bytes | None, tornado.web.RequestHandler], Awaitable[None]
]


def make_aiohttp() -> Opener:
    import aiohttp

    session: aiohttp.ClientSession | None = None

    async def relay(
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        h: tornado.web.RequestHandler,
    ) -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        async with session.request(
            method, url, headers=headers, data=body, allow_redirects=False
        ) as resp:
            h.set_status(resp.status)
            for name in BACK:
                if name in resp.headers:
                    h.set_header(name, resp.headers[name])
            async for chunk in resp.content.iter_any():
                h.write(chunk)
                await h.flush()

    return relay


def make_httpx() -> Opener:
    import httpx

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
    )

    async def relay(
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        h: tornado.web.RequestHandler,
    ) -> None:
        request = client.build_request(method, url, headers=headers, content=body)
        resp = await client.send(request, stream=True)
        try:
            h.set_status(resp.status_code)
            for name in BACK:
                if name in resp.headers:
                    h.set_header(name, resp.headers[name])
            async for chunk in resp.aiter_raw():
                h.write(chunk)
                await h.flush()
        finally:
            await resp.aclose()

    return relay


def make_tornado() -> Opener:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    AsyncHTTPClient.configure(None, max_clients=5000)
    client = AsyncHTTPClient()

    async def relay(
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        h: tornado.web.RequestHandler,
    ) -> None:
        started = False

        def on_header(line: str) -> None:
            nonlocal started
            if line.startswith("HTTP/"):
                h.set_status(int(line.split(" ", 2)[1]))
                started = True
            elif ":" in line:
                name, value = line.split(":", 1)
                if name.strip().lower() in {b.lower() for b in BACK}:
                    h.set_header(name.strip(), value.strip())

        async def on_chunk(chunk: bytes) -> None:
            h.write(chunk)
            await h.flush()

        request = HTTPRequest(
            url,
            method=method,
            headers=headers,
            body=body,
            request_timeout=0,
            decompress_response=False,
            follow_redirects=False,
            allow_nonstandard_methods=True,
            header_callback=on_header,
            streaming_callback=on_chunk,
        )
        await client.fetch(request, raise_error=False)

    return relay


class Relay(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST")

    def initialize(self, routes: dict[str, str], relay: Opener) -> None:
        self.routes = routes
        self.relay = relay

    def check_xsrf_cookie(self) -> None:
        pass

    async def _go(self, name: str) -> None:
        url = self.routes[name]
        headers = {k: self.request.headers[k] for k in FORWARD if k in self.request.headers}
        headers.update(INJECT)
        body = self.request.body if self.request.method == "POST" else None
        await self.relay(self.request.method or "GET", url, headers, body, self)

    async def get(self, name: str) -> None:
        await self._go(name)

    async def post(self, name: str) -> None:
        await self._go(name)


async def serve(port: int, client: str, routes: dict[str, str]) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    relay = {"aiohttp": make_aiohttp, "httpx": make_httpx, "tornado": make_tornado}[client]()
    app = tornado.web.Application(
        [(r"/([a-z]+)", Relay, {"routes": routes, "relay": relay})], log_function=lambda h: None
    )
    server = HTTPServer(app)
    server.listen(port, "127.0.0.1", backlog=4096)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", choices=["aiohttp", "httpx", "tornado"], default="aiohttp")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--route", action="append", default=[])
    args = parser.parse_args()
    routes = dict(r.split("=", 1) for r in args.route)
    runner: Any = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    runner(serve(args.port, args.client, routes))


if __name__ == "__main__":
    main()
