"""`StaticResolver`: a test-only `TargetResolver` mapping credentials to fixed targets.

It follows the real resolver's contract (bindify_appliance/proxy/target.py) closely enough for
the relay's tests: 86-character path credentials, `bnd_{live|stg|test}_` API keys with or without
`Bearer `, the DESIGN §6 refusals, one refresh on upstream 401/403, metadata-only `record_use`.
Tests add connections with `add()` and script refusals with `refuse()` / `refresh_with()`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Literal

from bindify_appliance.proxy.policy import EffectivePolicy
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget

_PATH = re.compile(r"[A-Za-z0-9_-]{86}")
_KEY = re.compile(r"(?:bearer\s+)?bnd_(?:live|stg|test)_([A-Za-z0-9_-]{86})", re.IGNORECASE)


def new_credentials() -> str:
    return secrets.token_urlsafe(64)[:86]


@dataclass
class UseRecord:
    connection_id: str
    upstream_status: int
    kind: str


@dataclass
class StaticResolver:
    services: set[str] = field(default_factory=set)
    targets: dict[str, ProxyTarget] = field(default_factory=dict)  # credentials → target
    refusals: dict[str, ProxyRefusal] = field(default_factory=dict)  # credentials → refusal
    refreshed: dict[str, ProxyTarget | ProxyRefusal] = field(default_factory=dict)  # conn id →
    resolve_calls: int = 0
    auth_failures: list[tuple[str, int]] = field(default_factory=list)
    uses: list[UseRecord] = field(default_factory=list)
    denials: list[tuple[str, str]] = field(default_factory=list)  # (connection id, tool)

    def add(
        self,
        service: str,
        upstream_url: str,
        *,
        transport: Literal["streamable-http", "sse"] = "streamable-http",
        inject_headers: dict[str, str] | None = None,
        inject_query: dict[str, str] | None = None,
        connection_id: str | None = None,
        policy: EffectivePolicy | None = None,
    ) -> tuple[str, ProxyTarget]:
        """Register a connection; returns (credentials, target)."""
        credentials = new_credentials()
        self.services.add(service)
        target = ProxyTarget(
            connection_id=connection_id or f"conn-{secrets.token_hex(4)}",
            user_id="user-1",
            service_id=service,
            upstream_url=upstream_url,
            transport=transport,
            inject_headers=inject_headers or {},
            inject_query=inject_query or {},
            reconnect_url=f"http://appliance.test/connections/{connection_id or 'x'}",
            policy=policy,
        )
        self.targets[credentials] = target
        return credentials, target

    def set_url(self, credentials: str, upstream_url: str) -> ProxyTarget:
        """Point a connection at another upstream URL (same connection id)."""
        target = replace(self.targets[credentials], upstream_url=upstream_url)
        self.targets[credentials] = target
        return target

    def refuse(self, credentials: str, refusal: ProxyRefusal) -> None:
        self.refusals[credentials] = refusal

    def refresh_with(self, target: ProxyTarget, result: ProxyTarget | ProxyRefusal) -> None:
        self.refreshed[target.connection_id] = result

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        self.resolve_calls += 1
        if form == "api_key":
            match = _KEY.fullmatch(credential.strip())
            if match is None:
                raise ProxyRefusal("malformed", "Invalid API key.")
            credential = match.group(1)
        elif _PATH.fullmatch(credential) is None:
            raise ProxyRefusal("malformed", "Invalid request path.")
        if service_id not in self.services:
            raise ProxyRefusal("unknown_service", "Unknown service.")
        if credential in self.refusals:
            raise self.refusals[credential]
        target = self.targets.get(credential)
        if target is None or target.service_id != service_id:
            raise ProxyRefusal("unknown_credential", "Connection not found.")
        return target

    async def after_upstream_auth_failure(self, target: ProxyTarget, status: int) -> ProxyTarget:
        self.auth_failures.append((target.connection_id, status))
        result = self.refreshed.get(target.connection_id)
        if result is None:
            raise ProxyRefusal(
                "needs_reconnect",
                f"Reconnect at {target.reconnect_url}",
                reconnect_url=target.reconnect_url,
            )
        if isinstance(result, ProxyRefusal):
            raise result
        return result

    async def record_use(self, target: ProxyTarget, *, upstream_status: int, kind: str) -> None:
        self.uses.append(UseRecord(target.connection_id, upstream_status, kind))

    async def record_denial(self, target: ProxyTarget, tool: str) -> None:
        self.denials.append((target.connection_id, tool))


def with_headers(target: ProxyTarget, headers: dict[str, str]) -> ProxyTarget:
    return replace(target, inject_headers=headers)
