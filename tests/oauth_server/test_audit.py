"""The OAuth server's audited actions, through their real paths on a running appliance:
`oauth.grant` at a code's exchange, `oauth.revoke` for each way a grant ends (member, client,
refresh-token reuse, code reuse) — metadata only (no token, code or client secret)."""

from __future__ import annotations

from urllib.parse import urlencode

from support.inprocess import api, fetch

from bindify_appliance.store.audit import rows_with_action
from oauth_server.harness import World


def _entries(world: World, action: str) -> list[object]:
    return list(world.server.store.call(rows_with_action, (action,)))


async def test_grants_and_their_ends_are_audited(world: World) -> None:
    secrets_seen: list[str] = []
    first = await world.tokens(world.managed)
    secrets_seen += [first["access_token"], first["refresh_token"]]
    [granted] = _entries(world, "oauth.grant")
    assert granted.actor_id == world.owner_id  # type: ignore[attr-defined]
    assert granted.target_id == world.managed.id  # type: ignore[attr-defined]
    assert granted.detail["client"] == first["client_id"]  # type: ignore[attr-defined]
    # member (grants API)
    path = f"/api/v1/connections/{world.managed.id}/grants"
    assert (await api(world.server, "DELETE", path, token=world.owner_token)).status == 204
    # client (RFC 7009 with the refresh token)
    second = await world.tokens(world.zk)
    secrets_seen += [second["access_token"], second["refresh_token"]]
    revoked = await fetch(
        world.url + "/oauth/revoke",
        "POST",
        body=urlencode({"client_id": second["client_id"], "token": second["refresh_token"]}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert revoked.status == 200
    # refresh-token reuse
    third = await world.tokens(world.zk)
    form = {"grant_type": "refresh_token", "client_id": third["client_id"]}
    assert (await world.token({**form, "refresh_token": third["refresh_token"]})).status == 200
    assert (await world.token({**form, "refresh_token": third["refresh_token"]})).status == 400
    # code reuse
    client_id = (await world.client())["client_id"]
    code, verifier = await world.code(client_id, world.managed)
    secrets_seen.append(code)
    assert (await world.exchange(client_id, code, verifier)).status == 200
    assert (await world.exchange(client_id, code, verifier)).status == 400
    reasons = sorted(e.detail["reason"] for e in _entries(world, "oauth.revoke"))  # type: ignore[attr-defined]
    assert reasons == ["client", "code_reuse", "member", "refresh_reuse"]
    assert len(_entries(world, "oauth.grant")) == 4
    text = repr(_entries(world, "oauth.grant") + _entries(world, "oauth.revoke"))
    for secret in secrets_seen:
        assert secret not in text
