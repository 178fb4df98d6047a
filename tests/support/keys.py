"""Strong keys for tests that configure a process (new keys must be 32 random bytes, DESIGN §9).

Fixed values, so a failing test is reproducible; never used outside tests.
"""

from __future__ import annotations

STRONG_SECRET_KEY = "9f3c1e8a5b7d24f06c1a9e3b8d5f7a2c4e6b0d9f1a3c5e7b2d4f6a8c0e1b3d5f"
STRONG_MASTER_KEY = "4b8e2d6f0a1c3e5b7d9f2a4c6e8b0d1f3a5c7e9b1d3f5a7c9e0b2d4f6a8c1e3b"
