from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oauth_server.harness import World, build_world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    built = await build_world(tmp_path)
    yield built
    await built.close()
