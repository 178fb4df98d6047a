"""Tool-policy pages (DESIGN §13): the admin's service page and the member's policy form.

- `GET /admin/services/{id}` — one service: what it is, and the form for its tool policy (its
  settings, OAuth app and delete forms are web/service_edit.py's).
- `POST /admin/services/{id}/policy` — `action` = `save` | `clear`; written through
  `ServiceRegistry.update` with `{"policy": …}`, exactly as `PATCH /api/v1/services/{id}`,
  and audited the same way (`service.update`, fields `["policy"]`).
- `POST /connections/{id}/policy` — the owner's narrowing of the service's policy, written
  through `usecases.connections.set_connection_policy`, as `PATCH /api/v1/connections/{id}`.
  The connection page (web/dashboard.py) shows the admin's policy beside this form.

Bad input re-renders the page (400) with a readable message and what was typed; nothing is
written. Success redirects (303) with `?done=policy` or `?done=policy-cleared`. A member's
policy can only narrow the service's: the merge (`proxy.policy.effective`) decides, so nothing
here needs to compare the two. Another user's connection is "not found" (web/dashboard.py).
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, NotFound, NotFoundError
from bindify_appliance.proxy.policy import parse_policy
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.registry import ServiceDefinition
from bindify_appliance.usecases.connections import set_connection_policy
from bindify_appliance.web.dashboard import ConnectionView
from bindify_appliance.web.pages import UiPage
from bindify_appliance.web.policy_form import form_fields, policy_from_form, policy_message
from bindify_appliance.web.service_form import editor_values

__all__ = ["ServiceView", "policy_routes"]

_NO_SERVICE = "There is no such service."
_DONE = {"policy": "Tool policy saved.", "policy-cleared": "Tool policy cleared."}


class _PolicyForm(UiPage):
    def _exact(self, name: str) -> str:
        # Not get_body_argument: it turns control characters into spaces, and a glob the
        # API would refuse must not be stored from the form in a cleaned-up form.
        values = self.request.body_arguments.get(name) or [b""]
        return self.decode_argument(values[-1], name=name)  # 400 on bad UTF-8

    def posted(self) -> tuple[str, str, bool, bool]:
        """(allow text, deny text, read_only, clear) as posted; the texts are never cut."""
        allow, deny = self._exact("allow"), self._exact("deny")
        read_only = self.form("read_only", 8) == "yes"
        return allow, deny, read_only, self.form("action", 8) == "clear"


class _ServiceView(_PolicyForm):
    async def service(self, id: str) -> ServiceDefinition:
        found = await self.services.registry.get(id[:64])
        if found is None:
            raise NotFound(_NO_SERVICE)
        return found

    async def show(
        self,
        service: ServiceDefinition,
        status: int = 200,
        editor: dict[str, Any] | None = None,
        **form: Any,
    ) -> None:
        """The page; `editor` re-shows a refused settings form (web/service_edit.py)."""
        done = self.get_query_argument("done", "") or ""
        self.render_page(
            "admin_service.html",
            status=status,
            service=service,
            policy_form=form_fields(f"/admin/services/{service.id}/policy", service.policy, **form),
            flash=_DONE.get(done),
            **await editor_values(self, service, done, editor or {}),
        )


ServiceView = _ServiceView  # the base of the service page's other forms (web/service_edit.py)


class ServicePage(_ServiceView):
    async def get(self, id: str) -> None:
        self.admin()
        await self.show(await self.service(id))


class ServicePolicyHandler(_ServiceView):
    async def post(self, id: str) -> None:
        self.admin()
        service = await self.service(id)
        allow, deny, read_only, clear = self.posted()
        try:
            value = None if clear else policy_from_form(allow, deny, read_only)
            await self.services.registry.update(
                service.id, {"policy": value}, keyring=self.ctx.keys.keyring
            )
        except NotFoundError:
            raise NotFound(_NO_SERVICE) from None
        except HTTPFacingError as exc:
            if exc.status != 400:
                raise
            await self.show(service, 400, error=policy_message(exc), draft=(allow, deny, read_only))
            return
        await audit.by_request(
            self,
            "service.update",
            audit.Target("service", service.id),
            detail={"fields": ["policy"]},
        )
        done = "policy-cleared" if value is None else "policy"
        self.redirect(f"/admin/services/{service.id}?done={done}", status=303)


class ConnectionPolicyHandler(_PolicyForm, ConnectionView):
    async def post(self, id: str) -> None:
        row = await self.owned(id)
        allow, deny, read_only, clear = self.posted()
        try:
            policy = None if clear else parse_policy(policy_from_form(allow, deny, read_only))
        except HTTPFacingError as exc:
            if exc.status != 400:
                raise
            form = form_fields(
                f"/connections/{row.id}/policy",
                None,
                error=policy_message(exc),
                draft=(allow, deny, read_only),
            )
            await self.show(row, status=400, policy_form=form)
            return
        await set_connection_policy(self.services, self.acting, row.id, policy)
        done = "policy-cleared" if policy is None else "policy"
        self.redirect(f"/connections/{row.id}?done={done}#tool-policy", status=303)


def policy_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/admin/services/{id}", ServicePage, ctx, **kw),
        route("/admin/services/{id}/policy", ServicePolicyHandler, ctx, **kw),
        route("/connections/{id}/policy", ConnectionPolicyHandler, ctx, **kw),
    ]
