"""The whole exception tree of the appliance.

    BindifyError
    ├── ConfigError              invalid configuration; the message names the option
    ├── DataDirError             the data directory cannot be created, locked or read
    ├── StoreError               database problems
    │   ├── MigrationError       a migration failed or the migration set is inconsistent
    │   ├── SchemaTooNewError    the database records migrations this code does not know
    │   ├── ConflictError        a compare-and-swap or uniqueness rule refused a write
    │   │   └── LastAdminError   the change would leave no active administrator
    │   ├── AdminDisabledError   an owner may not undo an administrator's disable (403)
    │   ├── BadQueryError        a cursor or limit the store cannot use (400, `field`)
    │   └── NotFoundError        the row does not exist
    ├── KVError                  the key-value store refused or failed an operation
    │   └── KVFullError          the in-process store is at its size bound (never evicts silently)
    ├── CryptoError              encryption problems
    │   ├── DecryptError         a blob failed authentication; never carries partial plaintext
    │   ├── CredentialFormatError  a secret URL segment or API key is malformed
    │   └── KeyringError         master keys are missing, malformed, ambiguous or unknown
    ├── BackupError              a backup or restore was refused or failed
    ├── AuditChainError          `audit verify` found a broken, missing or rolled-back row
    ├── OidcError                single sign-on failed: discovery, code exchange or ID-token check
    ├── OutboundError            an outbound call failed (OAuth, discovery, validation); `reason`
    │   └── UnsafeDestinationError  the SSRF guard refused the destination
    ├── OAuthError               an upstream OAuth server refused or answered nonsense
    ├── MailError                sending e-mail failed or was refused; `permanent` says no retry
    ├── ProxyRefusal             the MCP proxy answers a request itself (DESIGN §6); `kind`
    ├── UpstreamError            an upstream MCP server could not be reached or broke a response
    ├── SSEError                 an upstream event stream cannot be relayed (event too large)
    └── HTTPFacingError          becomes an HTTP response; carries `status` and a safe message
        ├── InvalidRequest       400 invalid_request (+ `field`)
        │   ├── UnknownField     400 unknown_field
        │   └── InvalidJson      400 invalid_json
        ├── Unauthorized         401 unauthorized
        ├── Forbidden            403 forbidden
        │   └── CsrfFailed       403 csrf_failed
        ├── NotFound             404 not_found
        ├── Conflict             409 conflict
        ├── Unprocessable        422 (its code says what the upstream refused)
        │   ├── InvalidApiKey        422 invalid_api_key
        │   └── ApplicationMismatch  422 application_mismatch
        ├── RateLimited          429 rate_limited (+ `retry_after`)
        └── UpstreamFailed       502 upstream_error

`http_parts(exc)` is the one mapping from an error to what a response says about it.

Invariant: no message in this tree ever contains a secret (credential, key, token, password,
payload). Messages name the option, field or fingerprint involved, never the value.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = [
    "AdminDisabledError",
    "ApplicationMismatch",
    "AuditChainError",
    "BackupError",
    "BadQueryError",
    "BindifyError",
    "ConfigError",
    "Conflict",
    "ConflictError",
    "CredentialFormatError",
    "CryptoError",
    "CsrfFailed",
    "DataDirError",
    "DecryptError",
    "ErrorParts",
    "Forbidden",
    "HTTPFacingError",
    "InvalidApiKey",
    "InvalidJson",
    "InvalidRequest",
    "KVError",
    "KVFullError",
    "KeyringError",
    "LastAdminError",
    "MailError",
    "MigrationError",
    "NotFound",
    "NotFoundError",
    "OAuthError",
    "OidcError",
    "OutboundError",
    "ProxyRefusal",
    "RateLimited",
    "RefusalKind",
    "SSEError",
    "SchemaTooNewError",
    "StoreError",
    "Unauthorized",
    "UnknownField",
    "Unprocessable",
    "UnsafeDestinationError",
    "UpstreamError",
    "UpstreamFailed",
    "http_parts",
]


class BindifyError(Exception):
    """Root of every error the appliance raises on purpose."""


class ConfigError(BindifyError):
    """A configuration value is invalid; the message names the option."""


class DataDirError(BindifyError):
    """The data directory cannot be created, locked or used."""


class StoreError(BindifyError):
    """A database operation failed."""


class MigrationError(StoreError):
    """A migration failed or the migration files are inconsistent."""


class SchemaTooNewError(StoreError):
    """The database was migrated by newer code; refuse to touch it."""


class ConflictError(StoreError):
    """A compare-and-swap or uniqueness rule refused the write; nothing changed."""


class LastAdminError(ConflictError):
    """Demoting, disabling or deleting this user would leave no active administrator."""


class BadQueryError(StoreError):
    """A query argument the store cannot use (a damaged cursor, a limit out of range)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class AdminDisabledError(StoreError):
    """An owner tried to re-enable a connection an administrator disabled; nothing changed."""


class NotFoundError(StoreError):
    """The requested row does not exist."""


class KVError(BindifyError):
    """The key-value store failed an operation."""


class KVFullError(KVError):
    """The in-process store reached its size bound; the write was refused, nothing evicted."""


class CryptoError(BindifyError):
    """An encryption, decryption or key-handling operation failed."""


class DecryptError(CryptoError):
    """A sealed blob failed to open: wrong key, wrong row or field, or tampering."""


class CredentialFormatError(CryptoError):
    """A credential segment or API key is malformed."""


class KeyringError(CryptoError):
    """Master keys are missing, malformed, duplicated or do not match what is stored."""


class BackupError(BindifyError):
    """A backup or restore was refused or failed."""


class AuditChainError(BindifyError):
    """The audit trail's hash chain has a broken, missing or rolled-back row (names its seq)."""


class OidcError(BindifyError):
    """Single sign-on failed. The message names the step or check (never a token or claim value)."""


class OutboundError(BindifyError):
    """An outbound HTTP call failed: unreachable, timed out, too large, a refused redirect.

    `reason` is a short machine word (`unreachable`, `timeout`, `too_large`, `bad_url`,
    `redirect_refused`, `too_many_redirects`, `blocked`); messages name the host at most, never a
    path or query (either may carry a credential).
    """

    def __init__(self, message: str, *, reason: str = "unreachable") -> None:
        super().__init__(message)
        self.reason = reason


class UnsafeDestinationError(OutboundError):
    """The SSRF guard refused a destination (loopback, private, link-local, numeric tricks…)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="blocked")


class MailError(BindifyError):
    """Sending one e-mail failed or was refused (no STARTTLS, bad login, rejected recipient).

    `permanent` is True when trying again cannot help (the server refused for good, or our own
    rule refused the server); messages name the server's reply code at most, never the password,
    the recipient or the body.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class OAuthError(BindifyError):
    """An upstream authorization server refused a request or answered something unusable.

    `error` is the OAuth error code it sent (`invalid_grant`, …) or our own word
    (`invalid_response`, `server_error`); `status` the HTTP status when there was one. The
    message may quote the server's `error_description`, truncated, never a token.
    """

    def __init__(
        self, message: str, *, error: str = "invalid_response", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class HTTPFacingError(BindifyError):
    """An error meant to become an HTTP response.

    `status` is the HTTP status, `code` the machine-readable error code of the admin API
    (DESIGN §5), and the message is safe to show to the caller.
    """

    status: int = 400
    code: str = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after = retry_after  # seconds, sent as `Retry-After` (429s)

    @property
    def public_message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class _Answer(HTTPFacingError):
    """A member of the family: status and code are the class's, `field` may be positional."""

    def __init__(
        self, message: str, field: str | None = None, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message, field=field, retry_after=retry_after)


class InvalidRequest(_Answer):
    """400: the request is malformed; `field` names the offending input when there is one."""


class UnknownField(InvalidRequest):
    """400: the body carries a field the operation does not take."""

    code = "unknown_field"


class InvalidJson(InvalidRequest):
    """400: the body is empty or not JSON."""

    code = "invalid_json"


class Unauthorized(_Answer):
    """401: no credential, or one that does not authenticate."""

    status = 401
    code = "unauthorized"


class Forbidden(_Answer):
    """403: authenticated, but not allowed to do this."""

    status = 403
    code = "forbidden"


class CsrfFailed(Forbidden):
    """403: a cookie-authenticated change without this session's XSRF token."""

    code = "csrf_failed"


class NotFound(_Answer):
    """404: no such thing, or not the caller's (the same answer: no existence oracle)."""

    status = 404
    code = "not_found"


class Conflict(_Answer):
    """409: the current state refuses the change; nothing changed."""

    status = 409
    code = "conflict"


class Unprocessable(_Answer):
    """422: well-formed, but the upstream refused what it carries."""

    status = 422
    code = "unprocessable"


class InvalidApiKey(Unprocessable):
    """422: the upstream refused the API key."""

    code = "invalid_api_key"


class ApplicationMismatch(Unprocessable):
    """422: the key works, but not for the application chosen."""

    code = "application_mismatch"


class PayloadTooLarge(_Answer):
    """413: the body is over the route's cap; nothing of it was used."""

    status = 413
    code = "too_large"


class RateLimited(_Answer):
    """429: too many attempts; `retry_after` seconds go out as `Retry-After`."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)


class UpstreamFailed(_Answer):
    """502: an upstream the appliance called failed or answered nonsense."""

    status = 502
    code = "upstream_error"


class ErrorParts(NamedTuple):
    """What a response says about an error: status, machine code, safe message, field."""

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after: int | None = None


LAST_ADMIN_MESSAGE = "the last active administrator cannot be demoted, disabled or deleted"


def http_parts(exc: BaseException | None) -> ErrorParts | None:
    """The response parts of an error the appliance answers on purpose; None for any other
    (a bug or a framework error: the caller answers by status alone, never with its text).

    Store refusals that escape a handler are answers too: 404 and 409, never 500.
    """
    if isinstance(exc, HTTPFacingError):
        return ErrorParts(exc.status, exc.code, exc.public_message, exc.field, exc.retry_after)
    if isinstance(exc, LastAdminError):
        return ErrorParts(409, "last_admin", LAST_ADMIN_MESSAGE)
    if isinstance(exc, BadQueryError):
        return ErrorParts(400, "invalid_request", str(exc), exc.field)
    if isinstance(exc, AdminDisabledError):
        return ErrorParts(403, "forbidden", str(exc))
    if isinstance(exc, ConflictError):
        return ErrorParts(409, "conflict", str(exc))
    if isinstance(exc, NotFoundError):
        return ErrorParts(404, "not_found", str(exc))
    return None


# Refusal kinds and the DESIGN §6 table row each maps to (`proxy/jsonrpc.py` renders them).
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


class ProxyRefusal(BindifyError):
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


class UpstreamError(BindifyError):
    """The upstream could not be reached, reset the connection or timed out; `reason` is a
    category, never the URL (its query may carry an API key) or a header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SSEError(BindifyError):
    """The upstream's event stream cannot be relayed (an event exceeds the size limit)."""
