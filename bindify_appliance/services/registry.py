"""The service registry: the built-in and admin-added upstream MCP services, served from memory.

What a service is: `services/definitions.py`; where its credentials go: `services/endpoints.py`.
Built-ins are data (`services/builtins.py`) with every endpoint overridable through
`BINDIFY_{SERVICE}_*` (`Settings.service_setting`); admin-added services come from the
`services` table (`store/services.py`, bodies checked by `services/validation.py`), which also
holds admin-stored OAuth app credentials of built-ins.

`ServiceRegistry.get()` answers from a snapshot of the table taken at most `ttl` (≤ 1 s) ago, so
an admin's change reaches every instance within a second while a proxy request costs a dict
lookup. Concurrent refreshes share one query; a failing database keeps the last snapshot (logged).

Where credentials go (DESIGN §9): an admin's change and `check_endpoints()` at every start
record each service's `endpoint_fingerprint`; a change flags the affected connections for
reconnecting in the same transaction, and the `on_moved` callbacks (the resolver's `forget_all`)
run before this instance serves the new definition, so no memoised row meets the new address.

Invariants:
- No definition carries a client secret: only whether one is configured and where it comes from;
  `client_secret()` opens it on demand (environment first, then the sealed stored value).
- Environment values always win over stored ones (DESIGN §4).
- Built-in ids never resolve to an admin-added row, and damaged rows are skipped (logged), never
  half-used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from bindify_appliance.clock import Clock
from bindify_appliance.config import BUILTIN_SERVICE_IDS, Settings
from bindify_appliance.crypto.keyring import Keyring, open_managed, seal_managed
from bindify_appliance.errors import InvalidRequest, NotFound, StoreError
from bindify_appliance.proxy.policy import dump_policy, parse_policy
from bindify_appliance.scrubbing import add_secret_names
from bindify_appliance.services import validation
from bindify_appliance.services.builtins import BUILTINS
from bindify_appliance.services.definition_rows import admin_definition, unsaved_row, with_overrides
from bindify_appliance.services.definitions import (
    ApiKeyField,
    ServiceDefinition,
)
from bindify_appliance.services.endpoints import endpoint_fingerprint, injected_names
from bindify_appliance.store import Store
from bindify_appliance.store import services as service_rows
from bindify_appliance.store.models import Service

__all__ = [
    "CLIENT_SECRET_FIELD",
    # Re-exported from services/definitions.py: the web UI imports them from here.
    "ApiKeyField",
    "ServiceDefinition",
    "ServiceRegistry",
]

log = logging.getLogger(__name__)

# The associated-data field is the column name, as for every sealed column (store/keys.py
# re-encrypts it under rotation with that convention).
CLIENT_SECRET_FIELD: Final = "oauth_client_secret_sealed"  # noqa: S105 - a column name
REGISTRY_TTL: Final = 1.0


@dataclass(frozen=True)
class _Snapshot:
    expires: float
    definitions: Mapping[str, ServiceDefinition]
    order: tuple[str, ...]
    sealed_secrets: Mapping[str, tuple[str, str]]  # id -> (sealed client secret, fingerprint)


class ServiceRegistry:
    """Built-in and admin-added services, refreshed from the database at most every `ttl` s."""

    def __init__(
        self, settings: Settings, store: Store, clock: Clock, *, ttl: float = REGISTRY_TTL
    ) -> None:
        if not 0 <= ttl <= REGISTRY_TTL:
            raise ValueError(f"ttl must be between 0 and {REGISTRY_TTL} seconds")
        self._settings = settings
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self._snapshot: _Snapshot | None = None
        self._loading: asyncio.Task[_Snapshot] | None = None
        self._generation = 0
        self._on_moved: list[Callable[[], None]] = []
        self._checked: asyncio.Event | None = None

    # -- where credentials go ----------------------------------------------------------------

    def on_moved(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously) whenever this instance moves a service's endpoints,
        after the store write and before the new definition is served."""
        self._on_moved.append(callback)

    def hold_until_checked(self) -> None:
        """Serve no definition until `check_endpoints()` has run (armed at start-up)."""
        if self._checked is None:
            self._checked = asyncio.Event()

    async def check_endpoints(self) -> dict[str, frozenset[str]]:
        """Record every service's endpoint fingerprint; flag connections whose service's
        endpoints changed since the last record (a changed override). Returns what moved."""
        moved: dict[str, frozenset[str]] = {}
        try:
            snapshot = await self._refresh()
            now = self._clock.now()
            for sid in snapshot.order:
                fingerprint = endpoint_fingerprint(snapshot.definitions[sid])
                kinds = await self._store.run(
                    functools.partial(service_rows.record_endpoints, sid, fingerprint, now)
                )
                if kinds:
                    moved[sid] = kinds
                    log.warning(
                        "a service's endpoints changed since the last start: its connections "
                        "need reconnecting",
                        extra={"event": "service_moved", "service": sid},
                    )
            if moved:
                self._moved()
        finally:
            if self._checked is not None:
                self._checked.set()  # its waiters hold it; None means "nothing to wait for"
                self._checked = None
        return moved

    def _moved(self) -> None:
        for callback in self._on_moved:
            callback()
        self.invalidate()

    async def _current(self) -> _Snapshot:
        """The snapshot once the start-up check ran, reloaded when it expired."""
        if self._checked is not None:
            await self._checked.wait()
        snapshot = self._snapshot
        if snapshot is None or snapshot.expires <= self._clock.monotonic():
            snapshot = await self._refresh()
        return snapshot

    # -- reading ---------------------------------------------------------------------------

    async def get(self, service_id: str) -> ServiceDefinition | None:
        """The definition of `service_id`, or None when no such service exists."""
        if not isinstance(service_id, str) or not service_rows.SERVICE_ID_RE.fullmatch(service_id):
            return None
        snapshot = self._snapshot  # read on every proxied request: no coroutine when fresh
        if snapshot is None or snapshot.expires <= self._clock.monotonic() or self._checked:
            snapshot = await self._current()
        return snapshot.definitions.get(service_id)

    async def list(self) -> list[ServiceDefinition]:
        """Built-ins in their fixed order, then admin-added services by id."""
        snapshot = await self._current()
        return [snapshot.definitions[sid] for sid in snapshot.order]

    def invalidate(self) -> None:
        """Forget the snapshot (this instance's own writes are visible at once).

        A load already running may predate the write: it is detached and its result dropped.
        """
        self._generation += 1
        self._snapshot = None
        self._loading = None

    async def client_secret(self, service_id: str, keyring: Keyring) -> str | None:
        """The OAuth client secret: the environment's, else the stored one opened; None if unset.

        Raises KeyringError/DecryptError when a stored secret cannot be opened.
        """
        if service_id in BUILTIN_SERVICE_IDS:
            from_env = self._settings.service_setting(service_id, "client_secret")
            if from_env:
                return from_env
        await self.get(service_id)
        snapshot = self._snapshot
        sealed = snapshot.sealed_secrets.get(service_id) if snapshot else None
        if sealed is None:
            return None
        blob, fp = sealed
        return open_managed(keyring, fp, service_id, blob, field=CLIENT_SECRET_FIELD).decode()

    async def _refresh(self) -> _Snapshot:
        # One query however many requests miss at once, in a task of its own so a cancelled
        # caller never fails the others waiting for it.
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded)
        return await asyncio.shield(self._loading)

    def _loaded(self, task: asyncio.Task[_Snapshot]) -> None:
        if self._loading is task:
            self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved: no warning when every caller went away

    async def _load(self) -> _Snapshot:
        started, generation = self._clock.monotonic(), self._generation
        try:
            rows = await self._store.run(service_rows.list_services)
            snapshot = self._build(rows, started)
        except StoreError:
            if self._snapshot is None:
                raise
            log.warning("service registry: database unavailable, keeping the last snapshot")
            snapshot = dataclasses.replace(
                self._snapshot, expires=self._clock.monotonic() + self._ttl
            )
        if generation == self._generation:  # else invalidated meanwhile: don't keep it
            self._snapshot = snapshot
        return snapshot

    def _build(self, rows: Sequence[Service], started: float) -> _Snapshot:
        by_id = {row.id: row for row in rows}
        definitions: dict[str, ServiceDefinition] = {}
        sealed: dict[str, tuple[str, str]] = {}
        order: list[str] = []
        for sid, base in BUILTINS.items():
            row = by_id.get(sid)
            definitions[sid] = with_overrides(base, self._settings, row)
            order.append(sid)
            if row is not None and row.oauth_client_secret_sealed:
                sealed[sid] = (row.oauth_client_secret_sealed, row.oauth_key_fingerprint)
        for row in rows:
            if row.builtin or row.id in definitions:
                continue
            try:
                definitions[row.id] = admin_definition(row)
            except (ValueError, KeyError, TypeError):
                log.warning("service row is damaged; skipped", extra={"service": row.id})
                continue
            order.append(row.id)
            if row.oauth_client_secret_sealed:
                sealed[row.id] = (row.oauth_client_secret_sealed, row.oauth_key_fingerprint)
        # Before any request of these services can log: their header/query names get the
        # scrubber's `Authorization` treatment (DESIGN §9).
        add_secret_names(injected_names(definitions.values()))
        return _Snapshot(
            # From when the query started, so a snapshot never outlives the TTL.
            expires=started + self._ttl,
            definitions=MappingProxyType(definitions),
            order=tuple(order),
            sealed_secrets=MappingProxyType(sealed),
        )

    # -- writing (admin) -------------------------------------------------------------------

    def _seal_secret(
        self, service_id: str, secret: str | service_rows.KeepType | None, keyring: Keyring | None
    ) -> tuple[str | service_rows.KeepType | None, str]:
        if not isinstance(secret, str):
            return secret, ""
        if keyring is None:
            raise ValueError("a keyring is needed to store a client secret")
        blob, fp = seal_managed(
            keyring, service_id, secret.encode("utf-8"), field=CLIENT_SECRET_FIELD
        )
        return blob, fp

    async def create(self, body: object, *, keyring: Keyring | None = None) -> ServiceDefinition:
        """Add a service from an admin API body; `HTTPFacingError` 400 / `ConflictError`."""
        spec = validation.parse_service_body(
            body, allow_private=self._settings.allow_private_upstreams
        )
        return await self.insert(spec, keyring=keyring)

    async def insert(
        self, spec: service_rows.ServiceSpec, *, keyring: Keyring | None = None
    ) -> ServiceDefinition:
        """Store an already validated spec: `create`'s, or one the appliance built itself (the
        canary's temporary service, `api/ops.py`); `ConflictError` if the id is taken."""
        sealed, fp = self._seal_secret(spec.id, spec.client_secret, keyring)
        assert not isinstance(sealed, service_rows.KeepType)
        endpoints = endpoint_fingerprint(admin_definition(unsaved_row(spec, sealed)))
        await self._store.run(
            lambda: service_rows.insert_service(
                spec,
                client_secret_sealed=sealed,
                key_fingerprint=fp,
                now=self._clock.now(),
                endpoints=endpoints,
            )
        )
        return await self._reloaded(spec.id)

    async def update(
        self, service_id: str, body: object, *, keyring: Keyring | None = None
    ) -> ServiceDefinition:
        """PATCH a service: admin-added ones fully, built-ins only their OAuth app credentials.

        A `policy` field (DESIGN §13) replaces the service's tool policy (null clears it); it
        is checked with the rest of the body before anything is written.

        Raises HTTPFacingError (400), NotFoundError.
        """
        if isinstance(body, dict) and "policy" in body:
            policy = parse_policy(body["policy"])
            rest = {k: v for k, v in body.items() if k != "policy"}
            if service_id in BUILTIN_SERVICE_IDS:
                if rest:
                    validation.parse_builtin_patch(rest)  # refuse a bad rest before writing
            else:
                row = await self._store.run(service_rows.get_service, service_id)
                if row is None or row.builtin:
                    raise NotFound("service not found")
                validation.parse_service_patch(
                    rest,
                    service_rows.spec_from_row(row),
                    allow_private=self._settings.allow_private_upstreams,
                )
            if rest:
                await self.update(service_id, rest, keyring=keyring)
            await self._store.run(
                service_rows.set_policy, service_id, dump_policy(policy), self._clock.now()
            )
            return await self._reloaded(service_id)
        if service_id in BUILTIN_SERVICE_IDS:
            client_id, secret = validation.parse_builtin_patch(body)
            sealed, fp = self._seal_secret(service_id, secret, keyring)
            before = await self.get(service_id)
            await self._store.run(
                lambda: service_rows.set_builtin_oauth(
                    service_id,
                    client_id=client_id,
                    client_secret_sealed=sealed,
                    key_fingerprint=fp,
                    now=self._clock.now(),
                )
            )
            # A built-in's OAuth client id moves no request of the proxy (the refresh endpoint
            # and client travel in each connection's sealed payload), so recording it right
            # after the write, in a transaction of its own, is enough.
            after = await self._reloaded(service_id)
            fingerprint = endpoint_fingerprint(after)
            was = endpoint_fingerprint(before) if before is not None else None
            moved = await self._store.run(
                lambda: service_rows.record_endpoints(
                    service_id, fingerprint, self._clock.now(), baseline=was
                )
            )
            if moved:
                self._moved()
            return after
        row = await self._store.run(service_rows.get_service, service_id)
        if row is None or row.builtin:
            raise NotFound("service not found")
        current = service_rows.spec_from_row(row)
        spec = validation.parse_service_patch(
            body, current, allow_private=self._settings.allow_private_upstreams
        )
        sealed, fp = self._seal_secret(service_id, spec.client_secret, keyring)
        if spec.auth_type != "oauth":
            sealed = None
        try:
            baseline: str | None = endpoint_fingerprint(admin_definition(row))
        except (ValueError, KeyError, TypeError):
            baseline = None  # a damaged row: the stored fingerprint (if any) decides
        kept = (
            row.oauth_client_secret_sealed if isinstance(sealed, service_rows.KeepType) else sealed
        )
        endpoints = endpoint_fingerprint(admin_definition(unsaved_row(spec, kept)))
        _, moved = await self._store.run(
            lambda: service_rows.update_service(
                spec,
                client_secret_sealed=sealed,
                key_fingerprint=fp,
                now=self._clock.now(),
                endpoints=endpoints,
                baseline=baseline,
            )
        )
        if moved:
            # Before anything serves the new definition: no memoised connection row (still
            # "active" from before the write) may meet the new address.
            self._moved()
        return await self._reloaded(service_id)

    async def delete(self, service_id: str) -> None:
        """Delete an admin-added service; built-ins refuse (400), ConflictError with connections."""
        if service_id in BUILTIN_SERVICE_IDS:
            raise InvalidRequest("built-in services cannot be deleted", field="id")
        await self._store.run(service_rows.delete_service, service_id)
        self.invalidate()

    async def _reloaded(self, service_id: str) -> ServiceDefinition:
        self.invalidate()
        definition = await self.get(service_id)
        if definition is None:  # pragma: no cover - just written
            raise StoreError(f"service {service_id!r} vanished after being written")
        return definition
