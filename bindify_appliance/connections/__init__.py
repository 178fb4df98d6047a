"""Connections: creating them, rotating their credentials, and their sealed upstream secrets.

`create` makes a connection and returns its secrets once; `secrets` seals, opens and re-seals
the payload (used by the proxy resolver, refresh and key rotation).
"""

from __future__ import annotations

from bindify_appliance.connections.create import (
    CreatedConnection,
    check_key_storage_mode,
    connection_secret_url,
    create_connection,
    normalize_label,
    rotate_credentials,
)
from bindify_appliance.connections.secrets import (
    PAYLOAD_FIELD,
    check_payload,
    credentials_match,
    open_payload,
    parse_presented_credentials,
    payload_secret,
    reseal_payload,
    seal_payload,
)

__all__ = [
    "PAYLOAD_FIELD",
    "CreatedConnection",
    "check_key_storage_mode",
    "check_payload",
    "connection_secret_url",
    "create_connection",
    "credentials_match",
    "normalize_label",
    "open_payload",
    "parse_presented_credentials",
    "payload_secret",
    "reseal_payload",
    "rotate_credentials",
    "seal_payload",
]
