"""The payload canary's one-off outbound allowance (DESIGN §12, "allowed to reach that echo only").

`bindify doctor --canary` runs its echo upstream on 127.0.0.1, which the outbound policy
(`outbound_policy.py`) refuses unless `BINDIFY_ALLOW_PRIVATE_UPSTREAMS`. Instead of asking the
operator to lift the policy, an administrator asks for an allowance (`POST /api/v1/ops/canary`,
`api/ops.py`) that lets exactly one connection kind through:

- only the proxy's upstream connections (`proxy/upstream.py` asks `permit`), never the
  outbound client (OAuth, discovery, API-key checks), which knows nothing of allowances;
- only for the one temporary service the endpoint created, whose id carries the reserved
  `canary-` prefix (the ordinary service API refuses that prefix);
- only to `127.0.0.1` and the one port named, spelled exactly so in the URL;
- only while the KV record lives: at most `MAX_SECONDS`, ended early by
  `DELETE /api/v1/ops/canary/{id}`. The record is in the shared KV, so whichever instance or
  worker serves the proxied request honours the same allowance and its end.

An allowance is granted only after the port proved it is the canary's echo: the canary gives
its echo a random proof and the appliance fetches `GET /bindify-canary-proof` from the port
and compares (constant time). A local database or admin panel on another loopback port cannot
answer it, so an administrator cannot use the canary to reach one. The probe reads at most a
few hundred bytes and says only "proved" or not — never what answered.

The proxy asks only after the policy refused a connection, so ordinary traffic never pays for
this (no KV read on the hot path).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Final

from yarl import URL

from bindify_appliance.errors import KVError
from bindify_appliance.kv.base import KVStore
from bindify_appliance.outbound_policy import IPAddress
from bindify_appliance.store.services import CANARY_ID_PREFIX

__all__ = ["LOOPBACK", "MAX_SECONDS", "PROOF_PATH", "CanaryAllowances", "canary_url", "proved"]

LOOPBACK: Final = ipaddress.IPv4Address("127.0.0.1")
MAX_SECONDS: Final = 600
PROOF_PATH: Final = "/bindify-canary-proof"
_KEY: Final = "canary:allow:"
_PROOF_LIMIT: Final = 512  # bytes read from the probed port at most

log = logging.getLogger(__name__)


def canary_url(port: int) -> str:
    """The temporary service's MCP URL: the echo on loopback, spelled the one accepted way."""
    return f"http://127.0.0.1:{port}/mcp"


async def proved(port: int, proof: str, *, timeout: float = 3.0) -> bool:
    """True if `http://127.0.0.1:{port}` answers `GET PROOF_PATH` with exactly `proof`.

    A direct connection to the one literal loopback address (no DNS, no redirects, no proxy
    settings); any failure is simply "not proved".
    """
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=timeout),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            ) as session,
            session.get(f"http://127.0.0.1:{port}{PROOF_PATH}", allow_redirects=False) as response,
        ):
            body = await response.content.read(_PROOF_LIMIT)
            if response.status != 200:
                return False
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return False
    return hmac.compare_digest(body.strip(), proof.encode("utf-8"))


class CanaryAllowances:
    """The allowances held in the shared KV; stateless apart from the store."""

    def __init__(self, kv: KVStore) -> None:
        self._kv = kv

    async def grant(self, service_id: str, port: int, seconds: float) -> None:
        if not service_id.startswith(CANARY_ID_PREFIX) or not 0 < seconds <= MAX_SECONDS:
            raise ValueError("an allowance is for a canary service, for at most MAX_SECONDS")
        await self._kv.set(_KEY + service_id, str(port), seconds)

    async def revoke(self, service_id: str) -> bool:
        """End the allowance at once; False if there was none."""
        return await self._kv.delete(_KEY + service_id)

    async def permit(self, service_id: str, url: str) -> tuple[IPAddress, int] | None:
        """The one (address, port) the proxy may connect to for `service_id` at `url`, or None.

        Called by the proxy only after the outbound policy refused the connection.
        """
        if not service_id.startswith(CANARY_ID_PREFIX):
            return None
        try:
            parsed = URL(url)
            host, port = parsed.host, parsed.explicit_port
        except (ValueError, TypeError):
            return None
        if parsed.scheme != "http" or host != "127.0.0.1" or port is None:
            return None
        try:
            allowed = await self._kv.get(_KEY + service_id)
        except KVError:
            log.warning("canary: the allowance could not be read from the KV; refusing")
            return None
        if allowed is None or allowed != str(port):
            return None
        return LOOPBACK, port
