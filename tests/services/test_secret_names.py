"""Header and query names that services inject secrets under are scrubbed from every log line.

An admin-added service may send its key as any header (`X-Acme-Auth: …`) or query parameter
(`?acme_k=…`); names the scrubber's fixed rules know nothing about. Once the registry has
loaded such a service, a log line carrying that header or parameter is redacted like
`Authorization` is, through the real logging setup.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from connections.helpers import make_settings

from bindify_appliance.clock import ManualClock
from bindify_appliance.logs import configure_logging, reset_logging
from bindify_appliance.services import ServiceRegistry
from bindify_appliance.store import Store

SECRET = "acme-key-7f3a9c"  # short and plain: no shape rule would catch it


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


async def test_a_services_own_header_and_query_names_are_scrubbed(
    tmp_path: Path, store: Store, clock: ManualClock
) -> None:
    registry = ServiceRegistry(make_settings(tmp_path, "sqlite:///unused"), store, clock)
    await registry.create(
        {
            "id": "acme",
            "name": "Acme",
            "mcp_url": "https://mcp.acme.example/mcp",
            "auth": {"type": "api_key", "header": "X-Acme-Auth", "prefix": "Key "},
        }
    )
    await registry.create(
        {
            "id": "widgets",
            "name": "Widgets",
            "mcp_url": "https://mcp.widgets.example/mcp",
            "auth": {"type": "api_key", "query": "acme_k"},
        }
    )
    await registry.list()

    stream = io.StringIO()
    configure_logging("info", "json", stream)
    log = logging.getLogger("bindify_appliance.test")
    log.warning("upstream headers {'X-Acme-Auth': 'Key %s', 'Accept': '*/*'}", SECRET)
    log.warning("sent x-acme-auth: Key %s", SECRET)
    log.warning("GET https://mcp.widgets.example/mcp?acme_k=%s&limit=5", SECRET)
    log.warning("redirect", extra={"url": f"https%3A%2F%2Fw%2Fmcp%3Facme_k%3D{SECRET}%26x%3D1"})
    output = stream.getvalue()
    assert SECRET not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert lines[0]["msg"] == "upstream headers {'X-Acme-Auth': '[REDACTED]', 'Accept': '*/*'}"
    assert lines[1]["msg"] == "sent x-acme-auth: [REDACTED]"
    assert lines[2]["msg"] == "GET https://mcp.widgets.example/mcp?acme_k=[REDACTED]&limit=5"
    assert lines[3]["url"] == "https%3A%2F%2Fw%2Fmcp%3Facme_k%3D[REDACTED]%26x%3D1"
