"""Admin-added services and built-ins' OAuth apps: the `services` units of work.

A `ServiceSpec` is a validated admin-added service (`services/validation.py` checks request
bodies into one); the units of work below store it. The `auth` object is stored in `auth_json`
exactly as normalised, minus the OAuth client credentials, which live in their own columns
(`oauth_client_id`; the secret only sealed, by the caller, since sealing needs the master keys).
Ids are slugs (`SERVICE_ID_RE`); the `canary-` prefix (`CANARY_ID_PREFIX`) is reserved for the
payload canary (`api/ops.py`).

Invariants:
- The store raises no HTTP errors: bodies are validated before they reach it
  (`services/validation.py`); it raises `ConflictError` / `NotFoundError` (errors.py), and
  `ValueError` for a damaged row.
- Built-in rows (`builtin` true) hold only OAuth app credentials; they are never created, renamed
  or deleted through the admin-service units.
- A service with connections left cannot be deleted (`ConflictError`), checked in the same
  transaction as the delete.
- Where credentials go (DESIGN §9): `service_endpoints` keeps each service's endpoint
  fingerprint, a JSON object `{auth type: digest}` computed by the registry. `record_endpoints`
  stores a new one and, in the same transaction, flags for reconnecting the connections whose
  auth type's digest changed; an admin's update runs it inside the transaction of the update,
  so the new address and the flags commit together. Deleting a service drops its fingerprint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import peewee

from bindify_appliance.config import BUILTIN_SERVICE_IDS
from bindify_appliance.errors import ConflictError, NotFoundError
from bindify_appliance.store.compiled import compiled_sql, fetch_models
from bindify_appliance.store.connections import flag_service_moved
from bindify_appliance.store.models import Connection, Service, ServiceEndpoints

__all__ = [
    "AUTH_KINDS",
    "CANARY_ID_PREFIX",
    "KEEP",
    "SERVICE_ID_RE",
    "KeepType",
    "ServiceSpec",
    "changed_kinds",
    "delete_service",
    "get_service",
    "insert_service",
    "list_services",
    "record_endpoints",
    "set_builtin_oauth",
    "set_policy",
    "spec_from_row",
    "update_service",
]

SERVICE_ID_RE: Final = re.compile(r"[a-z][a-z0-9-]{1,31}")
AUTH_KINDS: Final = ("none", "api_key", "oauth")


class KeepType:
    """Marker: a PATCH left this value alone."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = KeepType()


@dataclass(frozen=True)
class ServiceSpec:
    """A validated admin-added service. `auth` is what `auth_json` stores (no client secret)."""

    id: str
    name: str
    mcp_url: str
    transport: str
    auth: Mapping[str, Any]
    client_id: str | None = None
    # The plaintext client secret from a request body, to be sealed by the caller; KEEP on a
    # PATCH that did not mention it. Never stored as is, never shown.
    client_secret: str | KeepType | None = field(default=None, repr=False)

    @property
    def auth_type(self) -> str:
        return str(self.auth["type"])


CANARY_ID_PREFIX: Final = "canary-"


def spec_from_row(row: Service) -> ServiceSpec:
    """The stored definition of an admin-added row; `ValueError` if the row is damaged."""
    auth = json.loads(row.auth_json or "null")
    if not isinstance(auth, dict) or auth.get("type") not in AUTH_KINDS:
        raise ValueError(f"service {row.id}: auth_json is not a valid auth object")
    return ServiceSpec(
        id=row.id,
        name=row.name or row.id,
        mcp_url=row.mcp_url or "",
        transport=row.transport or "streamable-http",
        auth=auth,
        client_id=row.oauth_client_id,
        client_secret=None,
    )


# -- where credentials go -------------------------------------------------------------------


def _kinds(fingerprint: str) -> dict[str, str]:
    try:
        value = json.loads(fingerprint)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def changed_kinds(before: str, after: str) -> frozenset[str]:
    """The auth types whose endpoint digest differs between two fingerprints (gone = changed)."""
    old, new = _kinds(before), _kinds(after)
    return frozenset(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def record_endpoints(
    service_id: str, fingerprint: str, now: datetime, *, baseline: str | None = None
) -> frozenset[str]:
    """Store `fingerprint` for `service_id`; flag the connections whose auth type's endpoints
    changed since the stored fingerprint (or `baseline` when none is stored). Returns the
    changed auth types (empty when nothing changed or nothing was known to compare with).

    The stored value is replaced by compare-and-swap, so instances starting together with the
    same new override flag each connection once.
    """
    db = ServiceEndpoints._meta.database
    with db.atomic():
        stored = ServiceEndpoints.get_or_none(ServiceEndpoints.service_id == service_id)
        before = stored.fingerprint if stored is not None else baseline
        if stored is None:
            inserted = (
                ServiceEndpoints.insert(
                    service_id=service_id, fingerprint=fingerprint, updated_at=now
                )
                .on_conflict_ignore()
                .execute()
            )
            if not inserted:
                return frozenset()  # another instance recorded it meanwhile
        elif stored.fingerprint == fingerprint:
            return frozenset()
        else:
            swapped = (
                ServiceEndpoints.update(fingerprint=fingerprint, updated_at=now)
                .where(
                    (ServiceEndpoints.service_id == service_id)
                    & (ServiceEndpoints.fingerprint == stored.fingerprint)
                )
                .execute()
            )
            if swapped != 1:
                return frozenset()  # another instance recorded (and flagged) it meanwhile
        kinds = changed_kinds(before, fingerprint) if before is not None else frozenset()
        flag_service_moved(service_id, kinds, now)
        return kinds


# -- units of work --------------------------------------------------------------------------


def get_service(service_id: str) -> Service | None:
    """The row for `service_id` (admin-added, or a built-in's OAuth app credentials)."""
    return Service.get_or_none(Service.id == service_id)


def list_services() -> list[Service]:
    """Every row, ordered by id (read-only instances).

    The service registry re-reads this at most once a second, on a proxied request's path, so
    its SQL is compiled once per dialect (store/compiled.py) and run directly.
    """
    fields = Service._meta.sorted_fields
    sql = compiled_sql(
        "list_services",
        Service._meta.database,
        lambda: Service.select(*fields).order_by(Service.id),
    )
    return fetch_models(Service, fields, sql)


def insert_service(
    spec: ServiceSpec,
    *,
    client_secret_sealed: str | None,
    key_fingerprint: str,
    now: datetime,
    endpoints: str | None = None,
) -> Service:
    """Store a new admin-added service (and its endpoint fingerprint); `ConflictError` if the
    id is taken."""
    if not SERVICE_ID_RE.fullmatch(spec.id) or spec.id in BUILTIN_SERVICE_IDS:
        raise ValueError("insert_service needs a validated, non-reserved id")
    db = Service._meta.database
    with db.atomic():
        if Service.get_or_none(Service.id == spec.id) is not None:
            raise ConflictError(f"a service with id {spec.id!r} already exists")
        if endpoints is not None:
            # A leftover fingerprint of a deleted service of the same id is not a baseline.
            ServiceEndpoints.delete().where(ServiceEndpoints.service_id == spec.id).execute()
            record_endpoints(spec.id, endpoints, now)
        try:
            return Service.create(
                id=spec.id,
                name=spec.name,
                mcp_url=spec.mcp_url,
                transport=spec.transport,
                auth_json=json.dumps(dict(spec.auth), separators=(",", ":"), sort_keys=True),
                oauth_client_id=spec.client_id,
                oauth_client_secret_sealed=client_secret_sealed,
                oauth_key_fingerprint=key_fingerprint if client_secret_sealed else "",
                builtin=False,
                created_at=now,
                updated_at=now,
            )
        except peewee.IntegrityError:
            raise ConflictError(f"a service with id {spec.id!r} already exists") from None


def update_service(
    spec: ServiceSpec,
    *,
    client_secret_sealed: str | KeepType | None,
    key_fingerprint: str,
    now: datetime,
    endpoints: str | None = None,
    baseline: str | None = None,
) -> tuple[Service, frozenset[str]]:
    """Replace an admin-added service's definition; `NotFoundError` if it does not exist.

    `client_secret_sealed` KEEP leaves the stored secret as it is. `endpoints` (the new
    definition's fingerprint) is recorded in the same transaction, flagging the connections
    whose endpoints changed (`baseline`: the current definition's, when none is stored).
    Returns the row and the changed auth types.
    """
    updates: dict[Any, Any] = {
        Service.name: spec.name,
        Service.mcp_url: spec.mcp_url,
        Service.transport: spec.transport,
        Service.auth_json: json.dumps(dict(spec.auth), separators=(",", ":"), sort_keys=True),
        Service.oauth_client_id: spec.client_id,
        Service.updated_at: now,
    }
    if not isinstance(client_secret_sealed, KeepType):
        updates[Service.oauth_client_secret_sealed] = client_secret_sealed
        updates[Service.oauth_key_fingerprint] = key_fingerprint if client_secret_sealed else ""
    with Service._meta.database.atomic():
        changed = (
            Service.update(updates)
            .where((Service.id == spec.id) & (Service.builtin == False))  # noqa: E712 - SQL
            .execute()
        )
        if changed != 1:
            raise NotFoundError(f"no admin-added service {spec.id!r}")
        moved = (
            record_endpoints(spec.id, endpoints, now, baseline=baseline)
            if endpoints is not None
            else frozenset()
        )
        return Service.get_by_id(spec.id), moved


def set_builtin_oauth(
    service_id: str,
    *,
    client_id: str | KeepType | None,
    client_secret_sealed: str | KeepType | None,
    key_fingerprint: str,
    now: datetime,
) -> Service:
    """Create or update a built-in's row of OAuth app credentials (KEEP leaves a value alone)."""
    if service_id not in BUILTIN_SERVICE_IDS:
        raise ValueError("set_builtin_oauth is for built-in services only")
    db = Service._meta.database
    with db.atomic():
        row = Service.get_or_none(Service.id == service_id)
        if row is None:
            row = Service(id=service_id, builtin=True, created_at=now, transport="streamable-http")
            created = True
        else:
            created = False
        if not isinstance(client_id, KeepType):
            row.oauth_client_id = client_id
        if not isinstance(client_secret_sealed, KeepType):
            row.oauth_client_secret_sealed = client_secret_sealed
            row.oauth_key_fingerprint = key_fingerprint if client_secret_sealed else ""
        row.updated_at = now
        row.save(force_insert=created)
        return row


def set_policy(service_id: str, policy_json: str | None, now: datetime) -> None:
    """Store an already-validated tool policy (None clears it).

    A built-in without a row gets one (as for its OAuth app credentials); an unknown
    admin-added id is `NotFoundError`.
    """
    with Service._meta.database.atomic():
        row = Service.get_or_none(Service.id == service_id)
        if row is None:
            if service_id not in BUILTIN_SERVICE_IDS:
                raise NotFoundError(f"no service {service_id!r}")
            row = Service(id=service_id, builtin=True, created_at=now, transport="streamable-http")
            row.policy_json, row.updated_at = policy_json, now
            row.save(force_insert=True)
            return
        Service.update({Service.policy_json: policy_json, Service.updated_at: now}).where(
            Service.id == service_id
        ).execute()


def delete_service(service_id: str) -> None:
    """Delete an admin-added service.

    Raises:
        NotFoundError: no such admin-added service.
        ConflictError: connections still use it (nothing deleted).
    """
    db = Service._meta.database
    with db.atomic():
        row = Service.get_or_none((Service.id == service_id) & (Service.builtin == False))  # noqa: E712
        if row is None:
            raise NotFoundError(f"no admin-added service {service_id!r}")
        remaining = Connection.select().where(Connection.service == service_id).count()
        if remaining:
            raise ConflictError(
                f"service {service_id!r} still has {remaining} connection(s); delete them first"
            )
        row.delete_instance()
        ServiceEndpoints.delete().where(ServiceEndpoints.service_id == service_id).execute()
