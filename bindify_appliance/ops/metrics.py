"""Prometheus figures (DESIGN §12): what is counted, with which labels, and the one registry.

`create_registries()` is the only place a registry is made. Without `PROMETHEUS_MULTIPROC_DIR`
in the environment the metrics live in a private `CollectorRegistry` that a scrape reads
directly (each `Metrics` has its own, so several appliances in one test process never clash).
With it set — before `prometheus_client` is first imported, in every worker of
`serve --workers N` — prometheus-client keeps each value in a per-process file in that folder
and a scrape reads a second registry holding only a `MultiProcessCollector`, which sums the
counters and histograms of every worker (and `livesum`s the open-stream gauge). The supervisor
empties the folder before it forks and calls `prometheus_client.multiprocess.mark_process_dead`
for a worker that exits.

Label invariants (checked against real scrapes in tests/ops/test_metrics.py):
- Every label value comes from a closed set or from an admin-chosen service slug: the route
  *kind* (never a path), the status *class*, a JSON-RPC method class taken from the
  `Mcp-Method` header only when it names a method of the MCP specification (else `other`;
  without the header, the HTTP method), refresh/job/login outcomes from fixed vocabularies.
- The service label is the admitted connection's service id (an existing service, so the label
  set stays bounded); a refused request is counted under `-`, never under the path's text.
- No connection id, user id, email, tool name, credential, query or payload byte reaches a label.
- Bodies are never parsed for metrics.

Cost on the proxy path: one dict lookup for the route kind, one for the labelled child (label
values are formatted once per distinct combination and the child cached), then `inc()` /
`observe()`. The only lock is the uncontended one inside prometheus-client's value objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from bindify_appliance import __version__
from bindify_appliance.header_names import header_value

__all__ = [
    "MCP_METHODS",
    "MULTIPROC_ENV",
    "Metrics",
    "create_registries",
    "route_kind",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# JSON-RPC methods of the MCP specification (every revision the proxy relays). A client's
# `Mcp-Method` header outside this set is counted as `other`: the header is client text.
MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "subscriptions/listen",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "notifications/message",
    }
)

# Without `Mcp-Method`, the coarse class is the HTTP method (a closed set: any verb reaches the
# not-found handler, so anything else is `other`).
_HTTP_METHODS = {m: m.lower() for m in ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")}

_MCP_KINDS = {
    "/mcp/{service}": "mcp",
    "/mcp/{service}/{credentials}": "mcp",
    "/mcp/{service}/sse": "mcp_sse",
    "/mcp/{service}/{credentials}/sse": "mcp_sse",
    "/mcp/{service}/messages": "mcp_messages",
    "/mcp/{service}/{credentials}/messages": "mcp_messages",
}
_OPS = frozenset({"/healthz", "/readyz", "/metrics"})
_AUTH_PREFIXES = ("/login", "/logout", "/setup", "/invite", "/oauth/")

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


def route_kind(template: str | None) -> str:
    """The coarse kind of a route template (`None`: no route matched)."""
    if template is None:
        return "unmatched"
    kind = _MCP_KINDS.get(template)
    if kind is not None:
        return kind
    if template in _OPS:
        return "ops"
    if template == "/api" or template.startswith("/api/"):
        return "api"
    if template.startswith(_AUTH_PREFIXES):
        return "auth"
    return "ui"


def create_registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """`(where metrics are registered, what a scrape reads)`: the one place registries are made.

    The multiprocess switch is prometheus-client's own: its value class is chosen from
    `PROMETHEUS_MULTIPROC_DIR` when the library is first imported, so the variable must be in
    the environment before that (the `--workers` supervisor sets it before forking).
    """
    registry = CollectorRegistry()
    folder = os.environ.get(MULTIPROC_ENV, "")
    if not folder:
        ProcessCollector(registry=registry)  # CPU, memory, open files of this process
        return registry, registry
    from prometheus_client import multiprocess

    scrape = CollectorRegistry()
    multiprocess.MultiProcessCollector(scrape, path=folder)  # type: ignore[no-untyped-call]
    return registry, scrape


class Metrics:
    """Every figure the appliance exposes, and the cheap recording calls its modules make."""

    def __init__(self) -> None:
        self.registry, self.scrape_registry = create_registries()
        r = self.registry
        self.requests = Counter(
            "bindify_http_requests",
            "HTTP requests answered, by service (proxy routes), route kind, status class and "
            "JSON-RPC method class.",
            ["service", "route", "status", "method"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "bindify_upstream_latency_seconds",
            "Time from sending a proxied request upstream to its response headers, by service.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_streams = Gauge(
            "bindify_open_streams",
            "Event streams being relayed to clients now, by service and route kind.",
            ["service", "route"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.refreshes = Counter(
            "bindify_token_refreshes",
            "Upstream OAuth token refreshes and keep-alives, by service and outcome.",
            ["service", "outcome"],
            registry=r,
        )
        self.job_runs = Counter(
            "bindify_job_runs",
            "Background job runs, by job and outcome (ok, error, skipped).",
            ["job", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "bindify_job_duration_seconds",
            "Duration of background job runs that ran (not skipped), by job.",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.policy_denials = Counter(
            "bindify_policy_denials",
            "Tool calls refused by a tool policy, by service (never the tool's name).",
            ["service"],
            registry=r,
        )
        self.logins = Counter(
            "bindify_logins",
            "Sign-in attempts, by method (password, oidc) and outcome.",
            ["method", "outcome"],
            registry=r,
        )
        # Billing (DESIGN §11), only ever set when billing is on.
        self.billing_webhooks = Counter(
            "bindify_billing_webhooks",
            "Stripe webhook deliveries, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.billing_members = Gauge(
            "bindify_billing_members",
            "Members by billing status, as of the last billing-sync run.",
            ["status"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        build = Gauge(
            "bindify_build_info",
            "The running version (always 1).",
            ["version"],
            multiprocess_mode="max",
            registry=r,
        )
        build.labels(__version__).set(1)
        self._kinds: dict[str | None, str] = {}
        self._request_children: dict[tuple[str, str, int, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._stream_children: dict[tuple[str, str], Any] = {}

    # -- the request path (called once per answered request) -------------------------------

    def observe_request(self, handler: Any) -> None:
        """Count one finished request; Tornado's `log_function` calls this."""
        template = getattr(handler, "route_template", None)
        kind = self._kinds.get(template)
        if kind is None:
            kind = self._kinds[template] = route_kind(template)
        request = handler.request
        service = "-"
        method = None
        if kind.startswith("mcp"):
            service = _service_of(handler)
            method = header_value(request.headers, "Mcp-Method")
            if method is not None and method not in MCP_METHODS:
                method = "other"
        if method is None:
            method = _HTTP_METHODS.get(request.method, "other")
        status = handler.get_status()
        key = (service, kind, status, method)
        child = self._request_children.get(key)
        if child is None:
            status_class = STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]
            child = self.requests.labels(service, kind, status_class, method)
            self._request_children[key] = child
        child.inc()

    def log_function(self, access_log: Callable[[Any], None]) -> Callable[[Any], None]:
        """Tornado's `log_function`: the access log line, then the request count."""

        def log_and_count(handler: Any) -> None:
            access_log(handler)
            self.observe_request(handler)

        return log_and_count

    def observe_policy_denial(self, service: str) -> None:
        """One tool call refused by a policy (`proxy/tool_gate.py`)."""
        self.policy_denials.labels(service).inc()

    def observe_upstream(self, service: str, seconds: float) -> None:
        """One upstream answer's time to headers (`relay.open_upstream`)."""
        child = self._latency_children.get(service)
        if child is None:
            child = self._latency_children[service] = self.upstream_latency.labels(service)
        child.observe(seconds)

    def stream_started(self, handler: Any) -> Any:
        """The open-stream gauge child, incremented, if `handler` is sending an event stream.

        Called when a handler first flushes its headers before finishing; the caller
        decrements what it gets back once the request ends (finish or client gone).
        """
        # Tornado has no public getter for the response headers it is about to send.
        headers = getattr(handler, "_headers", None)
        content_type = headers.get("Content-Type", "") if headers is not None else ""
        if not content_type.startswith("text/event-stream"):
            return None
        template = getattr(handler, "route_template", None)
        kind = self._kinds.get(template)
        if kind is None:
            kind = self._kinds[template] = route_kind(template)
        service = _service_of(handler) if kind.startswith("mcp") else "-"
        child = self._stream_children.get((service, kind))
        if child is None:
            child = self._stream_children[service, kind] = self.open_streams.labels(service, kind)
        child.inc()
        return child

    # -- background and sign-in figures ------------------------------------------------------

    def refresh(self, service: str, outcome: str) -> None:
        self.refreshes.labels(service, outcome).inc()

    def job_run(self, job: str, outcome: str, seconds: float | None) -> None:
        self.job_runs.labels(job, outcome).inc()
        if seconds is not None:
            self.job_duration.labels(job).observe(seconds)

    def login(self, method: str, outcome: str) -> None:
        self.logins.labels(method, outcome).inc()

    # -- exposition ------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text of every figure (summed over workers in multiprocess mode)."""
        # Imported on the first scrape: the exposition module pulls in http.server & co.
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.scrape_registry)


def _service_of(handler: Any) -> str:
    """The admitted connection's service id on a proxy handler, else `-`.

    The proxy handler keeps its admitted `ProxyTarget` as `_target`; a request refused before
    admission has none, and its path's service text is never used (it is client input).
    """
    target = getattr(handler, "_target", None)
    return target.service_id if target is not None else "-"
