"""The payload canary's admin endpoints (DESIGN §12; `bindify doctor --canary`, `ops/canary.py`).

- `POST /api/v1/ops/canary` `{port, proof, seconds?}` (admin) → 201 `{service, expires_at}`:
  once `127.0.0.1:{port}` proved it is the canary's echo, creates the temporary service
  `canary-…` (`auth: none`, `http://127.0.0.1:{port}/mcp`) and its one-off allowance
  (`ops/canary_allowance.py`: that service, that address and port, the proxy only, at most
  10 minutes). The service is removed with the ordinary `DELETE /api/v1/services/{id}`.
- `DELETE /api/v1/ops/canary/{id}` (admin) → 204: ends the allowance at once on every
  instance; 404 when none is live.
- `POST /api/v1/ops/kv-scan` `{marker}` (admin) → `{scanned, hits: [{key_hash, prefix}]}`:
  whether the in-process KV holds the marker, in a key or a value. Never a value and never a
  key (keys can hold secrets, `kv.base`): the SHA-256 of the key (16 hex) and its prefix up to
  the first `:` when that is a plain word. The marker must have the canary's own shape
  (`bndcanary-` and 32 hex digits, `ops.canary.new_marker`), so no stored secret can be probed
  a character at a time; limited per admin per minute. With Redis: 409, the canary reads
  Redis itself.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from datetime import timedelta
from typing import Any, Final

from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.schema import TIMESTAMP, array, integer, obj, string
from bindify_appliance.api.services import SERVICE, ConnectApiHandler, service_json
from bindify_appliance.clock import iso
from bindify_appliance.context import AppContext
from bindify_appliance.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from bindify_appliance.kv.base import ScannableKV
from bindify_appliance.ops.canary_allowance import (
    MAX_SECONDS,
    CanaryAllowances,
    canary_url,
    proved,
)
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store.services import CANARY_ID_PREFIX, ServiceSpec

__all__ = ["MARKER_RE", "ops_api_routes"]

MARKER_RE: Final = re.compile(r"bndcanary-[0-9a-f]{32}")
SCANS_PER_MINUTE: Final = 6
_PREFIX_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")

_ALLOW = obj(
    {
        "port": integer(minimum=1, maximum=65535),
        "proof": string(min_length=32, max_length=128, description="what the echo answers"),
        "seconds": integer(minimum=1, maximum=MAX_SECONDS),
    },
    required=("port", "proof"),
)
_ALLOWED = obj({"service": SERVICE, "expires_at": TIMESTAMP}, required=("service", "expires_at"))
_SCAN = obj({"marker": string(description="bndcanary- and 32 hex digits")}, required=("marker",))
_HIT = obj(
    {"key_hash": string(), "prefix": {"type": ["string", "null"]}},
    required=("key_hash", "prefix"),
)
_SCANNED = obj({"scanned": integer(minimum=0), "hits": array(_HIT)}, required=("scanned", "hits"))


class CanaryHandler(ConnectApiHandler):
    @operation(
        "Start the payload canary: its temporary service and one-off loopback allowance (admin)",
        access="admin",
        tag="ops",
        body=_ALLOW,
        status=201,
        response=_ALLOWED,
        description=(
            "127.0.0.1:{port} must answer GET /bindify-canary-proof with `proof`. The service "
            "may reach that address and port only, through the proxy only, for `seconds` "
            f"(default and at most {MAX_SECONDS})."
        ),
    )
    async def post(self) -> None:
        port = int(self.body["port"])
        seconds = int(self.body.get("seconds", MAX_SECONDS))
        if not await proved(port, str(self.body["proof"])):
            # One answer for "nothing listens" and "something else listens": no port scanner.
            raise InvalidRequest(
                "127.0.0.1 did not answer with the canary's proof on that port", field="port"
            )
        spec = ServiceSpec(
            id=CANARY_ID_PREFIX + secrets.token_hex(4),
            name="Bindify canary (temporary)",
            mcp_url=canary_url(port),
            transport="streamable-http",
            auth={"type": "none"},
        )
        created = await self.services.registry.insert(spec)
        await CanaryAllowances(self.ctx.kv).grant(created.id, port, seconds)
        await audit.by_request(
            self,
            "canary.allow",
            audit.Target("service", created.id),
            detail={"port": port, "seconds": seconds},
        )
        expires = self.ctx.clock.now() + timedelta(seconds=seconds)
        self.write_json({"service": service_json(created), "expires_at": iso(expires)}, 201)


class CanaryEndHandler(ApiHandler):
    @operation(
        "End a canary's allowance at once (admin)",
        access="admin",
        tag="ops",
        status=204,
        errors=(404,),
    )
    async def delete(self, id: str) -> None:
        if not await CanaryAllowances(self.ctx.kv).revoke(id):
            raise NotFound("no live canary allowance")
        await audit.by_request(self, "canary.end", audit.Target("service", id))
        self.write_no_content()


def _hit(key: str) -> dict[str, Any]:
    prefix = key.split(":", 1)[0] if ":" in key else None
    return {
        "key_hash": hashlib.sha256(key.encode("utf-8")).hexdigest()[:16],
        "prefix": prefix if prefix is not None and _PREFIX_RE.fullmatch(prefix) else None,
    }


class KvScanHandler(ApiHandler):
    @operation(
        "Whether the in-process KV holds a canary marker; never a key or value (admin)",
        access="admin",
        tag="ops",
        body=_SCAN,
        response=_SCANNED,
        errors=(409, 429),
    )
    async def post(self) -> None:
        marker = self.body["marker"]
        if not isinstance(marker, str) or not MARKER_RE.fullmatch(marker):
            raise InvalidRequest(
                "marker must be a canary marker: bndcanary- and 32 hex digits", field="marker"
            )
        kv = self.ctx.kv
        if not isinstance(kv, ScannableKV):
            raise Conflict("the KV is Redis: the canary reads it directly")
        await self._count_scan()
        scanned = 0
        hits = []
        for key, value in kv.live_items():
            scanned += 1
            if marker in key or marker in value:
                hits.append(_hit(key))
        self.write_json({"scanned": scanned, "hits": hits})

    async def _count_scan(self) -> None:
        """A fixed window per clock minute on the shared KV, per administrator."""
        now = self.ctx.clock.time()
        window = int(now // 60)
        count = await self.ctx.kv.incr(f"ratelimit:kvscan:{self.user.user_id}:{window}", ttl=60)
        if count > SCANS_PER_MINUTE:
            retry = max(1, math.ceil((window + 1) * 60 - now))
            raise RateLimited(
                f"at most {SCANS_PER_MINUTE} KV scans a minute; wait {retry} s", retry_after=retry
            )


def ops_api_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    return [
        route("/api/v1/ops/canary", CanaryHandler, ctx, services=services),
        route("/api/v1/ops/canary/{id}", CanaryEndHandler, ctx),
        route("/api/v1/ops/kv-scan", KvScanHandler, ctx),
    ]
