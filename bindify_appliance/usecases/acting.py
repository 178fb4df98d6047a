"""The acting principal every operation takes: who, with which role, from which address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from bindify_appliance import audit
from bindify_appliance.http.base import request_ip

__all__ = ["CLI", "Acting", "from_request"]


@dataclass(frozen=True)
class Acting:
    """`who` is the audit actor; `user_id` None for the operator on the host (CLI);
    `role` is `admin`, `member` or `cli`; `address` the client's, trusted-proxy rules applied."""

    who: audit.Actor
    user_id: str | None
    role: str
    address: str | None = None

    @property
    def is_admin(self) -> bool:
        """Administrators and the operator on the host."""
        return self.role in ("admin", "cli")

    @property
    def disable_role(self) -> str:
        """The role a disable is recorded under: only an administrator's sticks (DESIGN §15)."""
        return "admin" if self.is_admin else "owner"

    async def record(
        self,
        ctx: Any,
        action: str,
        target: audit.Target | None = None,
        *,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append this principal's audit entry for `action`."""
        await audit.record(ctx, self.who, action, target, ip=self.address, detail=detail)


CLI: Final = Acting(audit.CLI, None, "cli")


def from_request(handler: Any) -> Acting:
    """The signed-in principal of a request handler (`handler.principal`), with its address."""
    principal = handler.principal
    address = request_ip(handler, handler.ctx.settings.trusted_proxies)
    if principal is None:
        return Acting(audit.actor(None), None, "anonymous", address)
    return Acting(audit.actor(principal), principal.user_id, principal.role, address)
