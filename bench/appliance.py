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
        key = f"{index:02d}" + creds[2:-1] + "A"
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


async def real_resolver(creds: str, routes: dict[str, str], port: int) -> tuple[AppContext, Any]:
    """The appliance's own resolver over a fresh SQLite store: one managed API-key connection
    per route (events and last_used_at written as in production). The bench drives fixed
    credentials, so each connection's stored hashes are set to those of `NN + creds[2:-1] + "A"`."""
    import tempfile

    from bindify_appliance.connections.create import create_connection
    from bindify_appliance.crypto import (
        parse_credentials,
        secret1_lookup_hash,
        secret2_verifier,
    )
    from bindify_appliance.datadir import KeySource
    from bindify_appliance.proxy.resolver import ConnectionResolver
    from bindify_appliance.services.registry import ServiceRegistry
    from bindify_appliance.store import Store, apply
    from bindify_appliance.store.models import Connection, User

    data = Path(tempfile.mkdtemp(prefix="bindify-bench-"))
    settings = Settings(
        base_url=f"http://127.0.0.1:{port}",
        data_dir=str(data),
        database_url=f"sqlite:///{data}/bindify.db",
        allow_private_upstreams=True,
    )
    store = Store(settings.database_url)
    apply(store, backup_dir=None)
    clock = SystemClock()
    ctx = AppContext(
        settings=settings,
        store=store,
        kv=MemoryKV(),
        keys=KeySource(settings, create=True),
        clock=clock,
        secret_key=b"bench-secret-key-0123456789abcdef",
        instance_id="bench",
    )
    registry = ServiceRegistry(settings, store, clock)
    user = store.call(
        lambda: User.create(
            email="bench@example.com", role="admin", created_at=clock.now(), updated_at=clock.now()
        )
    )
    for index, (service, url) in enumerate(sorted(routes.items())):
        await registry.create(
            {
                "id": f"bench-{service}",
                "name": service,
                "mcp_url": url,
                "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
            }
        )
        definition = await registry.get(f"bench-{service}")
        assert definition is not None
        created = await create_connection(
            ctx,
            user_id=str(user.id),
            service=definition,
            auth_type="api_key",
            payload={"api_key": "bench-token"},
            key_storage_mode="managed",
        )
        fixed = parse_credentials(f"{index:02d}" + creds[2:-1] + "A")
        store.call(
            lambda cid=created.connection.id, c=fixed: (
                Connection.update(
                    secret1_hash=secret1_lookup_hash(c), secret2_verifier=secret2_verifier(c)
                )
                .where(Connection.id == cid)
                .execute()
            )
        )
    return ctx, _ServiceAlias(ConnectionResolver(ctx, registry))


class _ServiceAlias:
    """The bench addresses services by route name; registered ids carry a `bench-` prefix."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def resolve(self, service_id: str, credential: str, *, form: Any) -> Any:
        return await self._inner.resolve("bench-" + service_id, credential, form=form)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


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
    else:
        ctx, resolver = await real_resolver(args.creds, routes, args.port)
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
