"""Tool policies (DESIGN §13): their shape, validation, storage form, and how two of them merge.

A policy is `{"tools": {"allow": [glob…], "deny": [glob…]}, "read_only": bool}`. An admin sets
one on a service, a member one on their connection; the proxy enforces their merge
(`effective`), which can only be narrower than either:
- allow lists intersect: a tool must match every non-empty allow list (empty = all tools);
- deny lists add up: a tool matching any deny glob is hidden, whatever the allow lists say;
- `read_only` if either says so (the upstream's own `annotations.readOnlyHint` decides which
  tools that leaves; see proxy/tool_gate.py).
So a member can never widen the admin's policy: their allow list is one more filter, never a
replacement.

Globs are `fnmatch` globs matched case-sensitively against the whole tool name (`*`, `?`,
`[abc]`); each list is compiled once into one regular expression, and `EffectivePolicy` objects
are built once per (service policy, connection policy) pair, so a request with a policy costs a
dict lookup and at most a regex match per tool name.

Invariants:
- "No policy" is `None` all the way to the proxy target: a connection without one pays nothing.
- A stored policy that cannot be read back fails closed: it hides every tool (logged).
- Nothing here logs a tool name, let alone arguments.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from bindify_appliance.errors import HTTPFacingError, InvalidRequest

__all__ = [
    "DENY_ALL",
    "MAX_GLOB",
    "MAX_GLOBS",
    "EffectivePolicy",
    "ToolPolicy",
    "dump_policy",
    "effective",
    "load_policy",
    "parse_policy",
]

log = logging.getLogger(__name__)

MAX_GLOB: Final = 200  # characters in one glob
MAX_GLOBS: Final = 200  # globs in one allow or deny list


@dataclass(frozen=True)
class ToolPolicy:
    """One party's policy, as stored (globs in the order given, duplicates removed)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    read_only: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "tools": {"allow": list(self.allow), "deny": list(self.deny)},
            "read_only": self.read_only,
        }


# A damaged stored policy: every tool hidden (fail closed).
DENY_ALL: Final = ToolPolicy(deny=("*",))


def _globs(value: object, field_name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_GLOBS:
        raise InvalidRequest(
            f"{field_name} must be a list of at most {MAX_GLOBS} globs", field_name
        )
    for glob in value:
        if not isinstance(glob, str) or not 1 <= len(glob) <= MAX_GLOB:
            raise InvalidRequest(
                f"each glob in {field_name} must be 1-{MAX_GLOB} characters", field_name
            )
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in glob):
            raise InvalidRequest(
                f"globs in {field_name} must not contain control characters", field_name
            )
    return tuple(dict.fromkeys(value))


def parse_policy(value: object, field_name: str = "policy") -> ToolPolicy | None:
    """A PATCH's `policy` value → the policy to store (None clears); 400 on anything else.

    Messages name the field, never echo a value.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field_name} must be an object or null", field_name)
    extra = set(value) - {"tools", "read_only"}
    if extra:
        raise InvalidRequest(f"{field_name} accepts only 'tools' and 'read_only'", field_name)
    tools = value.get("tools", {})
    if not isinstance(tools, dict):
        raise InvalidRequest(f"{field_name}.tools must be an object", f"{field_name}.tools")
    if set(tools) - {"allow", "deny"}:
        raise InvalidRequest(
            f"{field_name}.tools accepts only 'allow' and 'deny'", f"{field_name}.tools"
        )
    allow = _globs(tools.get("allow", []), f"{field_name}.tools.allow")
    deny = _globs(tools.get("deny", []), f"{field_name}.tools.deny")
    read_only = value.get("read_only", False)
    if not isinstance(read_only, bool):
        raise InvalidRequest(
            f"{field_name}.read_only must be true or false", f"{field_name}.read_only"
        )
    return ToolPolicy(allow, deny, read_only)


def dump_policy(policy: ToolPolicy | None) -> str | None:
    """The stored form (a JSON column; NULL = no policy)."""
    if policy is None:
        return None
    return json.dumps(policy.public(), separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def load_policy(stored: str | None) -> ToolPolicy | None:
    """The stored form back; a value that does not parse hides every tool (fail closed)."""
    if stored is None or stored == "":
        return None
    try:
        return parse_policy(json.loads(stored))
    except (ValueError, HTTPFacingError):
        log.error("a stored tool policy is damaged: every tool is hidden until it is set again")
        return DENY_ALL


def _compile(globs: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class EffectivePolicy:
    """The merge of a service's and a connection's policies, ready to match tool names."""

    __slots__ = ("_allow", "_decided", "_deny", "read_only", "sources")

    def __init__(self, sources: tuple[ToolPolicy, ...]) -> None:
        self.sources = sources
        self._allow = tuple(_compile(p.allow) for p in sources if p.allow)
        denied = [g for p in sources for g in p.deny]
        self._deny = _compile(denied) if denied else None
        self.read_only = any(p.read_only for p in sources)
        self._decided: dict[str, bool] = {}

    def permits(self, name: str) -> bool:
        """Allow and deny lists only (`read_only` is the caller's, with the upstream's hints)."""
        known = self._decided.get(name)
        if known is not None:
            return known
        verdict = all(p.match(name) for p in self._allow) and not (
            self._deny is not None and self._deny.match(name)
        )
        if len(self._decided) < 4096:  # tool names are the upstream's: a small, stable set
            self._decided[name] = verdict
        return verdict

    def visible(self, name: str, read_only_hint: bool) -> bool:
        """Whether a listed tool stays in a `tools/list` answer."""
        return self.permits(name) and (read_only_hint or not self.read_only)


@functools.lru_cache(maxsize=4096)
def _merged(sources: tuple[ToolPolicy, ...]) -> EffectivePolicy:
    return EffectivePolicy(sources)


def effective(service: ToolPolicy | None, connection: ToolPolicy | None) -> EffectivePolicy | None:
    """The policy the proxy enforces for a connection; None when neither party set one."""
    sources = tuple(p for p in (service, connection) if p is not None)
    return _merged(sources) if sources else None
