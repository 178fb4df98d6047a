"""The appliance for the bench, configured as in production: the JSON access log (to a file),
metadata-only use records, managed API-key connections.

`--resolver real` (what bench_proxy.py runs by default) serves the appliance's own application,
`app.build_application`: every route in production order, the real resolver over SQLite with
its OAuth refresher, session bindings, limits, CORS and lifecycle accounting. `--resolver
static` serves only the proxy routes with the test StaticResolver (fixed targets), to separate
the relay's cost from credential resolution.

`--policy` gives every service a tool policy (`POLICY`: it hides no tool the bench calls), so
every POST is inspected as under a real policy (DESIGN §13: parsed body, tools/call decided,
tools/list answers filtered); without it no body is looked at.

Usage: python bench/appliance.py --port P --creds CREDS --route json=URL --route mcp=URL …
                                 [--uvloop] [--resolver static|real] [--log FILE] [--policy]
                                 [--profile FILE]
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

POLICY: dict[str, Any] = {"tools": {"allow": [], "deny": ["bench_never_*"]}, "read_only": False}


def static_resolver(creds: str, routes: dict[str, str], policy: bool = False) -> Any:
    from proxy.resolver import StaticResolver  # tests/proxy/resolver.py

    from bindify_appliance.proxy.policy import effective, parse_policy

    enforced = effective(parse_policy(POLICY), None) if policy else None
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
            policy=enforced,
        )
    return resolver


async def real_application(
    creds: str, routes: dict[str, str], port: int, policy: bool = False
) -> tornado.web.Application:
    """The appliance's own application (`app.build_application`: every route in production
    order, the real resolver with its OAuth refresher, lifecycle accounting) over a fresh data
    directory with SQLite and the in-memory KV store: one managed API-key connection per route,
    on an admin-added service named after the route (events and last_used_at written as in
    production). The bench drives fixed credentials, so each connection's stored hashes are
    set to those of `NN + creds[2:-1] + "A"`."""
    import tempfile

    from bindify_appliance.app import build_application, build_context
    from bindify_appliance.connections.create import create_connection
    from bindify_appliance.crypto import (
        parse_credentials,
        secret1_lookup_hash,
        secret2_verifier,
    )
    from bindify_appliance.datadir import ensure_data_dir
    from bindify_appliance.services.connect import ConnectServices
    from bindify_appliance.store import apply
    from bindify_appliance.store.models import Connection, User

    data = Path(tempfile.mkdtemp(prefix="bindify-bench-"))
    settings = Settings(
        base_url=f"http://127.0.0.1:{port}",
        data_dir=str(data),
        database_url=f"sqlite:///{data}/bindify.db",
        allow_private_upstreams=True,
        # The stream bench holds 1,000+ streams on its one connection: above the default cap.
        max_streams_per_connection=0,
    )
    ensure_data_dir(settings)
    ctx = build_context(settings)
    store = ctx.store
    apply(store, backup_dir=None)
    connect = ConnectServices.build(ctx)
    registry = connect.registry
    now = ctx.clock.now()
    user = store.call(
        lambda: User.create(email="bench@example.com", role="admin", created_at=now, updated_at=now)
    )
    for index, (service, url) in enumerate(sorted(routes.items())):
        await registry.create(
            {
                "id": service,
                "name": service,
                "mcp_url": url,
                "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
            }
        )
        if policy:
            await registry.update(service, {"policy": POLICY})
        definition = await registry.get(service)
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
    return build_application(ctx, connect)


async def serve(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    routes = dict(r.split("=", 1) for r in args.route)
    log_stream = open(args.log, "a")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", "json", stream=log_stream)
    if args.resolver == "static":
        ctx = AppContext(
            settings=Settings(base_url=f"http://127.0.0.1:{args.port}"),
            store=cast(Any, None),
            kv=MemoryKV(),
            keys=cast(Any, None),
            clock=SystemClock(),
            secret_key=b"bench-secret-key-0123456789abcdef",
            instance_id="bench",
        )
        app = tornado.web.Application(
            proxy_routes(
                ctx,
                static_resolver(args.creds, routes, args.policy),
                UpstreamClient(allow_private=True),
            ),
            default_handler_class=NotFoundHandler,
            default_handler_args={"ctx": ctx},
            log_function=access_log_function,
            compress_response=False,
        )
    else:
        app = await real_application(args.creds, routes, args.port, args.policy)
    server = HTTPServer(app, max_body_size=16 * 1024 * 1024, idle_connection_timeout=3600)
    server.listen(args.port, "127.0.0.1", backlog=4096)
    if args.profile:
        _profile(args.profile)
    print(
        "configuration: "
        + (
            "app.build_application (every route, production order)"
            if args.resolver == "real"
            else "proxy_routes only"
        )
        + f"; resolver={args.resolver} (managed API-key connections, injected Authorization); "
        "KV=memory; "
        f"JSON access log -> {args.log}; record_use per request; uvloop={args.uvloop}; "
        f"tool policy={'on' if args.policy else 'none'}",
        file=sys.stderr,
        flush=True,
    )
    await asyncio.Event().wait()


def _profile(path: str) -> None:
    """cProfile from now on; SIGUSR1 writes the statistics to `path` and starts afresh, so a
    profile covers exactly one load run (`bench/profile_proxy.py`)."""
    import cProfile
    import signal
    import time

    # CPU time of this (single) thread, not wall time: the bench's peers share the cores, and
    # a wall clock would charge their time slices to whatever call was running when preempted.
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(path)
        profiler.clear()
        profiler.enable()

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
    profiler.enable()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--creds", required=True)
    parser.add_argument("--route", action="append", default=[])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--resolver", choices=["static", "real"], default="real")
    parser.add_argument("--log", default="/dev/null")
    parser.add_argument("--policy", action="store_true", help="a tool policy on every service")
    parser.add_argument("--profile", help="cProfile statistics file, written on SIGUSR1")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
