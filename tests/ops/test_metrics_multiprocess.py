"""The multiprocess switch for `serve --workers N`: with `PROMETHEUS_MULTIPROC_DIR` set before
prometheus-client is imported, each process's figures land in that folder and a scrape from any
one process sums them (and `livesum`s the open-stream gauge)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import sys
from bindify_appliance.ops.metrics import Metrics
m = Metrics()
m.requests.labels("echo", "mcp", "2xx", "tools/call").inc(int(sys.argv[1]))
m.observe_upstream("echo", 0.02)
m.open_streams.labels("echo", "mcp").inc()
if sys.argv[2] == "scrape":
    sys.stdout.write(m.exposition().decode())
else:
    import os
    sys.stdout.write(str(os.getpid()))
"""


def _run(folder: Path, count: int, mode: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(count), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_figures_of_several_processes_are_summed(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    first = int(_run(folder, 2, "record"))
    # What the supervisor does when a worker exits: its live gauges stop counting.
    mark_process_dead(first, path=str(folder))
    text = _run(folder, 3, "scrape")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    requests = (
        "bindify_http_requests_total",
        (("method", "tools/call"), ("route", "mcp"), ("service", "echo"), ("status", "2xx")),
    )
    assert values[requests] == 5
    assert values[("bindify_upstream_latency_seconds_count", (("service", "echo"),))] == 2
    # livesum: the exited process's open streams no longer count.
    assert values[("bindify_open_streams", (("route", "mcp"), ("service", "echo")))] == 1
