"""The parameters of `GET /oauth/authorize`, checked (DESIGN §10).

Two kinds of refusal, because a redirect to a URI nobody vouched for is an open redirector:
- before the client and its redirect URI are verified (missing or unknown client, missing,
  repeated or unregistered redirect URI): `Refusal(redirectable=False)`, shown as a page;
- after: `Refusal(redirectable=True)`, sent back to the client's redirect URI as
  `error=…&error_description=…&state=…&iss=…` (RFC 6749 §4.1.2.1, RFC 9207).

Invariants: PKCE S256 is required (`plain`, or a challenge without a method, is refused); a
`resource`, when sent, names one of the appliance's own `/mcp/{service}` endpoints; no
parameter may be sent twice; no refusal message contains a parameter's value.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode, urlsplit

__all__ = [
    "AuthorizeParams",
    "Refusal",
    "check_params",
    "error_redirect",
    "read_query",
    "service_of_resource",
    "success_redirect",
]

# RFC 7636 §4.2: 43 to 128 characters of the unreserved set (S256 always gives 43).
_CHALLENGE: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
MAX_STATE: Final = 1024
MAX_CLIENT_ID: Final = 512
MAX_REDIRECT_URI: Final = 2048
_SINGLE: Final = (
    "client_id",
    "redirect_uri",
    "response_type",
    "code_challenge",
    "code_challenge_method",
    "state",
    "resource",
    "scope",
)


class Refusal(Exception):
    """An authorize request refused; `message` is fixed text, safe to show."""

    def __init__(self, error: str, message: str, *, redirectable: bool) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.redirectable = redirectable


@dataclass(frozen=True)
class AuthorizeParams:
    """A checked request: what the consent page and the code need."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    state: str | None
    resource: str | None
    service: str | None  # the service `resource` names; None: the member picks among all


def read_query(arguments: Mapping[str, Sequence[bytes]]) -> dict[str, str]:
    """Tornado's `query_arguments` as single values; a repeated client or redirect URI is a
    page refusal, another repeated parameter a redirectable one (checked later)."""
    out: dict[str, str] = {}
    repeated: list[str] = []
    for name in _SINGLE:
        values = arguments.get(name) or []
        if len(values) > 1:
            repeated.append(name)
        if values:
            out[name] = values[0].decode("utf-8", "replace")
    if "client_id" in repeated or "redirect_uri" in repeated:
        raise Refusal(
            "invalid_request",
            "The client sent its identity or return address twice.",
            redirectable=False,
        )
    if repeated:
        out["_repeated"] = ",".join(repeated)
    return out


def client_and_redirect(query: Mapping[str, str]) -> tuple[str, str]:
    """`client_id` and `redirect_uri`, present and of sane size (page refusals otherwise)."""
    client_id = query.get("client_id", "")
    if not client_id or len(client_id) > MAX_CLIENT_ID:
        raise Refusal(
            "invalid_request",
            "The application did not say who it is (client_id).",
            redirectable=False,
        )
    redirect_uri = query.get("redirect_uri", "")
    if not redirect_uri or len(redirect_uri) > MAX_REDIRECT_URI:
        raise Refusal(
            "invalid_request",
            "The application did not say where to send you back (redirect_uri).",
            redirectable=False,
        )
    return client_id, redirect_uri


def service_of_resource(resource: str, base_url: str, services: Collection[str]) -> str | None:
    """The service of `{base}/mcp/{service}` (one trailing slash tolerated); None otherwise."""
    prefix = base_url.rstrip("/") + "/mcp/"
    if not resource.startswith(prefix):
        return None
    name = resource[len(prefix) :]
    if name.endswith("/"):
        name = name[:-1]
    return name if name in services else None


def check_params(
    query: Mapping[str, str], *, base_url: str, services: Collection[str]
) -> AuthorizeParams:
    """The request's remaining parameters (redirectable refusals); the client and redirect URI
    must already be verified by the caller."""
    client_id, redirect_uri = client_and_redirect(query)
    if query.get("_repeated"):
        raise Refusal("invalid_request", "A parameter was sent twice.", redirectable=True)
    if query.get("response_type") != "code":
        raise Refusal(
            "unsupported_response_type",
            "Only the authorization code flow (response_type=code) is supported.",
            redirectable=True,
        )
    challenge = query.get("code_challenge", "")
    method = query.get("code_challenge_method", "")
    if not challenge:
        raise Refusal(
            "invalid_request", "PKCE is required (code_challenge with S256).", redirectable=True
        )
    if method != "S256":
        raise Refusal(
            "invalid_request",
            "Only the S256 code challenge method is accepted (plain is not).",
            redirectable=True,
        )
    if _CHALLENGE.fullmatch(challenge) is None:
        raise Refusal("invalid_request", "The code challenge is malformed.", redirectable=True)
    state = query.get("state")
    if state is not None and len(state) > MAX_STATE:
        raise Refusal("invalid_request", "The state parameter is too long.", redirectable=True)
    resource = query.get("resource") or None
    service = None
    if resource is not None:
        service = service_of_resource(resource, base_url, services)
        if service is None:
            raise Refusal(
                "invalid_target",
                "The requested resource is not one of this appliance's MCP endpoints.",
                redirectable=True,
            )
    return AuthorizeParams(
        client_id=client_id,
        redirect_uri=redirect_uri,
        code_challenge=challenge,
        state=state,
        resource=resource,
        service=service,
    )


def _with_query(redirect_uri: str, fields: dict[str, str]) -> str:
    parts = urlsplit(redirect_uri)
    joiner = "&" if parts.query else "?"
    base = redirect_uri.split("#", 1)[0]  # a fragment never carries the answer
    return base + joiner + urlencode(fields)


def error_redirect(
    redirect_uri: str, error: str, description: str, state: str | None, issuer: str
) -> str:
    """The client's redirect URI carrying an error (with `state` and `iss`)."""
    fields = {"error": error, "error_description": description}
    if state is not None:
        fields["state"] = state
    fields["iss"] = issuer
    return _with_query(redirect_uri, fields)


def success_redirect(redirect_uri: str, code: str, state: str | None, issuer: str) -> str:
    """The client's redirect URI carrying the code (with `state` and `iss`)."""
    fields = {"code": code}
    if state is not None:
        fields["state"] = state
    fields["iss"] = issuer
    return _with_query(redirect_uri, fields)
