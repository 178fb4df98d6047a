"""Where the appliance's time goes per proxied request: cProfile of `bench/appliance.py` (the
real resolver, as in `bench_proxy.py`) under wrk load, per workload, as µs per request.

Starts the same upstreams as `bench_proxy.py` (nginx JSON, the MCP server, the SSE upstream),
one appliance with `--profile`, warms each workload, then profiles one wrk run of each and prints
the functions with the most cumulative and own time per request. cProfile slows every Python
call, so the figures are for ranking, not absolute; CPU per request without it comes from
`bench_proxy.py`.

Usage: .venv/bin/python bench/profile_proxy.py [--duration 5] [--conc 1] [--top 40]
                                                [--workloads json,mcp]
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy as bp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--conc", type=int, default=1)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--workloads", default="json,mcp")
    parser.add_argument("--resolver", choices=["static", "real"], default="real")
    parser.add_argument("--save", help="a folder to keep each workload's pstats file in")
    args = parser.parse_args()
    fleet_args = argparse.Namespace(resolver=args.resolver, uvloop=True, policy=False)
    with tempfile.TemporaryDirectory(prefix="bindify-profile-") as tmp:
        work = Path(tmp)
        lua = work / "json.lua"
        lua.write_text(bp.WRK_LUA.format(body=bp.JSON_BODY))
        fleet = bp.Fleet(work)
        stats_file = work / "appliance.prof"
        original = bp.Fleet.spawn

        def spawn(self: bp.Fleet, name: str, argv: list[str], **kw: object) -> bp.Proc:
            if name == "appliance":
                argv = [*argv, "--profile", str(stats_file)]
            return original(self, name, argv, **kw)

        bp.Fleet.spawn = spawn  # type: ignore[method-assign]
        try:
            targets = bp.start_fleet(fleet_args, fleet, False)
            target = targets["appliance"]
            assert target.pid is not None
            for workload in args.workloads.split(","):
                url = target.urls[workload]
                bp.run_wrk(url, args.conc, 1.0, lua, target.pid)  # warm-up
                os.kill(target.pid, signal.SIGUSR1)  # reset: the profile starts here
                time.sleep(0.3)
                sample = bp.run_wrk(url, args.conc, args.duration, lua, target.pid)
                stats_file.unlink(missing_ok=True)
                os.kill(target.pid, signal.SIGUSR1)
                for _ in range(50):
                    if stats_file.exists():
                        break
                    time.sleep(0.1)
                time.sleep(0.3)
                requests = sample.rps * args.duration
                print(f"\n## {workload}, c={args.conc}: {requests:.0f} requests profiled")
                report(pstats.Stats(str(stats_file)), requests, args.top)
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    kept = Path(args.save) / f"{workload}-c{args.conc}-{requests:.0f}req.prof"
                    kept.write_bytes(stats_file.read_bytes())
        finally:
            fleet.stop()
    return 0


def report(stats: pstats.Stats, requests: float, top: int) -> None:
    rows = []
    for (file, line, func), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = file.split("site-packages/")[-1].split("bindify_appliance/")[-1]
        rows.append((cumulative, own, calls, f"{func} ({where}:{line})"))
    for title, key in (("cumulative", 0), ("own", 1)):
        print(f"| {title} µs/req | own µs/req | calls/req | function |")
        print("|---|---|---|---|")
        for cumulative, own, calls, name in sorted(rows, key=lambda r: -r[key])[:top]:
            print(
                f"| {cumulative * 1e6 / requests:.1f} | {own * 1e6 / requests:.1f} | "
                f"{calls / requests:.2f} | {name} |"
            )
        print()


if __name__ == "__main__":
    sys.exit(main())
