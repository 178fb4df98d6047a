"""The suite's root conftest: it only loads the shared plugin and fixture modules.

Everything lives in `tests/support/` (`plugin.py`: PostgreSQL, Redis, the ERROR-log guard, the
markers; `accounts_fixtures.py`: a running in-process appliance with users and tokens;
`store_fixtures.py`: migrated stores and a manual clock), so a test in any folder finds the same
fixtures by name; a folder's own conftest may override one.
"""

from __future__ import annotations

from support.servers import PG_SERVER_URL, REDIS_URL

__all__ = ["PG_SERVER_URL", "REDIS_URL"]

pytest_plugins = ["support.plugin", "support.accounts_fixtures", "support.store_fixtures"]
