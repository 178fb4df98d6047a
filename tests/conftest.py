"""The suite's root conftest: it only loads the shared plugin and fixture modules.

Everything lives in `tests/support/` (`plugin.py`: Redis, the ERROR-log guard, the markers;
`databases.py`: PostgreSQL databases, empty or migrated; `appliance_fixtures.py`: the
in-process appliance with users and tokens and the real OAuth upstream; `store_fixtures.py`:
migrated stores and a manual clock; `client_programs.py`: the npm-installed MCP clients), so a
test in any folder finds the same fixtures by name; a folder's own conftest may set a shared
fixture's options (`appliance_environ`, say).
"""

from __future__ import annotations

from support.servers import PG_SERVER_URL, REDIS_URL

__all__ = ["PG_SERVER_URL", "REDIS_URL"]

pytest_plugins = [
    "support.plugin",
    "support.databases",
    "support.appliance_fixtures",
    "support.store_fixtures",
    "support.client_programs",
]
