"""`bindify doctor --canary`: placeholder until the canary lands (see the report)."""

from __future__ import annotations

from collections.abc import Callable

from bindify_appliance.config import Settings

__all__ = ["canary_command"]


def canary_command(
    settings: Settings,
    url: str,
    log_file: str,
    *,
    accept_unscanned: tuple[str, ...],
    out: Callable[[str], None],
    say: Callable[[str], None],
) -> int:
    say("bindify: the payload canary is not available in this build")
    return 1
