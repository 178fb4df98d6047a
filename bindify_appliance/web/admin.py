"""Administrator pages: users and invites, services, master keys, background jobs.

- `GET /admin/users`, `POST /admin/users` (invite: shows the one-time invite link on the page
  that answers the POST, never in a URL or a log).
- `POST /admin/users/{id}` — `action` = `make-admin` | `make-member` | `disable` | `enable` |
  `delete` through the API's operations (`usecases.users`); `delete` first answers a
  confirmation page and acts only with `confirm=yes`. The last-admin rule (`LastAdminError`)
  re-renders the users page (409) with a readable message; success redirects to
  `/admin/users?done=…`.
- `GET /admin/services`, `POST /admin/services` (add a remote MCP server with the editor's full
  sign-in options, `web/service_form.py`, through the API's `create_service`). Built-ins show
  their callback URL to register and whether their OAuth app is set, and "set by environment"
  where it is. Each service's own page and forms: `web/policies.py`, `web/service_edit.py`.
- `GET /admin/keys` — fingerprints, which is active, connections per key, orphan warnings.
- `GET /admin/jobs` — each background job's last run and outcome.
- `GET /admin/connections` — every member's connections as metadata (`web/admin_connections.py`).
- `GET /admin/audit` — the audit trail, newest first, 100 a page, filtered by action prefix,
  actor or target (the API's filters and the same store query).

Members get the 403 page; anonymous visitors are sent to sign in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tornado.routing import URLSpec

from bindify_appliance.api.audit import parse_filters
from bindify_appliance.api.services import create_service
from bindify_appliance.context import AppContext
from bindify_appliance.errors import (
    ConflictError,
    HTTPFacingError,
    InvalidRequest,
    LastAdminError,
    NotFound,
    NotFoundError,
)
from bindify_appliance.keymgmt.usage import key_usage
from bindify_appliance.mail.outbox import mailer_for
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.dcr import callback_url
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store import audit as audit_store
from bindify_appliance.usecases.accounts import create_user
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.users import delete_user, offboard_user, update_user
from bindify_appliance.web.admin_connections import admin_connection_routes
from bindify_appliance.web.pages import UiPage
from bindify_appliance.web.service_edit import service_edit_routes
from bindify_appliance.web.service_form import form_values, posted_body

__all__ = ["admin_routes"]


_DONE = {
    "role": "Role changed.",
    "disabled": "User disabled.",
    "enabled": "User enabled.",
    "deleted": "User deleted.",
}
_LAST_ADMIN = "That would leave no active administrator. Make another user an administrator first."
_ACTIONS = {
    "make-admin": ("admin", None, "role"),
    "make-member": ("member", None, "role"),
    "disable": (None, True, "disabled"),
    "enable": (None, False, "enabled"),
}


class _Users(UiPage):
    async def _show(self, status: int = 200, **extra: Any) -> None:
        users = await self.ctx.store.run(accounts_store.list_users, None, 500)
        values: dict[str, Any] = {"invite_url": None, "error": None, "email": "", "done": None}
        values.update(extra)
        self.render_page("admin_users.html", status=status, users=users, **values)


class UsersPage(_Users):
    async def get(self) -> None:
        self.admin()
        await self._show(done=_DONE.get(self.get_query_argument("done", "") or ""))

    async def post(self) -> None:
        self.admin()
        email = self.form("email", 254)
        role = self.form("role", 16) or "member"
        try:
            created = await create_user(
                self.ctx,
                from_request(self),
                email=email,
                role=role,
                password=None,
                mailer=mailer_for(self.ctx),
            )
        except HTTPFacingError as exc:
            await self._show(400, error=exc.public_message, email=email)
            return
        except ConflictError:
            await self._show(409, error="A user with that email already exists.", email=email)
            return
        await self._show(201, invite_url=created.invite_url, invited=created.user.email)


class UserActionPage(_Users):
    """`POST /admin/users/{id}`: change role, disable/enable, delete (confirmed) one user."""

    async def post(self, id: str) -> None:
        self.admin()
        action = self.form("action", 16)
        try:
            if action == "delete":
                if self.form("confirm", 8) != "yes":
                    target = await self.ctx.store.run(accounts_store.get_user, id)
                    self.render_page("admin_user_delete.html", target=target)
                    return
                if self.form("revoke", 8) == "yes":
                    report = await offboard_user(self.services, from_request(self), id)
                    self.render_page("admin_offboarding.html", report=report.json())
                    return
                await delete_user(self.services, from_request(self), id)
                self.redirect("/admin/users?done=deleted", status=303)
                return
            if action not in _ACTIONS:
                raise InvalidRequest("Unknown action.", field="action")
            role, disabled, done = _ACTIONS[action]
            await update_user(self.services, from_request(self), id, role=role, disabled=disabled)
        except NotFoundError:
            raise NotFound("No such user.") from None
        except LastAdminError:
            await self._show(409, error=_LAST_ADMIN)
            return
        self.redirect(f"/admin/users?done={done}", status=303)


class ServicesPage(UiPage):
    async def _show(
        self,
        status: int = 200,
        error: str | None = None,
        values: dict[str, str] | None = None,
        new_id: str = "",
    ) -> None:
        services = sorted(await self.services.registry.list(), key=lambda s: (not s.builtin, s.id))
        deleted = status == 200 and self.get_query_argument("done", "") == "deleted"
        self.render_page(
            "admin_services.html",
            status=status,
            services=services,
            callback=callback_url(self.ctx.settings.base_url),
            error=error,
            values=values or form_values(None),
            new_id=new_id,
            flash="Service deleted." if deleted else None,
        )

    async def get(self) -> None:
        self.admin()
        await self._show()

    async def post(self) -> None:
        self.admin()
        body, typed = posted_body(self, None)
        body["id"] = self.form("id", 40)
        try:
            await create_service(self, body)
        except HTTPFacingError as exc:
            await self._show(exc.status, exc.public_message, typed, body["id"])
            return
        except ConflictError:
            await self._show(409, "A service with that id already exists.", typed, body["id"])
            return
        self.redirect("/admin/services", status=303)


class KeysPage(UiPage):
    async def get(self) -> None:
        self.admin()
        keyring = self.ctx.keys.keyring
        report = await self.ctx.store.run(key_usage, keyring)
        self.render_page(
            "admin_keys.html",
            report=report,
            active=keyring.active.fingerprint,
            from_env=self.ctx.keys.from_env,
            path=str(self.ctx.keys.path),
        )


class JobsPage(UiPage):
    async def get(self) -> None:
        self.admin()
        jobs = await self.ctx.store.run(accounts_store.list_jobs, None, 200)
        self.render_page("admin_jobs.html", jobs=jobs)


class AuditPage(UiPage):
    async def get(self) -> None:
        self.admin()
        filters = parse_filters(lambda name: self.get_query_argument(name, None))
        before_text = self.get_query_argument("before", "") or ""
        before = int(before_text) if before_text.isascii() and before_text.isdigit() else None
        entries = await self.ctx.store.run(audit_store.list_rows, filters, before, _AUDIT_PAGE + 1)
        more = len(entries) > _AUDIT_PAGE
        entries = entries[:_AUDIT_PAGE]
        older = None
        if more and entries:
            query = {"action": filters.action_prefix, "actor": filters.actor_id}
            query |= {"target": filters.target_id, "before": str(entries[-1].seq)}
            older = urlencode({k: v for k, v in query.items() if v})
        self.render_page("admin_audit.html", entries=entries, filters=filters, older=older)


_AUDIT_PAGE = 100


def admin_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/admin/users", UsersPage, ctx, **kw),
        route("/admin/users/{id}", UserActionPage, ctx, **kw),
        route("/admin/services", ServicesPage, ctx, **kw),
        route("/admin/keys", KeysPage, ctx, **kw),
        route("/admin/jobs", JobsPage, ctx, **kw),
        route("/admin/audit", AuditPage, ctx, **kw),
        *admin_connection_routes(ctx, services),
        *service_edit_routes(ctx, services),
    ]
