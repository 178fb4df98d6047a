"""Where a service's credentials go: the endpoint fingerprint and the injected secret names.

`endpoint_fingerprint(definition)` digests, per auth type, everything that kind of credential is
sent to (MCP URL, transport, injection; for OAuth also the authorization, token and registration
URLs and the client id). `ServiceRegistry` records it on every admin change and at every start
(`check_endpoints()`); a changed fingerprint flags the affected connections for reconnecting
(DESIGN §9). `injected_names(definitions)` lists every header and query name a secret is sent
under, so the log scrubber treats them like `Authorization`.

Invariants:
- The fingerprint covers everything a credential is sent to and nothing else: a name, scopes,
  instructions or a tool policy are not in it, since changing them moves no credential.
- The fingerprint is deterministic (sorted JSON, SHA-256) so every instance and every start
  computes the same value for the same definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from bindify_appliance.services.definitions import Injection, ServiceDefinition

__all__ = ["endpoint_fingerprint", "injected_names"]


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def endpoint_fingerprint(definition: ServiceDefinition) -> str:
    """`{auth type: digest}` (JSON) of everything each kind of credential is sent to.

    A name, scopes or instructions are not in it: changing them moves no credential.
    """
    where: dict[str, Any] = {"mcp_url": definition.mcp_url, "transport": definition.transport}
    kinds: dict[str, str] = {}
    if definition.no_auth:
        kinds["none"] = _digest(where)
    if definition.api_key is not None:
        api_key = definition.api_key
        modes = [None, *(m.id for m in api_key.auth_modes)]
        injections = {str(m): api_key.proxy_injection_for(m).public() for m in modes}
        kinds["api_key"] = _digest({**where, "injections": injections})
    if definition.oauth is not None:
        o = definition.oauth
        kinds["oauth"] = _digest(
            {
                **where,
                "injection": o.injection.public(),
                "authorization_url": o.authorize_url,
                "token_url": o.token_url,
                "registration_url": o.register_url,
                "client_id": o.client_id,
            }
        )
    return json.dumps(kinds, sort_keys=True, separators=(",", ":"))


def injected_names(definitions: Iterable[ServiceDefinition]) -> set[str]:
    """Every header and query name any of these services sends a secret under."""
    names: set[str] = set()
    for definition in definitions:
        injections: list[Injection | None] = []
        if definition.oauth is not None:
            injections.append(definition.oauth.injection)
        if definition.api_key is not None:
            api = definition.api_key
            injections += [api.injection, api.proxy_injection]
            for mode in api.auth_modes:
                injections += [mode.injection, mode.proxy_injection]
        for injection in injections:
            if injection is not None:
                names.add(injection.header or injection.query or "")
    names.discard("")
    return names
