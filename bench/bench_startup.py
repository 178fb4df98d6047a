"""Start-up time: exec → first 200 from /healthz and /readyz, first start and warm restarts.

Runs `python -m bindify_appliance serve` and, when present (or named by --binary), the frozen
`dist/bindify`, side by side in alternating rounds. Prints medians in milliseconds.

    .venv/bin/python bench/bench_startup.py [--rounds 7] [--binary dist/bindify]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], started: float) -> float:
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return (time.perf_counter() - started) * 1000
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.005)


def one_start(command: list[str], data_dir: Path) -> tuple[float, float]:
    port = free_port()
    env = {
        **os.environ,
        "BINDIFY_DATA_DIR": str(data_dir),
        "BINDIFY_PORT": str(port),
        "BINDIFY_LOG_LEVEL": "warning",
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        health = wait_for(f"http://127.0.0.1:{port}/healthz", proc, started)
        ready = wait_for(f"http://127.0.0.1:{port}/readyz", proc, started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return health, ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--binary", default=str(ROOT / "dist" / "bindify"))
    args = parser.parse_args()
    commands = {"python -m": [sys.executable, "-m", "bindify_appliance"]}
    if Path(args.binary).is_file():
        commands["one-file binary"] = [args.binary]
    results: dict[str, dict[str, list[float]]] = {
        name: {"first_health": [], "first_ready": [], "warm_health": [], "warm_ready": []}
        for name in commands
    }
    for _ in range(args.rounds):
        for name, command in commands.items():
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "data"
                h, r = one_start(command, data)
                results[name]["first_health"].append(h)
                results[name]["first_ready"].append(r)
                h, r = one_start(command, data)
                results[name]["warm_health"].append(h)
                results[name]["warm_ready"].append(r)
    print(f"start-up, median of {args.rounds} rounds (ms)")
    columns = ("first_health", "first_ready", "warm_health", "warm_ready")
    print(f"{'':18}" + "".join(f"{c:>14}" for c in columns))
    for name, r in results.items():
        print(f"{name:18}" + "".join(f"{statistics.median(r[c]):14.0f}" for c in columns))


if __name__ == "__main__":
    main()
