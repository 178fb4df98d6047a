"""The Grafana dashboard (`packaging/grafana/bindify.json`) and the README's list of metrics are
built from what `/metrics` exposes.

Every metric a panel queries exists in a real exposition of `ops.metrics.Metrics` (histogram
series by their `_bucket`/`_count`/`_sum` names), every label it selects or groups by is one the
appliance sets (or Prometheus's own `job`/`instance`), and every figure the README lists has a
panel; the README's table names every `bindify_*` family with its labels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bindify_appliance.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "bindify.json"
PROM_LABELS = {"job", "instance", "le"}


def _exposed() -> tuple[set[str], set[str]]:
    metrics = Metrics()
    # One sample of each labelled figure, so the families show their label names.
    metrics.requests.labels("svc", "mcp", "2xx", "post").inc()
    metrics.observe_upstream("svc", 0.1)
    metrics.open_streams.labels("svc", "mcp").inc()
    metrics.refresh("svc", "success")
    metrics.job_run("cleanup", "ok", 0.1)
    metrics.login("password", "success")
    metrics.observe_policy_denial("svc")
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    out += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert dashboard["uid"] and len(out) > 10
    return out


def test_dashboard_queries_only_exposed_metrics_and_labels() -> None:
    names, labels = _exposed()
    for expr in _expressions():
        used = set(re.findall(r"\b((?:bindify|process)_[a-z_]+)\b", expr))
        assert used, expr
        assert used <= names, (expr, used - names)
        selected = set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
        grouped = {
            name.strip()
            for group in re.findall(r"by \(([^)]*)\)", expr)
            for name in group.split(",")
        }
        assert selected | grouped <= labels | PROM_LABELS, (expr, (selected | grouped) - labels)


def test_every_figure_has_a_panel() -> None:
    queried = " ".join(_expressions())
    for figure in (
        "bindify_http_requests_total",
        "bindify_upstream_latency_seconds_bucket",
        "bindify_open_streams",
        "bindify_token_refreshes_total",
        "bindify_job_runs_total",
        "bindify_job_duration_seconds_bucket",
        "bindify_logins_total",
    ):
        assert figure in queried, figure


def test_readme_lists_every_family_with_its_labels() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    metrics = Metrics()
    families = [f for f in metrics.registry.collect() if f.name.startswith("bindify_")]
    assert len(families) >= 7
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, f"README's metrics table lacks {name}"
        metric = {
            "bindify_http_requests": metrics.requests,
            "bindify_upstream_latency_seconds": metrics.upstream_latency,
            "bindify_open_streams": metrics.open_streams,
            "bindify_token_refreshes": metrics.refreshes,
            "bindify_job_runs": metrics.job_runs,
            "bindify_job_duration_seconds": metrics.job_duration,
            "bindify_logins": metrics.logins,
        }.get(family.name)
        for label in metric._labelnames if metric is not None else ():
            assert f"`{label}`" in rows[0], (name, label)
