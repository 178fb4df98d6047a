"""What the proxy handlers need from the rest of the appliance, as data and one protocol.

The relay only ever sees a `ProxyTarget`: where to send the request and which credential to
attach. How a credential becomes a target (lookup, verification, decryption, refresh) lives
behind `TargetResolver`, so the relay knows nothing about storage or keys.

Invariant: a `ProxyTarget` holds a decrypted upstream secret; it is never logged, stored or
put in an error message, and its repr hides the injected values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bindify_appliance.errors import ProxyRefusal, RefusalKind
from bindify_appliance.proxy.headers import injected_names
from bindify_appliance.proxy.policy import EffectivePolicy

__all__ = ["ProxyRefusal", "ProxyTarget", "RefusalKind", "TargetResolver"]

Transport = Literal["streamable-http", "sse"]


@dataclass(frozen=True)
class ProxyTarget:
    """A resolved connection: where to relay, with which upstream credential."""

    connection_id: str
    user_id: str
    service_id: str
    upstream_url: str  # the MCP endpoint (streamable HTTP) or the SSE URL (legacy transport)
    transport: Transport
    inject_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    inject_query: Mapping[str, str] = field(default_factory=dict, repr=False)
    reconnect_url: str = ""
    auth_type: str = "oauth"  # "oauth" | "api_key" | "none"
    # The tool policy to enforce (DESIGN §13); None = none, and the relay never reads the body.
    policy: EffectivePolicy | None = None
    # The resolver's own handle for one refresh after an upstream 401/403 (opaque here: the
    # relay hands the target back to `after_upstream_auth_failure`, which reads it).
    refresh: object | None = field(default=None, repr=False, compare=False)
    # `headers.injected_names(inject_headers)`, computed once here rather than per request.
    inject_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inject_names", injected_names(self.inject_headers))


class TargetResolver(Protocol):
    """Turns a request's credential into a target; raises ProxyRefusal per DESIGN §6."""

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        """`credential` is the 86-char path segment or the raw `Authorization` value."""
        ...

    async def after_upstream_auth_failure(self, target: ProxyTarget, status: int) -> ProxyTarget:
        """Called once when the upstream answered 401/403: refresh and return a new target to
        retry with, or raise ProxyRefusal("needs_reconnect")."""
        ...

    async def record_use(self, target: ProxyTarget, *, upstream_status: int, kind: str) -> None:
        """Metadata-only bookkeeping after a relayed request (events, last_used_at)."""
        ...

    async def record_denial(self, target: ProxyTarget, tool: str) -> None:
        """A tool call the policy refused: an event naming the tool (never its arguments)."""
        ...
