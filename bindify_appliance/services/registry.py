"""The service registry: what each upstream MCP service is and how credentials reach it.

A `ServiceDefinition` (frozen) says where a service's MCP endpoint is, which auth kinds it takes
(`oauth`, `api_key`, `none`) and how each kind's secret is injected upstream (one header
`{name}: {prefix}{secret}` or one query parameter), plus the OAuth and API-key details the OAuth
client, validation and the UI use. Built-ins are data (`services/builtins.py`) with every endpoint
overridable through `BINDIFY_{SERVICE}_*` (`Settings.service_setting`); admin-added services come
from the `services` table (`store/services.py`), which also holds admin-stored OAuth app
credentials of built-ins.

`ServiceRegistry.get()` answers from a snapshot of the table taken at most `ttl` (≤ 1 s) ago, so
an admin's change reaches every instance within a second while a proxy request costs a dict
lookup. Concurrent refreshes share one query; a failing database keeps the last snapshot (logged).

Where credentials go (DESIGN §9): `endpoint_fingerprint(definition)` digests, per auth type,
everything that kind of credential is sent to (MCP URL, transport, injection; for OAuth also the
authorization, token and registration URLs and the client id). An admin's change and, at every
start, `check_endpoints()` (the built-ins' `BINDIFY_{SERVICE}_*` overrides) record it; a change
flags the affected connections for reconnecting in the same transaction (store/services.py),
and the `on_moved` callbacks (the proxy resolver's `forget_all`) run before this instance serves
the new definition, so no memoised row sends a credential to the new address.

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
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from bindify_appliance.clock import Clock
from bindify_appliance.config import BUILTIN_SERVICE_IDS, Settings
from bindify_appliance.crypto.keyring import Keyring, open_managed, seal_managed
from bindify_appliance.errors import HTTPFacingError, StoreError
from bindify_appliance.proxy.policy import ToolPolicy, dump_policy, load_policy, parse_policy
from bindify_appliance.scrubbing import add_secret_names
from bindify_appliance.store import Store
from bindify_appliance.store import services as service_rows
from bindify_appliance.store.models import Service

__all__ = [
    "BEARER",
    "CLIENT_SECRET_FIELD",
    "ApiKeyConfig",
    "ApiKeyField",
    "Application",
    "AuthMode",
    "AuthType",
    "Injection",
    "OAuthConfig",
    "ServiceDefinition",
    "ServiceRegistry",
    "Validation",
    "endpoint_fingerprint",
]

log = logging.getLogger(__name__)

AuthType = Literal["oauth", "api_key", "none"]
Transport = Literal["streamable-http", "sse"]
# The associated-data field is the column name, as for every sealed column (store/keys.py
# re-encrypts it under rotation with that convention).
CLIENT_SECRET_FIELD: Final = "oauth_client_secret_sealed"  # noqa: S105 - a column name
REGISTRY_TTL: Final = 1.0
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Injection:
    """Where an upstream secret goes: a header `{header}: {prefix}{secret}`, or a query param."""

    header: str | None = None
    prefix: str = ""
    query: str | None = None

    def __post_init__(self) -> None:
        if (self.header is None) == (self.query is None):
            raise ValueError("an injection names exactly one of header or query")

    def headers(self, secret: str) -> dict[str, str]:
        return {self.header: self.prefix + secret} if self.header else {}

    def query_params(self, secret: str) -> dict[str, str]:
        return {self.query: secret} if self.query else {}

    def public(self) -> dict[str, str]:
        if self.header:
            return {"header": self.header, "prefix": self.prefix}
        return {"query": self.query or ""}


BEARER: Final = Injection(header="Authorization", prefix="Bearer ")


@dataclass(frozen=True)
class ApiKeyField:
    """One input of the API-key form (Atlassian's e-mail + token, say)."""

    id: str
    label: str
    secret: bool = True


@dataclass(frozen=True)
class Validation:
    """How a pasted key is checked upstream before it is stored (reference §7.4).

    `mcp_initialize`: validate with an MCP `initialize` POST to `url` (None = the MCP URL).
    """

    url: str | None
    method: str = "GET"
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    expect_status: int = 200
    mcp_initialize: bool = False


@dataclass(frozen=True)
class AuthMode:
    """A way of presenting an API key (Atlassian `personal` vs `service_account`).

    `assemble` names how the fields become the key (implemented by the upstream-services code,
    e.g. "atlassian_basic"); None means the single field's value is the key.
    """

    id: str
    label: str
    instructions: str = ""
    fields: tuple[ApiKeyField, ...] = ()
    injection: Injection | None = None
    proxy_injection: Injection | None = None
    assemble: str | None = None


@dataclass(frozen=True)
class Application:
    """What an API-key connection is for (Atlassian Jira/Confluence/Compass); advisory."""

    id: str
    label: str


@dataclass(frozen=True)
class ApiKeyConfig:
    """API-key support: injection for validation, optional separate injection for proxying."""

    injection: Injection
    proxy_injection: Injection | None = None
    validate: Validation | None = None
    instructions: str = ""
    fields: tuple[ApiKeyField, ...] = (ApiKeyField("api_key", "API key"),)
    auth_modes: tuple[AuthMode, ...] = ()
    applications: tuple[Application, ...] = ()

    def mode(self, mode_id: str | None) -> AuthMode | None:
        return next((m for m in self.auth_modes if m.id == mode_id), None)

    def proxy_injection_for(self, mode_id: str | None) -> Injection:
        """mode's proxy injection ?? mode's injection ?? service proxy ?? service (ref §2.3)."""
        mode = self.mode(mode_id)
        if mode is not None:
            if mode.proxy_injection is not None:
                return mode.proxy_injection
            if mode.injection is not None:
                return mode.injection
        return self.proxy_injection or self.injection

    def public(self) -> dict[str, Any]:
        def fields(items: tuple[ApiKeyField, ...]) -> list[dict[str, Any]]:
            return [{"id": f.id, "label": f.label, "secret": f.secret} for f in items]

        return {
            "instructions": self.instructions,
            "fields": fields(self.fields),
            "auth_modes": [
                {
                    "id": m.id,
                    "label": m.label,
                    "instructions": m.instructions,
                    "fields": fields(m.fields),
                }
                for m in self.auth_modes
            ],
            "applications": [{"id": a.id, "label": a.label} for a in self.applications],
        }


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth support. Endpoints None with `discover` true: RFC 9728 → RFC 8414 discovery.

    `dcr`: the client registers itself (RFC 7591) at `register_url` (or the discovered one) as
    a public client; otherwise `client_id` is a static app from the environment or the database.
    """

    authorize_url: str | None = None
    token_url: str | None = None
    register_url: str | None = None
    scopes: tuple[str, ...] = ()
    pkce: bool = True
    dcr: bool = False
    discover: bool = False
    client_id: str | None = None
    client_secret_source: Literal["env", "stored"] | None = None
    resource: bool = True
    extra_authorize_params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    requires_refresh: bool = True
    refresh_interval: int | None = None  # seconds between proactive refreshes, if fixed
    # Where to revoke a grant when a member is offboarded (DESIGN §15): an RFC 7009 endpoint,
    # or "github" for GitHub's own grant-deletion call; None with `discover`: the discovered
    # metadata's `revocation_endpoint`.
    revoke_url: str | None = None
    injection: Injection = BEARER

    @property
    def configured(self) -> bool:
        """Usable now: a static client id, or self-registration / discovery."""
        return bool(self.client_id) or self.dcr or self.discover

    @property
    def token_endpoint_auth(self) -> Literal["client_secret_post", "none"]:
        return "client_secret_post" if self.client_secret_source else "none"


@dataclass(frozen=True)
class ServiceDefinition:
    """One upstream MCP service, built-in or admin-added."""

    id: str
    name: str
    mcp_url: str
    transport: Transport = "streamable-http"
    builtin: bool = False
    oauth: OAuthConfig | None = None
    api_key: ApiKeyConfig | None = None
    no_auth: bool = False
    # "http_get_not_supported" (a 405 on GET is expected), "keepalive_session_id_missing".
    expected_errors: frozenset[str] = frozenset()
    # The provider's page where a member sees and revokes the apps and keys they authorized
    # (shown for what the appliance cannot revoke itself).
    authorized_apps_url: str | None = None
    # The admin's tool policy (DESIGN §13); not part of `endpoint_fingerprint`: it moves no
    # credential, so changing it flags no connection.
    policy: ToolPolicy | None = None

    @property
    def auth_types(self) -> tuple[AuthType, ...]:
        kinds: list[AuthType] = []
        if self.oauth is not None:
            kinds.append("oauth")
        if self.api_key is not None:
            kinds.append("api_key")
        if self.no_auth:
            kinds.append("none")
        return tuple(kinds)

    def supports(self, auth_type: str) -> bool:
        return auth_type in self.auth_types

    def injection_for(self, auth_type: str, auth_mode: str | None = None) -> Injection | None:
        """How a connection's secret goes upstream; None = nothing (auth none, unsupported)."""
        if auth_type == "oauth" and self.oauth is not None:
            return self.oauth.injection
        if auth_type == "api_key" and self.api_key is not None:
            return self.api_key.proxy_injection_for(auth_mode)
        return None

    def expects(self, category: str, *, upstream_status: int | None, detail: str = "") -> bool:
        """True when a failure is normal for this service (reference §7.5)."""
        if category == "upstream_error" and upstream_status == 405:
            return "http_get_not_supported" in self.expected_errors and detail.endswith(":get")
        if category == "transient_error":
            return (
                "keepalive_session_id_missing" in self.expected_errors
                and "No MCP session ID" in detail
            )
        return False

    def public(self) -> dict[str, Any]:
        """The admin API's read-back (DESIGN §5): never a secret."""
        auth: dict[str, Any] = {"types": list(self.auth_types)}
        if self.oauth is not None:
            o = self.oauth
            auth["oauth"] = {
                "authorization_url": o.authorize_url,
                "token_url": o.token_url,
                "registration_url": o.register_url,
                "scopes": list(o.scopes),
                "pkce": o.pkce,
                "dcr": o.dcr,
                "discover": o.discover,
                "client_id": o.client_id,
                "client_secret_set": o.client_secret_source is not None,
                "client_secret_source": o.client_secret_source,
            }
        if self.api_key is not None:
            auth["api_key"] = self.api_key.proxy_injection_for(None).public()
        return {
            "id": self.id,
            "name": self.name,
            "builtin": self.builtin,
            "transport": self.transport,
            "mcp_url": self.mcp_url,
            "auth": auth,
            "oauth_configured": self.oauth is not None and self.oauth.configured,
            "api_key": self.api_key.public() if self.api_key is not None else None,
            "policy": self.policy.public() if self.policy is not None else None,
        }


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


def _builtin_table() -> Mapping[str, ServiceDefinition]:
    # Imported here: builtins.py builds its data from the types above.
    from bindify_appliance.services.builtins import BUILTINS

    return BUILTINS


def _apply_overrides(
    base: ServiceDefinition, settings: Settings, row: Service | None
) -> ServiceDefinition:
    """A built-in with its `BINDIFY_{SERVICE}_*` overrides and stored OAuth app applied."""

    def env(name: str) -> str | None:
        return settings.service_setting(base.id, name)

    mcp_url = env("mcp_url") or base.mcp_url
    api_key = base.api_key
    if api_key is not None and api_key.validate is not None:
        validate = api_key.validate
        if env("validate_url"):
            validate = dataclasses.replace(validate, url=env("validate_url"))
        elif validate.mcp_initialize:
            validate = dataclasses.replace(validate, url=validate.url or mcp_url)
        api_key = dataclasses.replace(api_key, validate=validate)
    oauth = base.oauth
    if oauth is not None:
        client_id = env("client_id") or (row.oauth_client_id if row is not None else None)
        source: Literal["env", "stored"] | None = None
        if env("client_secret"):
            source = "env"
        elif row is not None and row.oauth_client_secret_sealed:
            source = "stored"
        oauth = dataclasses.replace(
            oauth,
            authorize_url=env("authorize_url") or oauth.authorize_url,
            token_url=env("token_url") or oauth.token_url,
            register_url=env("register_url") or oauth.register_url,
            client_id=client_id or None,
            client_secret_source=source if not oauth.dcr else None,
        )
    policy = load_policy(row.policy_json) if row is not None else None
    return dataclasses.replace(base, mcp_url=mcp_url, api_key=api_key, oauth=oauth, policy=policy)


def _admin_definition(row: Service) -> ServiceDefinition:
    """The definition of an admin-added row; `ValueError` when the row is damaged."""
    spec = service_rows.spec_from_row(row)
    auth = spec.auth
    kind = auth["type"]
    oauth: OAuthConfig | None = None
    api_key: ApiKeyConfig | None = None
    if kind == "oauth":
        explicit = "authorization_url" in auth
        oauth = OAuthConfig(
            authorize_url=auth.get("authorization_url"),
            token_url=auth.get("token_url"),
            register_url=auth.get("registration_url"),
            scopes=tuple(auth.get("scopes", ())),
            pkce=True,  # OAuth 2.1 / MCP authorization: always PKCE for servers we discover
            dcr=spec.client_id is None,
            discover=not explicit,
            client_id=spec.client_id,
            client_secret_source="stored" if row.oauth_client_secret_sealed else None,
            resource=bool(auth.get("resource", True)),
            extra_authorize_params=MappingProxyType(dict(auth.get("extra_authorize_params", {}))),
        )
    elif kind == "api_key":
        injection = (
            Injection(header=auth["header"], prefix=auth.get("prefix", ""))
            if "header" in auth
            else Injection(query=auth["query"])
        )
        api_key = ApiKeyConfig(
            injection=injection,
            validate=Validation(url=spec.mcp_url, method="POST", mcp_initialize=True),
            instructions=f"Paste the API key or token {spec.name} issued to you.",
        )
    transport: Transport = "sse" if spec.transport == "sse" else "streamable-http"
    return ServiceDefinition(
        id=spec.id,
        name=spec.name,
        mcp_url=spec.mcp_url,
        transport=transport,
        builtin=False,
        oauth=oauth,
        api_key=api_key,
        no_auth=kind == "none",
        policy=load_policy(row.policy_json),
    )


def _unsaved_row(spec: service_rows.ServiceSpec, sealed_secret: object) -> Service:
    """The row `spec` will be stored as (not saved), to build its definition before the write."""
    return Service(
        id=spec.id,
        name=spec.name,
        mcp_url=spec.mcp_url,
        transport=spec.transport,
        auth_json=json.dumps(dict(spec.auth), separators=(",", ":"), sort_keys=True),
        oauth_client_id=spec.client_id,
        oauth_client_secret_sealed=sealed_secret if isinstance(sealed_secret, str) else None,
        builtin=False,
    )


def _injected_names(definitions: Iterable[ServiceDefinition]) -> set[str]:
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
                self._checked.set()
        return moved

    def _moved(self) -> None:
        for callback in self._on_moved:
            callback()
        self.invalidate()

    async def _ready(self) -> None:
        if self._checked is not None and not self._checked.is_set():
            await self._checked.wait()

    # -- reading ---------------------------------------------------------------------------

    async def get(self, service_id: str) -> ServiceDefinition | None:
        """The definition of `service_id`, or None when no such service exists."""
        if not isinstance(service_id, str) or not service_rows.SERVICE_ID_RE.fullmatch(service_id):
            return None
        await self._ready()
        snapshot = self._snapshot
        if snapshot is None or snapshot.expires <= self._clock.monotonic():
            snapshot = await self._refresh()
        return snapshot.definitions.get(service_id)

    async def list(self) -> list[ServiceDefinition]:
        """Built-ins in their fixed order, then admin-added services by id."""
        await self._ready()
        snapshot = self._snapshot
        if snapshot is None or snapshot.expires <= self._clock.monotonic():
            snapshot = await self._refresh()
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
        for sid, base in _builtin_table().items():
            row = by_id.get(sid)
            definitions[sid] = _apply_overrides(base, self._settings, row)
            order.append(sid)
            if row is not None and row.oauth_client_secret_sealed:
                sealed[sid] = (row.oauth_client_secret_sealed, row.oauth_key_fingerprint)
        for row in rows:
            if row.builtin or row.id in definitions:
                continue
            try:
                definitions[row.id] = _admin_definition(row)
            except (ValueError, KeyError, TypeError):
                log.warning("service row is damaged; skipped", extra={"service": row.id})
                continue
            order.append(row.id)
            if row.oauth_client_secret_sealed:
                sealed[row.id] = (row.oauth_client_secret_sealed, row.oauth_key_fingerprint)
        # Before any request of these services can log: their header/query names get the
        # scrubber's `Authorization` treatment (DESIGN §9).
        add_secret_names(_injected_names(definitions.values()))
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
        spec = service_rows.parse_service_body(
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
        endpoints = endpoint_fingerprint(_admin_definition(_unsaved_row(spec, sealed)))
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
                    service_rows.parse_builtin_patch(rest)  # refuse a bad rest before writing
            else:
                row = await self._store.run(service_rows.get_service, service_id)
                if row is None or row.builtin:
                    raise HTTPFacingError("service not found", status=404, code="not_found")
                service_rows.parse_service_patch(
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
            client_id, secret = service_rows.parse_builtin_patch(body)
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
            raise HTTPFacingError("service not found", status=404, code="not_found")
        current = service_rows.spec_from_row(row)
        spec = service_rows.parse_service_patch(
            body, current, allow_private=self._settings.allow_private_upstreams
        )
        sealed, fp = self._seal_secret(service_id, spec.client_secret, keyring)
        if spec.auth_type != "oauth":
            sealed = None
        try:
            baseline: str | None = endpoint_fingerprint(_admin_definition(row))
        except (ValueError, KeyError, TypeError):
            baseline = None  # a damaged row: the stored fingerprint (if any) decides
        kept = (
            row.oauth_client_secret_sealed if isinstance(sealed, service_rows.KeepType) else sealed
        )
        endpoints = endpoint_fingerprint(_admin_definition(_unsaved_row(spec, kept)))
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
            raise HTTPFacingError("built-in services cannot be deleted", status=400, field="id")
        await self._store.run(service_rows.delete_service, service_id)
        self.invalidate()

    async def _reloaded(self, service_id: str) -> ServiceDefinition:
        self.invalidate()
        definition = await self.get(service_id)
        if definition is None:  # pragma: no cover - just written
            raise StoreError(f"service {service_id!r} vanished after being written")
        return definition
