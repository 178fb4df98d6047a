"""Benchmark of credential resolution: µs to turn one secret URL into a ProxyTarget.

What `ConnectionResolver.resolve` does per request: parse the 86 characters, hash secret1, look
the row up (memo hit: a dict; memo miss: one indexed SQLite query on the store's thread pool),
verify secret2 (managed: a constant-time verifier compare; zero-knowledge: HKDF + AES-GCM open),
decrypt the payload (managed: HKDF + AES-GCM open) and build the target. Figures are medians
over several rounds, in µs per resolve, on a real SQLite file (WAL) in a temporary directory.

The memo-hit runs use a frozen clock so every lookup hits; the memo-miss runs use a resolver
whose memo TTL is 0, so every lookup queries the database.

Run: .venv/bin/python bench/bench_resolve.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bindify_appliance.clock import ManualClock
from bindify_appliance.config import Settings
from bindify_appliance.connections import create_connection
from bindify_appliance.context import AppContext
from bindify_appliance.crypto import generate_master_key
from bindify_appliance.datadir import KeySource
from bindify_appliance.kv import MemoryKV
from bindify_appliance.proxy.resolver import ConnectionResolver
from bindify_appliance.services import ServiceRegistry
from bindify_appliance.store import Store, apply
from bindify_appliance.store.models import User

ROUNDS = 7
ROUND_SECONDS = 0.2
TOKENS = {
    "access_token": "lin_oauth_" + "a" * 54,
    "refresh_token": "lin_refresh_" + "b" * 52,
    "expires_at": 1_900_000_000,
}


async def per_op_us(fn: Callable[[], Awaitable[object]]) -> tuple[float, float, float]:
    """(median, min, max) µs per awaited call over ROUNDS rounds of ~ROUND_SECONDS each."""
    n, elapsed = 1, 0.0
    while elapsed < ROUND_SECONDS / 10:  # calibrate
        n *= 2
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        elapsed = time.perf_counter() - start
    per_round = max(1, int(n * ROUND_SECONDS / elapsed))
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(per_round):
            await fn()
        samples.append((time.perf_counter() - start) / per_round * 1e6)
    return statistics.median(samples), min(samples), max(samples)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bindify.db"
        store = Store(url)
        apply(store, backup_dir=None)
        now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
        clock = ManualClock(now.timestamp())
        settings = Settings(
            data_dir=tmp,
            base_url="https://bindify.example.com",
            database_url=url,
            master_keys=json.dumps([{"key": generate_master_key()}]),
        )
        ctx = AppContext(
            settings=settings,
            store=store,
            kv=MemoryKV(clock),
            keys=KeySource(settings),
            clock=clock,
            secret_key=b"k" * 32,
            instance_id="bench",
        )
        user_id = store.call(
            lambda: str(
                User.create(email="b@example.com", role="member", created_at=now, updated_at=now).id
            )
        )
        registry = ServiceRegistry(settings, store, clock)
        linear = await registry.get("linear")
        assert linear is not None
        # Some bulk so the lookup is an index probe, not a scan of a tiny table.
        for _ in range(500):
            await create_connection(
                ctx, user_id=user_id, service=linear, auth_type="oauth", payload=TOKENS
            )
        created = {
            mode: await create_connection(
                ctx,
                user_id=user_id,
                service=linear,
                auth_type="oauth",
                payload=TOKENS,
                key_storage_mode=mode,
            )
            for mode in ("managed", "zero_knowledge")
        }
        hit = ConnectionResolver(ctx, registry)
        miss = ConnectionResolver(ctx, registry, memo_ttl=0)
        print(f"resolve + decrypt one credential, µs per request (median of {ROUNDS} rounds)")
        print(f"{'case':<34}{'median':>10}{'min':>10}{'max':>10}")
        for mode, conn in created.items():
            text = conn.credentials.text
            for label, resolver in (("memo hit", hit), ("memo miss (SQLite)", miss)):

                async def once(r: ConnectionResolver = resolver, t: str = text) -> object:
                    return await r.resolve("linear", t, form="path")

                med, lo, hi = await per_op_us(once)
                print(f"{mode + ', ' + label:<34}{med:>10.1f}{lo:>10.1f}{hi:>10.1f}")
        store.close()


if __name__ == "__main__":
    asyncio.run(main())
