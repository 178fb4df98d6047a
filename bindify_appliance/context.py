"""The collaborators every handler and job receives, built once by the composition root.

Invariant: this is plain wiring — no behaviour lives here beyond the small readiness state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bindify_appliance.clock import Clock
from bindify_appliance.config import Settings
from bindify_appliance.ops.metrics import Metrics

if TYPE_CHECKING:
    from bindify_appliance.datadir import KeySource
    from bindify_appliance.kv import KVStore
    from bindify_appliance.store import Store

__all__ = ["AppContext", "Lifecycle"]


@dataclass
class Lifecycle:
    """Readiness and in-flight accounting used by /readyz and graceful shutdown."""

    ready: bool = False
    draining: bool = False
    inflight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def request_started(self) -> None:
        self.inflight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        if self.inflight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if `timeout` passed first."""
        if self.inflight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass
class AppContext:
    settings: Settings
    store: Store
    kv: KVStore
    keys: KeySource
    clock: Clock
    secret_key: bytes
    instance_id: str
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # Prometheus figures (`/metrics`); its own registry per context (see ops/metrics.py).
    metrics: Metrics = field(default_factory=Metrics)
