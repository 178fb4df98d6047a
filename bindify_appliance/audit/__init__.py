"""The audit trail (DESIGN §12): who did what security-relevant thing, hash-chained, metadata only.

Call sites use `record` (or `record_sync` in the CLI) with an explicit actor; `chain` holds the
MAC chain rules, `verify` the verification, `cli` the `bindify audit` commands. Only `store/audit`
touches the table.
"""

from __future__ import annotations

from bindify_appliance.audit.record import (
    CLI,
    SYSTEM,
    Actor,
    Target,
    actor,
    as_user,
    by_request,
    flush_anonymous,
    log_anchor,
    login_failure,
    prune,
    record,
    record_sync,
    signed_in,
    signed_out,
    user,
)

__all__ = [
    "CLI",
    "SYSTEM",
    "Actor",
    "Target",
    "actor",
    "as_user",
    "by_request",
    "flush_anonymous",
    "log_anchor",
    "login_failure",
    "prune",
    "record",
    "record_sync",
    "signed_in",
    "signed_out",
    "user",
]
