"""Old home of `WithConnectServices` (now `http.services`); importable while callers move."""

from __future__ import annotations

from bindify_appliance.http.services import WithConnectServices

__all__ = ["WithConnectServices"]
