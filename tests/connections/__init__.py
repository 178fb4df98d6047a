"""Tests of connection storage, events and creation (bindify_appliance.connections, store)."""
