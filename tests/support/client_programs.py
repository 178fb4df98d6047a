"""The real MCP client programs from npm, for the client and OAuth end-to-end tests.

`tests/clients/package.json` pins mcp-remote and Claude Code's CLI and its lock file fixes every
dependency: `node_bins` runs `npm ci` there once when they are missing. Loaded for the whole
suite by `tests/conftest.py` (`pytest_plugins`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "clients"
BIN = HERE / "node_modules" / ".bin"


@pytest.fixture(scope="session")
def node_bins() -> Path:
    """`node_modules/.bin` holding `mcp-remote` and `claude`, installed with `npm ci` if missing."""
    if not ((BIN / "mcp-remote").exists() and (BIN / "claude").exists()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("the client tests need npm to install mcp-remote (apt-get install npm)")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return BIN
