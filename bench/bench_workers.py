"""Benchmark of `bindify serve --workers N` (DESIGN §14): requests/s through the proxy for one
worker and for two, side by side in one run. Prints figures; asserts nothing.

Two real `bindify serve` processes run at once, each on its own data directory: one worker
(today's single process, in-process KV) and `--workers 2` (Redis KV, `--redis`). Each has an
admin-added service (auth `none`) pointing at nginx answering a 1 KB JSON-RPC reply, and one
connection; the load is a small JSON-RPC POST to the connection's secret URL at `--concurrency`
keep-alive connections, from wrk when installed, else from this process (aiohttp). Rounds are
interleaved (the order alternates), the figure is the median of same-round ratios. The load
generator, nginx and the appliance share this machine's cores: say so with the figures.

Needs nginx and a Redis server. Usage:
  .venv/bin/python bench/bench_workers.py [--rounds 7] [--duration 5] [--concurrency 16]
      [--redis redis://127.0.0.1:6379/15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_proxy import (
    JSON_BODY,
    MCP_HEADERS,
    WRK_LUA,
    Fleet,
    free_port,
    nginx_upstream_conf,
    run_wrk,
    wait_http,
)

from tests.support.appliance import Appliance, admin_token, api_post


def start_nginx(fleet: Fleet) -> str:
    port = free_port()
    conf = fleet.workdir / "nginx.conf"
    conf.write_text(nginx_upstream_conf(fleet.workdir, port))
    fleet.spawn("nginx", ["nginx", "-c", str(conf), "-p", str(fleet.workdir)])
    url = f"http://127.0.0.1:{port}/json"
    wait_http(url)
    return url


def start_appliance(work: Path, name: str, upstream: str, env: dict[str, str]) -> Appliance:
    data = work / name
    token = admin_token(data, env)
    app = Appliance(
        data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true", "BINDIFY_LOG_LEVEL": "warning", **env}
    )
    app.start()
    time.sleep(3)  # every worker up (the supervisor starts them together)
    service = {"id": "bench", "name": "Bench", "mcp_url": upstream, "auth": {"type": "none"}}
    api_post(app, token, "/services", service)
    time.sleep(1.2)  # every worker's registry sees the service
    app.secret_url = api_post(app, token, "/connections", {"service": "bench"})["secret_url"]  # type: ignore[attr-defined]
    return app


async def aiohttp_load(url: str, concurrency: int, duration: float) -> float:
    done = 0
    deadline = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(url, data=JSON_BODY, headers=MCP_HEADERS) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def measure(url: str, args: argparse.Namespace, lua: Path) -> float:
    if shutil.which("wrk"):
        return run_wrk(url, args.concurrency, args.duration, lua, None).rps
    return asyncio.run(aiohttp_load(url, args.concurrency, args.duration))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    fleet = Fleet(work)
    apps: dict[str, Appliance] = {}
    try:
        upstream = start_nginx(fleet)
        lua = work / "post.lua"
        lua.write_text(WRK_LUA.format(body=JSON_BODY))
        apps["1 worker"] = start_appliance(work, "one", upstream, {})
        apps["2 workers"] = start_appliance(
            work, "two", upstream, {"BINDIFY_WORKERS": "2", "BINDIFY_KV_URL": args.redis}
        )
        loader = "wrk -t1" if shutil.which("wrk") else "aiohttp (this process)"
        print(f"cores: {os.cpu_count()}; load generator: {loader}; c={args.concurrency}")
        rps: dict[str, list[float]] = {name: [] for name in apps}
        for round_no in range(args.rounds):
            order = list(apps) if round_no % 2 == 0 else list(reversed(apps))
            for name in order:
                url = apps[name].secret_url  # type: ignore[attr-defined]
                rps[name].append(measure(url, args, lua))
        ratios = [b / a for a, b in zip(rps["1 worker"], rps["2 workers"], strict=True)]
        for name, values in rps.items():
            shown = " ".join(f"{v:.0f}" for v in values)
            print(f"{name:>9}: median {statistics.median(values):7.0f} req/s  ({shown})")
        print(f"2 workers / 1 worker: {statistics.median(ratios):.2f}x (median of round ratios)")
        print(json.dumps({"rps": rps, "ratio": statistics.median(ratios)}))
    finally:
        for app in apps.values():
            app.stop()
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
