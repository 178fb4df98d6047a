"""The appliance's proxy for the bench, configured as in production: the real routes, relay,
session bindings, limits and CORS, the JSON access log (to a file), metadata-only use records.

Credential resolution: `--resolver static` (default until the real resolver lands) maps the
given credentials to fixed targets, each a managed API-key connection (an injected
`Authorization` header); `--resolver real` builds the appliance's own resolver from a data
directory (`--data-dir`) so the same bench measures the finished product.

Usage: python bench/appliance.py --port P --creds CREDS --route json=URL --route mcp=URL …
                                 [--uvloop] [--resolver static|real] [--log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from pathlib import Path
from typing import Any, cast

import tornado.web
from tornado.httpserver import HTTPServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bindify_appliance.clock import SystemClock
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.kv import MemoryKV
from bindify_appliance.logs import configure_logging
from bindify_appliance.proxy import ProxyTarget, UpstreamClient, proxy_routes
from bindify_appliance.web.base import NotFoundHandler, access_log_function


def static_resolver(creds: str, routes: dict[str, str]) -> Any:
    from proxy.resolver import StaticResolver  # tests/proxy/resolver.py

    resolver = StaticResolver()
    resolver.services.update(routes)
    # One credential per service (a connection belongs to one service).
    for index, (service, url) in enumerate(sorted(routes.items())):
        key = (creds[:-2] + f"{index:02d}")[:86]
        resolver.targets[key] = ProxyTarget(
            connection_id=f"bench-{service}",
            user_id="bench-user",
            service_id=service,
            upstream_url=url,
            transport="streamable-http",
            inject_headers={"Authorization": "Bearer bench-token"},
            auth_type="api_key",
        )
    return resolver


async def serve(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    routes = dict(r.split("=", 1) for r in args.route)
    log_stream = open(args.log, "a")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", "json", stream=log_stream)
    ctx = AppContext(
        settings=Settings(base_url=f"http://127.0.0.1:{args.port}"),
        store=cast(Any, None),
        kv=MemoryKV(),
        keys=cast(Any, None),
        clock=SystemClock(),
        secret_key=b"bench-secret-key-0123456789abcdef",
        instance_id="bench",
    )
    if args.resolver == "static":
        resolver = static_resolver(args.creds, routes)
    else:  # the real resolver, once it exists
        raise SystemExit("--resolver real: the appliance resolver is not available yet")
    app = tornado.web.Application(
        proxy_routes(ctx, resolver, UpstreamClient()),
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        log_function=access_log_function,
        compress_response=False,
    )
    server = HTTPServer(app, max_body_size=16 * 1024 * 1024, idle_connection_timeout=3600)
    server.listen(args.port, "127.0.0.1", backlog=4096)
    print(
        "configuration: routes from bindify_appliance.proxy.proxy_routes; resolver="
        f"{args.resolver} (managed API-key connections, injected Authorization); KV=memory; "
        f"JSON access log -> {args.log}; record_use per request; uvloop={args.uvloop}",
        file=sys.stderr,
        flush=True,
    )
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--creds", required=True)
    parser.add_argument("--route", action="append", default=[])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--resolver", choices=["static", "real"], default="static")
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
