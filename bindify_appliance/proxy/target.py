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

from bindify_appliance.proxy.policy import EffectivePolicy

__all__ = ["ProxyRefusal", "ProxyTarget", "RefusalKind", "TargetResolver"]

Transport = Literal["streamable-http", "sse"]

# Refusal kinds and the DESIGN §6 table row each maps to.
RefusalKind = Literal[
    "malformed",  # 400, -32600: malformed path or key, Authorization missing on the API-key form
    "unknown_service",  # 404, -32006
    "unknown_credential",  # 404, -32001: one message for every "not found" (no oracle)
    "disabled",  # 403, -32002: connection or its owner disabled
    "payment_required",  # 403, -32004 with the billing page link (DESIGN §11)
    "needs_reconnect",  # 200, -32003 with the /connections/{id} link
    "upstream_unavailable",  # 200, -32603 data {"proxy": true}
    "cooldown",  # 200, -32007 data {"retry_after": 60}
    "rate_limited",  # 200, -31029 data {"retry_after": s}
    "ip_limited",  # 429 + Retry-After, no body
    "oauth_required",  # 401 + WWW-Authenticate (DESIGN §10): no or a dead `bndat_` token
]


class ProxyRefusal(Exception):
    """The proxy answers this request itself (DESIGN §6); `message` is safe to show."""

    def __init__(
        self,
        kind: RefusalKind,
        message: str,
        *,
        retry_after: int | None = None,
        reconnect_url: str | None = None,
        challenge: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind
        self.message = message
        self.retry_after = retry_after
        self.reconnect_url = reconnect_url
        self.challenge = challenge  # the WWW-Authenticate value of an "oauth_required" 401


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
