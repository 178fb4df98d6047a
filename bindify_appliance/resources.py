"""Locating the bundled resource folders: templates, static files and migrations.

The folders live at the repository root in a checkout, under `bindify_appliance/_resources/`
in an installed wheel (pyproject's force-include), and under the same name inside a frozen
binary's bundle (build.spec). One function finds them in all three, so nothing else cares.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["resource_dir"]

_NAMES = ("templates", "static", "migrations")


def resource_dir(name: str) -> Path:
    """Return the folder for `name` ("templates", "static" or "migrations").

    Raises:
        FileNotFoundError: the folder is missing from this installation (a broken build).
    """
    if name not in _NAMES:
        raise ValueError(f"unknown resource folder {name!r}")
    package_dir = Path(__file__).resolve().parent
    candidates = [package_dir / "_resources" / name]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.insert(0, Path(bundle) / "bindify_appliance" / "_resources" / name)
    candidates.append(package_dir.parent / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"resource folder {name!r} is missing from this installation")
