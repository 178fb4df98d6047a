"""The tool-policy form of the service and connection pages (DESIGN §13), form ↔ policy.

The form has two textareas (`allow`, `deny`: one glob per line), a `read_only` checkbox and
two submit buttons (`action` = `save` | `clear`). It is turned into the API's JSON shape and
validated by the one validator, `proxy.policy.parse_policy` (directly, or inside
`ServiceRegistry.update`): this module adds no rule of its own, it only splits lines and words
the validator's errors for a person.

Invariants:
- Blank lines and the spaces around each line are dropped; nothing else is changed (a glob
  that is too long or holds a control character is refused, never cut or cleaned).
- Saving an empty form (no globs, not read-only) clears the policy: an empty policy means
  "every tool", and a connection without one pays nothing in the proxy.
- Error messages name the list, never echo a glob.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.errors import HTTPFacingError, InvalidRequest
from bindify_appliance.proxy.policy import MAX_GLOB, MAX_GLOBS, ToolPolicy

__all__ = ["form_fields", "policy_from_form", "policy_message"]

# Room for a full list (MAX_GLOBS lines of MAX_GLOB characters) with generous line endings;
# anything longer is refused whole rather than cut, so nothing is silently dropped.
_MAX_TEXT = MAX_GLOBS * (MAX_GLOB + 8)

_LISTS = {
    "policy.tools.allow": "Allowed tools",
    "policy.tools.deny": "Denied tools",
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def policy_from_form(allow: str, deny: str, read_only: bool) -> dict[str, Any] | None:
    """The API's `policy` value for what the form holds (None when it says nothing).

    Raises HTTPFacingError (400) when a list's text is longer than any valid list could be.
    """
    for name, text in (("policy.tools.allow", allow), ("policy.tools.deny", deny)):
        if len(text) > _MAX_TEXT:
            raise InvalidRequest(f"{name} must be a list of at most {MAX_GLOBS} globs", field=name)
    globs = {"allow": _lines(allow), "deny": _lines(deny)}
    if not globs["allow"] and not globs["deny"] and not read_only:
        return None
    return {"tools": globs, "read_only": read_only}


def policy_message(exc: HTTPFacingError) -> str:
    """The validator's error, worded for the form (which list, and how to fix it)."""
    field = exc.field or ""
    label = _LISTS.get(field)
    if label is None:
        return f"The policy was not saved: {exc.public_message}."
    detail = exc.public_message.replace(f"each glob in {field}", "each line")
    detail = detail.replace(f"globs in {field}", "lines")
    detail = detail.replace(f"{field} must be a list of", "use")
    return f"{label}: {detail} (one glob per line). Nothing was changed."


def form_fields(
    action: str,
    policy: ToolPolicy | None,
    *,
    error: str | None = None,
    draft: tuple[str, str, bool] | None = None,
) -> dict[str, Any]:
    """What `policy_form.html` shows: the stored policy, or after an error what was typed."""
    if draft is not None:
        allow, deny, read_only = draft
    elif policy is not None:
        allow, deny, read_only = "\n".join(policy.allow), "\n".join(policy.deny), policy.read_only
    else:
        allow, deny, read_only = "", "", False
    return {
        "action": action,
        "allow": allow,
        "deny": deny,
        "read_only": read_only,
        "error": error,
        "is_set": policy is not None,
    }
