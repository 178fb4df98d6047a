"""Benchmark of the MCP proxy (issue 4): the appliance beside the upstreams directly, nginx and
a bare pass-through proxy with the same HTTP client. Prints figures; asserts nothing.

One interleaved run of `--rounds` rounds (target order rotated every round) measures:
- a small JSON-RPC POST to a fixed fast upstream (nginx returning 1 KB), wrk, c=1 and c=16;
- a real MCP tools/call (`mcp` 2.x server, stateless, SSE-framed reply), wrk, c=1 and c=16;
- an SSE stream: time to the first event (the upstream pauses 200 ms after it) and to the rest;
then RSS of each proxy idle and holding `--streams` open streams, and CPU µs per request.
Ratios are medians of same-round ratios.

`--clients` instead compares upstream HTTP clients (aiohttp, httpx, Tornado's simple client)
inside the bare pass-through, with and without uvloop, plus the appliance with and without
uvloop — the measurement behind the choice written down in `bindify_appliance/proxy/upstream.py`.

Appliance configuration (printed): `--resolver real` (the default) serves the appliance's own
application (`app.build_application`: every route in production order, the real resolver over
SQLite with managed API-key connections, events, last_used_at), JSON access log to a file;
`--resolver static` serves only the proxy routes with the test StaticResolver, for comparison.

`--policy` adds a second appliance whose services carry a tool policy ("appliance-policy",
side by side with "appliance", which has none): the cost of body inspection (DESIGN §13).

Needs nginx and wrk (`apt-get install nginx wrk`). Everything listens on 127.0.0.1 only; each
measurement is bounded by `--duration`.

Usage: .venv/bin/python bench/bench_proxy.py [--rounds 5] [--duration 3] [--clients]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ONE_KB = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "x" * 940}]}}
)
JSON_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
    },
    separators=(",", ":"),
)
MCP_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25",
}
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Target:
    name: str
    pid: int | None  # the process whose CPU/RSS is measured (None for "direct")
    urls: dict[str, str]  # workload → URL


@dataclass
class Fleet:
    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], **kw: Any) -> Proc:
        with open(self.workdir / f"{name}.err", "w") as err:
            popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, **kw)
        proc = Proc(name, popen)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(5)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
        for s in self.sockets:
            s.close()


NGINX_COMMON = """
worker_processes 1;
user root;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  {body}
}}
"""


def nginx_upstream_conf(dir: Path, port: int) -> str:
    body = f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{ONE_KB}'; }}
  }}"""
    return NGINX_COMMON.format(dir=dir, name="nginx-up", body=body)


def nginx_proxy_conf(dir: Path, port: int, json_port: int, mcp_port: int, sse_port: int) -> str:
    body = f"""
  upstream json_up {{ server 127.0.0.1:{json_port}; keepalive 128; }}
  upstream mcp_up {{ server 127.0.0.1:{mcp_port}; keepalive 128; }}
  upstream sse_up {{ server 127.0.0.1:{sse_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer bench-token";
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 3600s;
    location = /json {{ proxy_pass http://json_up/; }}
    location = /mcp {{
      proxy_set_header Host 127.0.0.1:{mcp_port};  # the MCP SDK refuses unknown Host values
      proxy_pass http://mcp_up/mcp;
    }}
    location = /sse {{ proxy_pass http://sse_up/sse$is_args$args; }}
    location = /hold {{ proxy_pass http://sse_up/hold; }}
  }}"""
    return NGINX_COMMON.format(dir=dir, name="nginx-proxy", body=body)


WRK_LUA = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.1f %.1f %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float | None


def run_wrk(url: str, conc: int, duration: float, lua: Path, pid: int | None) -> Sample:
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conc}", f"-d{max(1, round(duration))}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=False,
    ).stdout
    after = cpu_seconds(pid) if pid else 0.0
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk failed: {out[-500:]}")
    requests, micros = int(match[1]), int(match[2])
    rps = requests / (micros / 1e6)
    cpu = (after - before) * 1e6 / requests if pid and requests else None
    return Sample(rps, float(match[3]) / 1000, float(match[4]) / 1000, int(match[5]), cpu)


async def sse_sample(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(ms to the first event, ms for the other 999)."""
    started = time.perf_counter()
    async with session.get(url) as resp:
        buffer = b""
        while b"\n\n" not in buffer:
            buffer += await resp.content.readany()
        first = time.perf_counter()
        count = buffer.count(b"\n\n")
        tail = buffer[-1:]
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                break
            # Count over the chunk boundary too: an event's "\n\n" may arrive split in two.
            count += (tail + chunk).count(b"\n\n")
            tail = chunk[-1:] if not chunk.endswith(b"\n\n") else b""
        end = time.perf_counter()
    if count != 1000:
        raise RuntimeError(f"SSE: got {count} events")
    return (first - started) * 1000, (end - first) * 1000


async def sse_round(url: str, samples: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        results = [await sse_sample(session, url) for _ in range(samples)]
    return (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results))


async def hold_streams(url: str, count: int, pid: int) -> tuple[float, int]:
    """RSS (MiB) of `pid` with `count` streams open through it; and how many opened."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        responses: list[aiohttp.ClientResponse] = []

        async def one() -> None:
            resp = await session.get(url)
            await resp.content.readuntil(b"\n\n")
            responses.append(resp)

        for start in range(0, count, 100):
            await asyncio.gather(
                *(one() for _ in range(min(100, count - start))), return_exceptions=True
            )
        await asyncio.sleep(1.0)
        rss = rss_mib(pid)
        opened = len(responses)
        for resp in responses:
            resp.close()
    await asyncio.sleep(0.5)
    return rss, opened


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def span(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{med(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def creds_for(base: str, index: int) -> str:
    # The index leads (it must change secret1, the lookup key); "A" keeps the last character
    # canonical base64url.
    return f"{index:02d}" + base[2:-1] + "A"


def start_fleet(args: argparse.Namespace, fleet: Fleet, compare_clients: bool) -> dict[str, Target]:
    work = fleet.workdir
    json_port, ngx_port, sse_port = free_port(), free_port(), free_port()
    (work / "nginx-up.conf").write_text(nginx_upstream_conf(work, json_port))
    fleet.spawn("nginx-up", ["nginx", "-c", str(work / "nginx-up.conf"), "-p", str(work)])

    mcp_sock = socket.socket()
    mcp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    mcp_sock.bind(("127.0.0.1", 0))
    mcp_sock.listen(4096)
    fleet.sockets.append(mcp_sock)
    mcp_port = mcp_sock.getsockname()[1]
    fleet.spawn(
        "mcp",
        [
            PY,
            str(REPO / "tests/peers/mcp2_server.py"),
            "--fd",
            str(mcp_sock.fileno()),
            "--stateless",
        ],
        pass_fds=(mcp_sock.fileno(),),
    )
    fleet.spawn("sse", [PY, str(REPO / "bench/upstreams.py"), "--port", str(sse_port)])

    routes = {
        "json": f"http://127.0.0.1:{json_port}/",
        "mcp": f"http://127.0.0.1:{mcp_port}/mcp",
        "sse": f"http://127.0.0.1:{sse_port}/sse",
        "hold": f"http://127.0.0.1:{sse_port}/hold",
    }
    sse_q = "?events=1000&pause_ms=200"
    targets: dict[str, Target] = {
        "direct": Target(
            "direct",
            None,
            {
                "json": routes["json"],
                "mcp": routes["mcp"],
                "sse": routes["sse"] + sse_q,
            },
        ),
    }
    route_args = [a for name, url in routes.items() for a in ("--route", f"{name}={url}")]
    base = secrets.token_urlsafe(64)[:86]

    def appliance(name: str, uvloop: bool, policy: bool = False) -> None:
        port = free_port()
        extra = ["--uvloop"] if uvloop else []
        if policy:
            extra.append("--policy")
        proc = fleet.spawn(
            name,
            [
                PY,
                str(REPO / "bench/appliance.py"),
                "--port",
                str(port),
                "--creds",
                base,
                "--resolver",
                args.resolver,
                "--log",
                str(work / f"{name}-access.log"),
                *route_args,
                *extra,
            ],
        )
        # sorted services: hold=0, json=1, mcp=2, sse=3
        u = f"http://127.0.0.1:{port}/mcp"
        targets[name] = Target(
            name,
            proc.pid,
            {
                "json": f"{u}/json/{creds_for(base, 1)}",
                "mcp": f"{u}/mcp/{creds_for(base, 2)}",
                "sse": f"{u}/sse/{creds_for(base, 3)}{sse_q}",
                "hold": f"{u}/hold/{creds_for(base, 0)}",
            },
        )

    def bare(name: str, client: str, uvloop: bool) -> None:
        port = free_port()
        extra = ["--uvloop"] if uvloop else []
        proc = fleet.spawn(
            name,
            [
                PY,
                str(REPO / "bench/passthrough.py"),
                "--port",
                str(port),
                "--client",
                client,
                *route_args,
                *extra,
            ],
        )
        u = f"http://127.0.0.1:{port}"
        targets[name] = Target(
            name,
            proc.pid,
            {
                "json": f"{u}/json",
                "mcp": f"{u}/mcp",
                "sse": f"{u}/sse{sse_q}",
                "hold": f"{u}/hold",
            },
        )

    if compare_clients:
        for client in ("aiohttp", "httpx", "tornado"):
            bare(f"bare-{client}", client, uvloop=True)
        bare("bare-aiohttp-asyncio", "aiohttp", uvloop=False)
        appliance("appliance-uvloop", uvloop=True)
        appliance("appliance-asyncio", uvloop=False)
    else:
        (work / "nginx-proxy.conf").write_text(
            nginx_proxy_conf(work, ngx_port, json_port, mcp_port, sse_port)
        )
        proc = fleet.spawn(
            "nginx-proxy", ["nginx", "-c", str(work / "nginx-proxy.conf"), "-p", str(work)]
        )
        u = f"http://127.0.0.1:{ngx_port}"
        targets["nginx"] = Target(
            "nginx",
            proc.pid,
            {
                "json": f"{u}/json",
                "mcp": f"{u}/mcp",
                "sse": f"{u}/sse{sse_q}",
                "hold": f"{u}/hold",
            },
        )
        bare("bare", "aiohttp", uvloop=args.uvloop)
        appliance("appliance", uvloop=args.uvloop)
        if args.policy:
            appliance("appliance-policy", uvloop=args.uvloop, policy=True)

    time.sleep(0.5)
    for _name, target in targets.items():
        wait_http(target.urls["json"])
    wait_http(routes["mcp"].replace("/mcp", "/"))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--conc", default="1,16")
    parser.add_argument("--sse-samples", type=int, default=15)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("--resolver", choices=["static", "real"], default="real")
    parser.add_argument("--clients", action="store_true", help="compare upstream HTTP clients")
    parser.add_argument(
        "--policy", action="store_true", help="also an appliance with a tool policy"
    )
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: apt-get install nginx wrk", file=sys.stderr)
            return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    concs = [int(c) for c in args.conc.split(",")]

    with tempfile.TemporaryDirectory(prefix="bindify-bench-") as tmp:
        work = Path(tmp)
        lua_json = work / "json.lua"
        lua_json.write_text(WRK_LUA.format(body=JSON_BODY))
        fleet = Fleet(work)
        try:
            targets = start_fleet(args, fleet, args.clients)
            appl = "appliance-uvloop" if args.clients else "appliance"
            print(
                f"# bench_proxy: {args.rounds} rounds, {args.duration}s per wrk run, "
                f"targets {', '.join(targets)}; uvloop={args.uvloop}; resolver={args.resolver}"
            )
            print(
                "# appliance: "
                + (
                    "app.build_application (every route, production order), "
                    if args.resolver == "real"
                    else "proxy routes only, "
                )
                + "JSON access log to a file, events + last_used_at, managed API-key "
                f"connections (injected Authorization), MemoryKV, {os.cpu_count()} CPUs"
            )
            workloads = ["json"] if args.clients else ["json", "mcp"]
            results: dict[tuple[str, int, str], list[Sample]] = {}
            round_samples: list[dict[tuple[str, int, str], Sample]] = []
            sse: dict[str, list[tuple[float, float]]] = {}
            names = list(targets)
            for rnd in range(args.rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                this_round: dict[tuple[str, int, str], Sample] = {}
                for workload in workloads:
                    for conc in concs:
                        for name in order:
                            target = targets[name]
                            sample = run_wrk(
                                target.urls[workload], conc, args.duration, lua_json, target.pid
                            )
                            results.setdefault((workload, conc, name), []).append(sample)
                            this_round[(workload, conc, name)] = sample
                if not args.clients:
                    for name in order:
                        sse.setdefault(name, []).append(
                            asyncio.run(sse_round(targets[name].urls["sse"], args.sse_samples))
                        )
                round_samples.append(this_round)
                print(f"# round {rnd + 1}/{args.rounds} done", flush=True)

            ref = "bare-aiohttp" if args.clients else "nginx"
            for workload in workloads:
                for conc in concs:
                    print(f"\n## {workload} POST, c={conc}")
                    print(
                        "| target | req/s | p50 ms | p99 ms | CPU µs/req | errors | "
                        f"x{ref} req/s | +p50 ms vs direct | +p99 ms vs direct |"
                    )
                    print("|---|---|---|---|---|---|---|---|---|")
                    for name in names:
                        samples = results[(workload, conc, name)]
                        ratio = [
                            r[(workload, conc, name)].rps / r[(workload, conc, ref)].rps
                            for r in round_samples
                            if (workload, conc, ref) in r
                        ]
                        add50, add99 = [], []
                        if "direct" in targets:
                            add50 = [
                                r[(workload, conc, name)].p50_ms
                                - r[(workload, conc, "direct")].p50_ms
                                for r in round_samples
                            ]
                            add99 = [
                                r[(workload, conc, name)].p99_ms
                                - r[(workload, conc, "direct")].p99_ms
                                for r in round_samples
                            ]
                        cpu = [s.cpu_us for s in samples if s.cpu_us is not None]
                        print(
                            f"| {name} | {span([s.rps for s in samples])} | "
                            f"{span([s.p50_ms for s in samples])} | "
                            f"{span([s.p99_ms for s in samples])} | "
                            f"{med(cpu):.0f} | {sum(s.errors for s in samples)} | "
                            f"{span(ratio)} | {span(add50) if name != 'direct' else '-'} | "
                            f"{span(add99) if name != 'direct' else '-'} |"
                        )
            if not args.clients:
                print("\n## same-round ratios (medians)")
                for workload in workloads:
                    for conc in concs:
                        for other in ("nginx", "bare"):
                            ratio = [
                                r[(workload, conc, appl)].rps / r[(workload, conc, other)].rps
                                for r in round_samples
                            ]
                            print(f"appliance/{other} req/s, {workload} c={conc}: {span(ratio)}")
                print("\n## SSE: 1000 events, upstream pauses 200 ms after the first")
                print(
                    "| target | first event ms | +first event ms vs direct "
                    "| rest (999 events + 200 ms pause) ms |"
                )
                print("|---|---|---|---|")
                for name in names:
                    firsts = [f for f, _ in sse[name]]
                    rests = [r for _, r in sse[name]]
                    added = [a[0] - d[0] for a, d in zip(sse[name], sse["direct"], strict=True)]
                    print(
                        f"| {name} | {span(firsts)} | "
                        f"{span(added) if name != 'direct' else '-'} | {span(rests)} |"
                    )
                print(f"\n## memory (RSS MiB of the process tree), {args.streams} open streams")
                print("| target | idle | with streams | streams held | KiB per stream |")
                print("|---|---|---|---|---|")
                for name in names:
                    target = targets[name]
                    if target.pid is None:
                        continue
                    idle = rss_mib(target.pid)
                    held, opened = asyncio.run(
                        hold_streams(target.urls["hold"], args.streams, target.pid)
                    )
                    per = (held - idle) * 1024 / opened if opened else float("nan")
                    print(f"| {name} | {idle:.1f} | {held:.1f} | {opened} | {per:.1f} |")
        finally:
            fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
