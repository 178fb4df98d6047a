"""Liveness and readiness: `/healthz` touches nothing; `/readyz` asks the database and KV.

Readiness is false until migrations are done and again from the moment shutdown starts, so a
load balancer stops sending traffic before connections are drained.
"""

from __future__ import annotations

from bindify_appliance import __version__
from bindify_appliance.errors import KVError, StoreError
from bindify_appliance.http.base import HttpHandler

__all__ = ["HealthHandler", "ReadyHandler"]


class HealthHandler(HttpHandler):
    def get(self) -> None:
        self.write_json({"status": "ok", "version": __version__})


class ReadyHandler(HttpHandler):
    async def get(self) -> None:
        lifecycle = self.ctx.lifecycle
        checks: dict[str, str] = {}
        if lifecycle.draining:
            checks["lifecycle"] = "draining"
        elif not lifecycle.ready:
            checks["lifecycle"] = "starting"
        else:
            checks["lifecycle"] = "ok"
        try:
            await self.ctx.store.run(self.ctx.store.ping)
            checks["database"] = "ok"
        except StoreError:
            checks["database"] = "unavailable"
        try:
            await self.ctx.kv.ping()
            checks["kv"] = "ok"
        except KVError:
            checks["kv"] = "unavailable"
        ok = all(value == "ok" for value in checks.values())
        self.write_json(
            {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
        )
