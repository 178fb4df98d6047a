"""Peewee models: the tables every area of the appliance reads and writes.

Table and column names here are the contract other modules (and migrations) code against.
The models are data-only; per-area modules (`store/users.py`, `store/connections.py`, …) hold
the queries and rules.

Invariants:
- Ids are UUID4 strings (`new_id()`), except where a table says otherwise (slugs for services,
  sha256 hex for sessions and setup tokens, an integer for events and the setup lock).
- Every timestamp is UTC text in exactly one form, `YYYY-MM-DDTHH:MM:SSZ` (`clock.iso`), written
  by `UtcTimestampField`, which refuses naive datetimes and reads back aware UTC datetimes.
  One format means text comparison in SQL is chronological comparison (hosted quirk Q16).
  Sub-second precision is dropped on write.
- E-mail addresses are stored lower-case (`LowercaseTextField` also lower-cases the right-hand
  side of comparisons, so `User.email == "A@B"` finds `a@b`).
- Models reach the database only through `database_proxy` (`store/fields.py`), so the
  same classes serve SQLite and PostgreSQL. Schema changes go through a new migration file;
  `migrations/` never imports this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import peewee
from peewee import (
    AutoField,
    BooleanField,
    ForeignKeyField,
    IntegerField,
    TextField,
)

from bindify_appliance.store.account_models import (
    Invite,
    OidcIdentity,
    PersonalToken,
    Session,
    SetupState,
    SetupToken,
    User,
)
from bindify_appliance.store.fields import (
    BaseModel,
    LowercaseTextField,
    UtcTimestampField,
    bind,
    database_proxy,
    new_id,
)

__all__ = [
    "ALL_MODELS",
    "AUTH_TYPES",
    "CONNECTION_STATUSES",
    "DISABLED_BY",
    "JOB_OUTCOMES",
    "KEY_STORAGE_MODES",
    "MAIL_KINDS",
    "ROLES",
    "TRANSPORTS",
    "AuditEntry",
    "AuditFailureCount",
    "BaseModel",
    "BillingAccount",
    "BillingEvent",
    "Connection",
    "ConnectionEvent",
    "DcrRegistration",
    "Instance",
    "Invite",
    "JobRun",
    "LowercaseTextField",
    "MailOutbox",
    "OAuthClientRecord",
    "OAuthGrant",
    "OAuthToken",
    "OidcIdentity",
    "PersonalToken",
    "Service",
    "ServiceEndpoints",
    "Session",
    "Setting",
    "SetupState",
    "SetupToken",
    "User",
    "UtcTimestampField",
    "bind",
    "database_proxy",
    "new_id",
]


# Vocabularies of the text columns that hold one of a few values (not enforced by the schema,
# so adding a value never needs a table rebuild on SQLite).
ROLES: Final = ("admin", "member")
TRANSPORTS: Final = ("streamable-http", "sse")
CONNECTION_STATUSES: Final = ("active", "needs_reconnect", "disabled", "suspended")
DISABLED_BY: Final = ("admin", "owner")
AUTH_TYPES: Final = ("oauth", "api_key", "none")
KEY_STORAGE_MODES: Final = ("zero_knowledge", "managed")
JOB_OUTCOMES: Final = ("ok", "error", "skipped", "running")
MAIL_KINDS: Final = ("invite", "reconnect", "job_failing")
SETUP_STATE_ID: Final = 1

# -- services and connections ---------------------------------------------------------------


class Service(BaseModel):
    """Admin-added services, and admin-stored OAuth app credentials of built-in services.

    A built-in row (`builtin` true) carries only the oauth_* columns; name, mcp_url and auth_json
    are NULL there. `auth_json` never holds a secret; the client secret is sealed.
    """

    id = TextField(primary_key=True)  # slug ^[a-z][a-z0-9-]{1,31}$
    name = TextField(null=True)
    mcp_url = TextField(null=True)
    transport = TextField(default="streamable-http")  # TRANSPORTS
    auth_json = TextField(null=True)
    oauth_client_id = TextField(null=True)
    oauth_client_secret_sealed = TextField(null=True)
    oauth_key_fingerprint = TextField(default="")
    builtin = BooleanField(default=False)
    created_at = UtcTimestampField()
    updated_at = UtcTimestampField()
    # The admin's tool policy (DESIGN §13) as JSON, NULL = none (proxy/policy.py).
    policy_json = TextField(null=True)

    class Meta:
        table_name = "services"


class Connection(BaseModel):
    """A member's link to one upstream service; secrets are never stored in the clear.

    `secret1_hash` is the lookup key; `token_generation` is the compare-and-swap counter for
    token writes; `refresh_started_at` marks a refresh in flight (DESIGN §8).
    """

    id = TextField(primary_key=True, default=new_id)
    user = ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    service = TextField(index=True)
    if TYPE_CHECKING:
        user_id: str
    label = TextField(null=True)
    status = TextField(default="active")  # CONNECTION_STATUSES
    auth_type = TextField()  # AUTH_TYPES
    auth_mode = TextField(null=True)
    application = TextField(null=True)
    key_storage_mode = TextField()  # KEY_STORAGE_MODES
    secret1_hash = TextField(unique=True)
    secret2_verifier = TextField(null=True)
    encrypted_tokens = TextField(null=True)
    key_fingerprint = TextField(default="", index=True)
    token_generation = IntegerField(default=0)
    token_expires_at = UtcTimestampField(null=True)
    refresh_started_at = UtcTimestampField(null=True)
    needs_reconnect_at = UtcTimestampField(null=True)
    needs_reconnect_reason = TextField(null=True)
    disabled_at = UtcTimestampField(null=True)
    created_at = UtcTimestampField()
    updated_at = UtcTimestampField()
    last_used_at = UtcTimestampField(null=True)
    last_refreshed_at = UtcTimestampField(null=True)
    # Who disabled it (DISABLED_BY) while `disabled_at` is set: an owner cannot undo an admin's.
    disabled_by = TextField(null=True)
    # When its member was last told by e-mail that it needs reconnecting (at most daily).
    reconnect_notified_at = UtcTimestampField(null=True)
    # The member's narrowing of the service's tool policy (DESIGN §13), NULL = none.
    policy_json = TextField(null=True)
    # Set while billing keeps it suspended (beyond the member's allowance, DESIGN §11).
    billing_suspended_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "connections"


class ServiceEndpoints(BaseModel):
    """The last recorded fingerprint of where each service's credentials go (DESIGN §9).

    Compared at start (built-ins' `BINDIFY_{SERVICE}_*` overrides) and on an admin's PATCH; a
    change flags the service's connections for reconnecting. Holds no secret, only digests.
    """

    service_id = TextField(primary_key=True)
    fingerprint = TextField()
    updated_at = UtcTimestampField()

    class Meta:
        table_name = "service_endpoints"


class ConnectionEvent(BaseModel):
    """Metadata-only history of a connection (never a payload). Orphans have no connection."""

    id = AutoField()
    # The composite indexes below lead with connection_id, so no single-column index.
    connection = ForeignKeyField(
        Connection, column_name="connection_id", null=True, on_delete="CASCADE", index=False
    )
    if TYPE_CHECKING:
        connection_id: str | None
    user_id = TextField(null=True)
    event_type = TextField()
    category = TextField()
    detail = TextField(null=True)
    upstream_status = IntegerField(null=True)
    created_at = UtcTimestampField()

    class Meta:
        table_name = "connection_events"
        indexes = (
            (("connection", "created_at"), False),
            (("connection", "event_type", "category", "created_at"), False),
        )


class DcrRegistration(BaseModel):
    """Dynamic client registrations per (service, issuer); the registration JSON is sealed."""

    id = TextField(primary_key=True, default=new_id)
    service = TextField()  # indexed by the unique (service, issuer) index
    issuer = TextField()
    registration_sealed = TextField()
    key_fingerprint = TextField()
    client_id_expires_at = UtcTimestampField(null=True)
    created_at = UtcTimestampField()
    updated_at = UtcTimestampField()

    class Meta:
        table_name = "dcr_registrations"
        indexes = ((("service", "issuer"), True),)


# -- operations -----------------------------------------------------------------------------


class Setting(BaseModel):
    key = TextField(primary_key=True)
    value = TextField()
    updated_at = UtcTimestampField()

    class Meta:
        table_name = "settings"


class Instance(BaseModel):
    """One row per running process; records the master-key fingerprints it holds (JSON list)."""

    id = TextField(primary_key=True, default=new_id)
    hostname = TextField()
    pid = IntegerField()
    version = TextField()
    started_at = UtcTimestampField()
    heartbeat_at = UtcTimestampField()
    key_fingerprints = TextField(default="[]")

    class Meta:
        table_name = "instances"


class JobRun(BaseModel):
    name = TextField(primary_key=True)
    last_started_at = UtcTimestampField()
    last_finished_at = UtcTimestampField(null=True)
    duration_ms = IntegerField(null=True)
    outcome = TextField()  # JOB_OUTCOMES
    detail = TextField(null=True)
    # Failed runs since the last success ("skipped" runs change nothing), and when admins were
    # told about this streak (cleared by a success), for the failing-job e-mail.
    consecutive_failures = IntegerField(default=0)
    failure_notified_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "job_runs"


class AuditEntry(BaseModel):
    """One audit-trail entry (metadata only; see `bindify_appliance.audit`). `at` is plain text:
    the exact string the row's MAC covers. `seq` is assigned by the appender, gap-free."""

    seq = IntegerField(primary_key=True)
    at = TextField(index=True)
    actor_type = TextField()
    actor_id = TextField(null=True, index=True)
    actor_email = TextField(null=True)
    action = TextField(index=True)
    target_type = TextField(null=True)
    target_id = TextField(null=True, index=True)
    ip = TextField(null=True)
    outcome = TextField()
    detail = TextField(default="{}")
    key_fp = TextField(default="")
    mac = TextField(default="")

    class Meta:
        table_name = "audit_log"


class MailOutbox(BaseModel):
    """E-mails waiting to be sent, or given up on (DESIGN §15); sent rows are kept a week.

    `message_sealed` (recipient, subject, body) is sealed under the active master key, bound to
    the row id: an invite's body holds its one-time link. A row is claimed by one sender at a
    time (`claimed_by`/`claimed_until`, compare-and-swap); after `MAX_ATTEMPTS` failures, or a
    permanent refusal, `failed_at` and `last_error` record the end.
    """

    id = TextField(primary_key=True, default=new_id)
    kind = TextField()  # MAIL_KINDS
    message_sealed = TextField()
    key_fingerprint = TextField()
    created_at = UtcTimestampField()
    attempts = IntegerField(default=0)
    next_attempt_at = UtcTimestampField(index=True)
    claimed_by = TextField(null=True)
    claimed_until = UtcTimestampField(null=True)
    sent_at = UtcTimestampField(null=True)
    failed_at = UtcTimestampField(null=True)
    last_error = TextField(null=True)

    class Meta:
        table_name = "mail_outbox"


class AuditFailureCount(BaseModel):
    """Failed sign-ins naming no account, per client address and hour, until the hour ends and
    the count becomes one `login.failure_count` audit entry (then the row is deleted)."""

    window_start = TextField()  # `YYYY-MM-DDTHH:00:00Z`, the exact text the entry carries
    address = TextField()
    failures = IntegerField(default=0)

    class Meta:
        table_name = "audit_failure_counts"
        primary_key = peewee.CompositeKey("window_start", "address")


# -- the OAuth authorization server (DESIGN §10) ---------------------------------------------


class OAuthClientRecord(BaseModel):
    """A client registered with `POST /oauth/register`; its secret (if any) only as a hash."""

    id = TextField(primary_key=True)  # the client_id, `bndc_…`
    issuer = TextField()  # the base URL it was registered under; another issuer never finds it
    client_name = TextField()
    redirect_uris = TextField()  # JSON array
    auth_method = TextField()  # none | client_secret_basic | client_secret_post
    secret_hash = TextField(null=True)
    # Public clients: a hash of issuer + registration, so identical registrations share a row.
    fingerprint = TextField(null=True, unique=True)
    created_at = UtcTimestampField(index=True)
    used_at = UtcTimestampField(null=True)  # first grant; NULL rows expire after 24 h

    class Meta:
        table_name = "oauth_clients"


class OAuthGrant(BaseModel):
    """A client's access to one connection; its tokens go with it (cascade)."""

    id = TextField(primary_key=True, default=new_id)
    issuer = TextField()
    client_id = TextField()
    client_name = TextField()
    connection = ForeignKeyField(Connection, column_name="connection_id", on_delete="CASCADE")
    user = ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    if TYPE_CHECKING:
        connection_id: str
        user_id: str
    service = TextField()
    resource = TextField(null=True)
    created_at = UtcTimestampField()
    expires_at = UtcTimestampField()
    last_used_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "oauth_grants"


class OAuthToken(BaseModel):
    """An access (`bndat_`) or refresh (`bndrt_`) token, by hash; `opener_sealed` is what opens
    a zero-knowledge connection, sealed under a key derived from the token itself."""

    token_hash = TextField(primary_key=True)
    grant = ForeignKeyField(OAuthGrant, column_name="grant_id", on_delete="CASCADE")
    if TYPE_CHECKING:
        grant_id: str
    kind = TextField()  # access | refresh
    opener_sealed = TextField(null=True)
    expires_at = UtcTimestampField(index=True)
    used_at = UtcTimestampField(null=True)  # a refresh token's rotation; reuse ends the grant

    class Meta:
        table_name = "oauth_tokens"


# -- billing (DESIGN §11) -----------------------------------------------------------------------


class BillingAccount(BaseModel):
    """A member's billing state (DESIGN §11), created when billing first sees them.

    `state_at` is the Stripe time of the subscription state stored: an event older than it
    changes nothing. `subscribed_at` set = the member left the trial for good.
    """

    user = ForeignKeyField(User, column_name="user_id", primary_key=True, on_delete="CASCADE")
    if TYPE_CHECKING:
        user_id: str
    customer_id = TextField(null=True, unique=True)
    subscription_id = TextField(null=True)
    subscription_status = TextField(null=True)
    quantity = IntegerField(default=0)
    current_period_end = UtcTimestampField(null=True)
    cancel_at = UtcTimestampField(null=True)
    past_due_since = UtcTimestampField(null=True)
    subscribed_at = UtcTimestampField(null=True)
    trial_ends_at = UtcTimestampField()
    state_at = UtcTimestampField(null=True)
    created_at = UtcTimestampField()
    updated_at = UtcTimestampField()

    class Meta:
        table_name = "billing_accounts"


class BillingEvent(BaseModel):
    """One Stripe event id, once (the primary key is the exactly-once guard); metadata only."""

    id = TextField(primary_key=True)
    type = TextField()
    created_at = UtcTimestampField()
    received_at = UtcTimestampField(index=True)
    outcome = TextField()  # BILLING_OUTCOMES

    class Meta:
        table_name = "billing_events"


# Every model, in dependency order (a model comes after every model it references). Tests
# check each one's table against the migrations, so a model missing here escapes that check.
ALL_MODELS: Final[tuple[type[BaseModel], ...]] = (
    User,
    SetupToken,
    SetupState,
    Session,
    PersonalToken,
    Invite,
    OidcIdentity,
    Service,
    Connection,
    ServiceEndpoints,
    ConnectionEvent,
    DcrRegistration,
    Setting,
    Instance,
    JobRun,
    AuditEntry,
    MailOutbox,
    AuditFailureCount,
    OAuthClientRecord,
    OAuthGrant,
    OAuthToken,
    BillingAccount,
    BillingEvent,
)
