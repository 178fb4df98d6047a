"""The UI and the API load on the first request that reaches them, never for proxy traffic.

Each appliance runs in a fresh interpreter (this test process has long imported every module):
it builds the application as `serve` does, over a fresh SQLite data directory, and answers real
HTTP requests on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# Modules a proxy-only appliance must not import: the page layer, the API, OIDC sign-in, PyJWT.
HEAVY = [
    "jwt",
    "bindify_appliance.accounts.oidc",
    "bindify_appliance.web.pages",
    "bindify_appliance.web.admin",
    "bindify_appliance.web.auth",
    "bindify_appliance.api.openapi",
    "bindify_appliance.api.routes",
]

SCRIPT = """
import asyncio, json, sys
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

import bindify_appliance.server  # everything `serve` imports
from bindify_appliance.app import build_application, build_context, route_table
from bindify_appliance.config import Settings
from bindify_appliance.datadir import ensure_data_dir
from bindify_appliance.store import apply

HEAVY = {heavy!r}


async def main() -> None:
    data = {data!r}
    sockets = bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    settings = Settings(
        base_url=f"http://127.0.0.1:{{port}}",
        data_dir=data,
        database_url=f"sqlite:///{{data}}/bindify.db",
    )
    ensure_data_dir(settings)
    ctx = build_context(settings)
    apply(ctx.store, backup_dir=None)
    app = build_application(ctx)
    server = HTTPServer(app)
    server.add_sockets(sockets)
    client = AsyncHTTPClient()
    out = {{}}

    async def get(path: str, method: str = "GET") -> int:
        body = b"{{}}" if method == "POST" else None
        answer = await client.fetch(
            f"http://127.0.0.1:{{port}}{{path}}", method=method, body=body, raise_error=False,
            follow_redirects=False,
        )
        return answer.code

    def loaded() -> list[str]:
        return [m for m in HEAVY if m in sys.modules]

    out["proxy"] = [
        await get("/mcp/nosuch/" + "A" * 86, "POST"),
        await get("/healthz"),
        await get("/metrics"),
        await get("/.well-known/oauth-authorization-server"),
    ]
    out["after_proxy"] = loaded()
    out["ui"] = [await get("/login"), await get("/api/v1/openapi.json"), await get("/nowhere")]
    out["after_ui"] = loaded()
    # After the first UI request the table is exactly the one `route_table` lists, with
    # Tornado's three static-file rules after the proxy's (which are tried first).
    flat = [rule.regex.pattern for rule in route_table(ctx)]
    table = [rule.matcher.regex.pattern for rule in app.wildcard_router.rules]
    proxy = sum(1 for pattern in flat if pattern.startswith("/mcp/"))
    out["table"] = table[:proxy] + table[proxy + 3:] == flat and flat[0].startswith("/mcp/")
    print(json.dumps(out))
    await app.settings["runtime"].close()


asyncio.run(main())
"""


def run(data: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(heavy=HEAVY, data=str(data)))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_proxy_traffic_never_loads_the_ui_and_the_first_ui_request_does(tmp_path: Path) -> None:
    out = run(tmp_path / "data")
    # Proxy answers (unknown credentials), health, metrics, the OAuth server's metadata.
    assert out["proxy"] == [404, 200, 200, 200]
    assert out["after_proxy"] == []
    # The first page request builds the deferred block; an unknown path still gets the 404.
    assert out["ui"] == [200, 200, 404]
    # PyJWT waits longer still: for the first OpenID Connect sign-in (none here).
    assert out["after_ui"] == [m for m in HEAVY if m != "jwt"]
    assert out["table"] is True


def test_no_deferred_route_matches_a_path_an_eager_route_answers(tmp_path: Path) -> None:
    # The eager routes are tried before the deferred block; that answers every request as the
    # one table did only if no deferred route could have claimed one of their paths.
    code = f"""
        import json, re
        from bindify_appliance.app import _billing_routes, _deferred_routes, _eager_routes
        from bindify_appliance.app import build_context, build_runtime
        from bindify_appliance.config import Settings
        from bindify_appliance.datadir import ensure_data_dir

        data = {str(tmp_path / "data")!r}
        settings = Settings(base_url="http://127.0.0.1:1", data_dir=data,
                            database_url=f"sqlite:///{{data}}/bindify.db")
        ensure_data_dir(settings)
        ctx = build_context(settings)
        runtime = build_runtime(ctx)
        eager = _eager_routes(ctx, runtime)
        deferred = _deferred_routes(ctx, runtime, _billing_routes(ctx, runtime))
        clashes = []
        for rule in eager:
            template = rule.kwargs["route_template"]
            path = re.sub(r"\\{{[a-z_]+\\}}", "x", template)
            assert rule.regex.match(path), template
            clashes += [(template, d.kwargs["route_template"]) for d in deferred
                        if d.regex.match(path)]
        print(json.dumps([len(eager), len(deferred), clashes]))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    eager, deferred, clashes = json.loads(done.stdout.strip().splitlines()[-1])
    assert eager > 5 and deferred > 20
    assert clashes == []
