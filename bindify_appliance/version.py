"""Version information: package version, source commit, Python and SQLite versions.

The commit comes from `_build_info.py` when a build wrote one (the frozen binary), else from the
checkout's git metadata read directly (no subprocess), else "unknown".
"""

from __future__ import annotations

import platform
import sqlite3
from pathlib import Path

from bindify_appliance import __version__

__all__ = ["source_commit", "version_info"]


def source_commit() -> str:
    try:
        from bindify_appliance._build_info import COMMIT  # type: ignore[import-not-found]

        return str(COMMIT)
    except ImportError:
        pass
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                return ref_file.read_text(encoding="utf-8").strip()[:12]
            packed = (git / "packed-refs").read_text(encoding="utf-8")
            for line in packed.splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0][:12]
            return "unknown"
        return head[:12]
    except OSError:
        return "unknown"


def version_info() -> dict[str, str]:
    return {
        "version": __version__,
        "commit": source_commit(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
