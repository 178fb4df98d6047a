"""Custody (DESIGN §10): after grants, refreshes and a pending code, the SQLite database file,
its WAL, every KV key and value and the logs hold no connection credential, upstream secret,
code, verifier, access or refresh token or client secret in clear. A zero-knowledge grant's
tokens carry the opener sealed under themselves; a managed grant's carry none."""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path

import pytest
from support.inprocess import api

from bindify_appliance.crypto import parse_credentials
from bindify_appliance.store.models import OAuthToken
from oauth_server.harness import Conn, World

UPSTREAM_SECRET = "upstream-secret-" + secrets.token_hex(16)


def _variants(name: str, text: str) -> dict[str, bytes]:
    raw = text.encode()
    return {
        name: raw,
        f"{name} (base64)": base64.b64encode(raw),
        f"{name} (base64url)": base64.urlsafe_b64encode(raw).rstrip(b"="),
    }


def _credential_needles(conn: Conn) -> dict[str, bytes]:
    creds = parse_credentials(conn.credentials)
    out = _variants(f"{conn.mode} credentials", conn.credentials)
    out[f"{conn.mode} secret1"] = creds.secret1_b64.encode()
    out[f"{conn.mode} secret2"] = creds.secret2_b64.encode()
    out[f"{conn.mode} secret1 bytes"] = creds.secret1
    out[f"{conn.mode} secret2 bytes"] = creds.secret2
    return out


async def _keyed_zero_knowledge(world: World) -> Conn:
    service = {
        "id": "keyed",
        "name": "Keyed",
        "mcp_url": world.upstream.url("/echo"),
        "auth": {"type": "api_key", "header": "X-Upstream-Key"},
    }
    made = await api(world.server, "POST", "/api/v1/services", service, token=world.admin_token)
    assert made.status == 201, made.text
    connected = await api(
        world.server,
        "POST",
        "/api/v1/connections",
        {"service": "keyed", "api_key": UPSTREAM_SECRET, "key_storage_mode": "zero_knowledge"},
        token=world.owner_token,
    )
    assert connected.status == 201, connected.text
    answer = connected.json()
    return Conn(
        answer["connection"]["id"], answer["secret_url"].rsplit("/", 1)[1], "zero_knowledge"
    )


def _kv_dump(world: World) -> bytes:
    data = world.server.ctx.kv._data  # type: ignore[attr-defined]
    return b"\n".join(f"{key}\t{entry.value}".encode() for key, entry in data.items())


async def test_nothing_in_clear_after_grants(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyed = await _keyed_zero_knowledge(world)
    needles: dict[str, bytes] = {"upstream secret": UPSTREAM_SECRET.encode()}
    for conn in (world.managed, world.zk, keyed):
        needles.update(_credential_needles(conn))
    confidential = await world.client(token_endpoint_auth_method="client_secret_post")
    needles.update(_variants("client secret", confidential["client_secret"]))
    issued = []
    for conn in (world.managed, world.zk):
        issued.append(await world.tokens(conn))
    # The keyed grant: used, refreshed, used again (its upstream got the secret).
    keyed_code, keyed_verifier = await world.code(confidential["client_id"], keyed, service="keyed")
    needles.update(_variants("keyed code", keyed_code))
    needles.update(_variants("keyed verifier", keyed_verifier))
    exchanged = await world.exchange(
        confidential["client_id"],
        keyed_code,
        keyed_verifier,
        client_secret=confidential["client_secret"],
    )
    assert exchanged.status == 200, exchanged.text
    keyed_tokens = exchanged.json()
    assert (await world.mcp(keyed_tokens["access_token"], service="keyed")).status == 200
    assert world.upstream.requests[-1].header("X-Upstream-Key") == UPSTREAM_SECRET
    refreshed = await world.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": keyed_tokens["refresh_token"],
            "client_id": confidential["client_id"],
            "client_secret": confidential["client_secret"],
        }
    )
    assert refreshed.status == 200
    issued += [keyed_tokens, refreshed.json()]
    assert (await world.mcp(refreshed.json()["access_token"], service="keyed")).status == 200
    for n, tokens in enumerate(issued):
        needles.update(_variants(f"access token {n}", tokens["access_token"]))
        needles.update(_variants(f"refresh token {n}", tokens["refresh_token"]))
    # A code still waiting in the KV (with the zero-knowledge opener inside).
    pending, verifier = await world.code(confidential["client_id"], world.zk)
    needles.update(_variants("pending code", pending))
    needles.update(_variants("pending verifier", verifier))

    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("bindify.db")}
    assert "bindify.db-wal" in files
    places = {**files, "KV": _kv_dump(world), "logs": caplog.text.encode()}
    assert b"oauthcode:" in places["KV"]  # the pending code is there, sealed
    for place, blob in places.items():
        for name, needle in needles.items():
            assert needle not in blob, f"{name} found in {place}"

    openers = world.server.store.call(
        lambda: {t.grant.connection_id: t.opener_sealed for t in OAuthToken.select()}
    )
    assert openers[world.managed.id] is None
    assert openers[world.zk.id] and openers[keyed.id]
