"""Frozen-executable budgets: file size, and start-up beside `python -m bindify_appliance`.

Budgets (issue 9): the one-file executable under 40 MB, and `/healthz` answering within 1.5 s of
exec on a warm data directory (the first start, which creates the data directory, keys and
database, is reported separately).

Every target is started the same way: `<command> serve` with a free port and its own data
directory, timed from just before exec to the first 200 from `/healthz`, then `/readyz`. Each
round starts every target on a fresh directory (first start) and once more on it (warm start),
in a rotated order, so background load hits all targets alike. Besides wall time, the CPU time
of the process tree (bootloader + Python child for one-file) at the moment `/healthz` answered
is shown: it is what start-up costs when the machine is not busy with something else.

    .venv/bin/python bench/bench_binary.py [--rounds 5] [--onefile dist/bindify]
        [--onedir dist/bindify-dir/bindify] [--importtime]

`--importtime` adds the modules that cost `python -m bindify_appliance serve` the most import
time (from `-X importtime`, self time, one run).
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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE_BUDGET = 40 * 1000 * 1000
WARM_HEALTH_BUDGET = 1.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    health: float
    ready: float
    cpu: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """User+system seconds of `pid` and its live descendants (plus children they reaped)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / CLOCK_TICKS


def answered(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_once(command: list[str], data_dir: Path, nice: int = 0) -> Sample:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BINDIFY_")},
        "BINDIFY_DATA_DIR": str(data_dir),
        "BINDIFY_PORT": str(port),
        "BINDIFY_LOG_LEVEL": "warning",
    }
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None,
        )
        try:
            health, ready, cpu = wait_until_ready(proc, base, started)
        except RuntimeError as exc:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{command[0]} serve: {exc}\n{tail}") from None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    if code != 0:
        raise SystemExit(f"{command[0]} serve exited with {code} after SIGTERM")
    return Sample(health, ready, cpu)


def wait_until_ready(
    proc: subprocess.Popen[bytes], base: str, started: float
) -> tuple[float, float, float]:
    """(seconds to /healthz, seconds to /readyz, tree CPU seconds at /healthz)."""
    health: float | None = None
    cpu = 0.0
    while time.perf_counter() - started < 60:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        if health is None and answered(base + "/healthz"):
            health = time.perf_counter() - started
            cpu = tree_cpu(proc.pid)
        if health is not None and answered(base + "/readyz"):
            return health, time.perf_counter() - started, cpu
        time.sleep(0.005)
    raise RuntimeError("not ready within 60 s")


def version_time(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command, "--version"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def import_costs(top: int = 15) -> list[tuple[str, float]]:
    """Top-level packages by summed self import time (ms) of `python -m … serve`'s imports."""
    code = "import bindify_appliance.cli, bindify_appliance.server"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    costs: Counter[str] = Counter()
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        costs[name.strip().split(".")[0]] += int(self_us)
    return [(name, us / 1000) for name, us in costs.most_common(top)]


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--onefile", default=str(ROOT / "dist" / "bindify"))
    parser.add_argument("--onedir", default=str(ROOT / "dist" / "bindify-dir" / "bindify"))
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the targets at this niceness (e.g. -10, as root) so that other load on a "
        "shared machine disturbs the wall-clock figures less",
    )
    args = parser.parse_args()

    targets: dict[str, list[str]] = {"python -m": [sys.executable, "-m", "bindify_appliance"]}
    sizes: dict[str, str] = {"python -m": "-"}
    if Path(args.onefile).is_file():
        targets["one-file"] = [args.onefile]
        sizes["one-file"] = f"{tree_size(Path(args.onefile)) / 1e6:.1f} MB"
    if Path(args.onedir).is_file():
        targets["one-folder"] = [args.onedir]
        sizes["one-folder"] = f"{tree_size(Path(args.onedir).parent) / 1e6:.1f} MB on disk"

    load_before = os.getloadavg()[0]
    versions = {name: version_time(cmd) for name, cmd in targets.items()}
    first: dict[str, list[Sample]] = {name: [] for name in targets}
    warm: dict[str, list[Sample]] = {name: [] for name in targets}
    names = list(targets)
    for round_no in range(args.rounds):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            with tempfile.TemporaryDirectory() as tmp:
                data = Path(tmp) / "data"
                first[name].append(start_once(targets[name], data, args.nice))
                warm[name].append(start_once(targets[name], data, args.nice))
    load_after = os.getloadavg()[0]

    print(
        f"bindify start-up and size: {args.rounds} rounds, median (min-max) seconds; "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {load_after:.1f} after"
        + (f", targets at nice {args.nice}" if args.nice else "")
    )
    header = (
        f"{'target':11} {'size':>18} {'--version':>10} {'first /healthz':>22} "
        f"{'warm /healthz':>22} {'warm /readyz':>22} {'warm CPU@healthz':>22}"
    )
    print(header)
    for name in names:
        print(
            f"{name:11} {sizes[name]:>18} {versions[name]:10.2f} "
            f"{fmt([s.health for s in first[name]]):>22} "
            f"{fmt([s.health for s in warm[name]]):>22} "
            f"{fmt([s.ready for s in warm[name]]):>22} "
            f"{fmt([s.cpu for s in warm[name]]):>22}"
        )

    print("budgets:")
    if "one-file" in targets:
        size = tree_size(Path(args.onefile))
        verdict = "ok" if size < SIZE_BUDGET else "OVER"
        print(f"  one-file size {size / 1e6:.1f} MB < {SIZE_BUDGET / 1e6:.0f} MB: {verdict}")
    for name in names:
        median = statistics.median(s.health for s in warm[name])
        cpu = statistics.median(s.cpu for s in warm[name])
        verdict = "ok" if median < WARM_HEALTH_BUDGET else "OVER"
        print(
            f"  {name} warm /healthz {median:.2f} s < {WARM_HEALTH_BUDGET} s: {verdict} "
            f"(CPU {cpu:.2f} s: start-up is single-threaded, so on an idle machine the wall "
            "time is about this)"
        )

    if args.importtime:
        print("import self time of `serve`'s modules by top-level package (ms, one run):")
        for package, ms in import_costs():
            print(f"  {ms:7.1f}  {package}")


if __name__ == "__main__":
    main()
