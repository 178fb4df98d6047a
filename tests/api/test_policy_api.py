"""The `policy` field of `PATCH /api/v1/services/{id}` and `PATCH /api/v1/connections/{id}`
(DESIGN §13), against a running appliance: read back, replaced whole, cleared with null, bad
input refused with its field and nothing changed, admins only on services.
"""

from __future__ import annotations

from typing import Any

from support.inprocess import Appliance

from .test_admin_disable import _open_service, call

POLICY = {"tools": {"allow": ["read_*", "list_*"], "deny": ["list_secrets"]}, "read_only": True}


async def test_service_policy_is_set_read_back_replaced_and_cleared(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    await _open_service(appliance, admin_token)
    listed = await call(appliance, "GET", "/api/v1/services", member_token)
    assert all(s["policy"] is None for s in listed.json()["items"])
    set_ = await call(appliance, "PATCH", "/api/v1/services/open", admin_token, {"policy": POLICY})
    assert set_.status == 200, set_.text
    assert set_.json()["service"]["policy"] == POLICY
    replaced = await call(
        appliance, "PATCH", "/api/v1/services/open", admin_token, {"policy": {"read_only": True}}
    )
    assert replaced.json()["service"]["policy"] == {
        "tools": {"allow": [], "deny": []},
        "read_only": True,
    }
    # A built-in takes a policy too (its row holds only OAuth app credentials otherwise).
    builtin = await call(
        appliance, "PATCH", "/api/v1/services/linear", admin_token, {"policy": POLICY}
    )
    assert builtin.status == 200, builtin.text
    assert builtin.json()["service"]["policy"] == POLICY
    cleared = await call(appliance, "PATCH", "/api/v1/services/open", admin_token, {"policy": None})
    assert cleared.json()["service"]["policy"] is None
    refused = await call(
        appliance, "PATCH", "/api/v1/services/open", member_token, {"policy": POLICY}
    )
    assert refused.status == 403


async def test_bad_policies_change_nothing(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    await _open_service(appliance, admin_token)
    await call(appliance, "PATCH", "/api/v1/services/open", admin_token, {"policy": POLICY})
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    cid = made.json()["connection"]["id"]
    bad: list[tuple[Any, str]] = [
        ({"tools": {"allow": [""]}}, "policy.tools.allow[0]"),
        ({"tools": {"deny": ["x" * 201]}}, "policy.tools.deny[0]"),
        ({"tools": {"deny": ["x"] * 201}}, "policy.tools.deny"),
        ({"read_only": "yes"}, "policy.read_only"),
        ("everything", "policy"),
    ]
    for value, field in bad:
        for path, token, extra in (
            ("/api/v1/services/open", admin_token, {"name": "Renamed"}),
            (f"/api/v1/connections/{cid}", member_token, {"label": "Renamed"}),
        ):
            got = await call(appliance, "PATCH", path, token, {"policy": value, **extra})
            assert got.status == 400, (path, value)
            assert got.json()["error"] == "invalid_request"
            assert got.json()["field"] == field
    service = await call(appliance, "GET", "/api/v1/services", member_token)
    open_ = next(s for s in service.json()["items"] if s["id"] == "open")
    assert (open_["name"], open_["policy"]) == ("Open", POLICY)
    conn = (await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)).json()
    assert conn["connection"]["policy"] is None and conn["connection"]["label"] != "Renamed"


async def test_member_sets_and_clears_a_connection_policy(
    appliance: Appliance, admin_token: str, member_token: str, other_token: str
) -> None:
    await _open_service(appliance, admin_token)
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    assert made.json()["connection"]["policy"] is None
    cid = made.json()["connection"]["id"]
    mine = {"tools": {"allow": [], "deny": ["delete_*"]}, "read_only": False}
    got = await call(
        appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, {"policy": mine}
    )
    assert got.status == 200, got.text
    assert got.json()["connection"]["policy"] == mine
    # Another member cannot touch it (404, no oracle).
    other = await call(
        appliance, "PATCH", f"/api/v1/connections/{cid}", other_token, {"policy": None}
    )
    assert other.status == 404
    cleared = await call(
        appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, {"policy": None}
    )
    assert cleared.json()["connection"]["policy"] is None
