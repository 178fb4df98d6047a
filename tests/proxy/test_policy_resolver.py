"""Tool policies reach the proxy through the resolved target (DESIGN §13): a change applies
within the resolution memo's second on every instance.

Two "instances" share one SQLite database: each has its own registry and resolver (its own
memo and snapshot), and only the first is told about the writes (like another process).
"""

from __future__ import annotations

import pytest
from connections.helpers import NOW

from bindify_appliance.proxy.policy import ToolPolicy, dump_policy
from bindify_appliance.proxy.resolver import ConnectionResolver
from bindify_appliance.services import ServiceRegistry
from bindify_appliance.store import connections as rows

from .test_resolver import Harness, h  # noqa: F401 - the fixture


async def test_policy_changes_reach_another_instance_within_a_second(h: Harness) -> None:  # noqa: F811
    await h.registry.create(
        {"id": "acme", "name": "Acme", "mcp_url": "https://a.example/mcp", "auth": {"type": "none"}}
    )
    c = await h.create("acme", "none", key_storage_mode="managed")
    other_registry = ServiceRegistry(h.ctx.settings, h.store, h.clock)
    other = ConnectionResolver(h.ctx, other_registry)
    first = await other.resolve("acme", c.credentials.text, form="path")
    assert first.policy is None  # no policy: nothing to check, per request

    # The admin's policy, written through the first instance.
    await h.registry.update("acme", {"policy": {"tools": {"deny": ["wipe"]}}})
    h.clock.advance(0.5)
    assert (await other.resolve("acme", c.credentials.text, form="path")).policy is None
    h.clock.advance(0.5)
    target = await other.resolve("acme", c.credentials.text, form="path")
    assert target.policy is not None and not target.policy.permits("wipe")
    assert target.policy.permits("read") and not target.policy.read_only

    # The member's narrowing, on the connection row.
    member = ToolPolicy(allow=("read*",), read_only=True)
    h.store.call(rows.set_policy, c.connection.id, dump_policy(member), NOW)
    h.clock.advance(1.0)
    target = await other.resolve("acme", c.credentials.text, form="path")
    assert target.policy is not None and target.policy.read_only
    assert not target.policy.permits("wipe") and not target.policy.permits("write")
    assert target.policy.permits("read_file")

    # Cleared on both sides: None again.
    await h.registry.update("acme", {"policy": None})
    h.store.call(rows.set_policy, c.connection.id, None, NOW)
    h.clock.advance(1.0)
    assert (await other.resolve("acme", c.credentials.text, form="path")).policy is None


@pytest.mark.allow_error_logs
async def test_a_damaged_stored_policy_hides_every_tool(h: Harness) -> None:  # noqa: F811
    c = await h.create("figma", "api_key")
    h.store.call(rows.set_policy, c.connection.id, "{not json", NOW)
    target = await h.path("figma", c.credentials)
    assert target.policy is not None and not target.policy.permits("anything")
