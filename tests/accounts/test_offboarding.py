"""Offboarding (DESIGN §15): removing a member revokes their grants at the providers.

Three real OAuth providers on loopback: one with an RFC 7009 revocation endpoint that records
every call, one without any, one whose revocation endpoint fails. The report lists each
connection's outcome; a failed one stays (disabled) with the member until a retry succeeds.
"""

from __future__ import annotations

from typing import Any

from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import path_of, play_authorize
from support.inprocess import Appliance, api

from bindify_appliance.store.models import Connection, JobRun, User


async def _service(app: Appliance, token: str, sid: str, upstream: OAuthUpstream) -> None:
    body = {"id": sid, "name": sid.title(), "mcp_url": upstream.mcp_url, "auth": {"type": "oauth"}}
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


async def _connect(browser: Any, sid: str, mode: str = "managed") -> str:
    started = await browser.api(
        "POST", f"/api/v1/connections/{sid}/authorize", {"key_storage_mode": mode}
    )
    assert started.status == 200, started.text
    done = await browser.get(path_of(await play_authorize(started.json()["url"])))
    return str(done.location).split("/")[2].split("?")[0]


async def test_remove_member_revokes_at_the_providers(
    appliance: Appliance, admin_token: str, member_id: str
) -> None:
    async with (
        OAuthUpstream(clock=appliance.clock) as good,
        OAuthUpstream(clock=appliance.clock, revocation=False) as none,
        OAuthUpstream(clock=appliance.clock, revoke_status=503) as flaky,
    ):
        for sid, up in (("acme", good), ("nope", none), ("flaky", flaky)):
            await _service(appliance, admin_token, sid, up)
        browser = await appliance.browser(member_id)
        managed = await _connect(browser, "acme")
        issued = dict(good.refresh_tokens), list(good.access_tokens)
        zk = await _connect(browser, "acme", "zero_knowledge")
        unsupported = await _connect(browser, "nope")
        failing = await _connect(browser, "flaky")
        assert len(good.valid_access_tokens()) == 2

        # Members cannot offboard anyone; a bad flag is a clear 400 that changes nothing.
        refused = await browser.api("DELETE", f"/api/v1/users/{member_id}?revoke=true")
        assert refused.status == 403
        bad = await api(
            appliance, "DELETE", f"/api/v1/users/{member_id}?revoke=maybe", token=admin_token
        )
        assert bad.status == 400 and bad.json()["field"] == "revoke"
        assert appliance.store.call(lambda: Connection.select().count()) == 4

        answer = await api(
            appliance, "DELETE", f"/api/v1/users/{member_id}?revoke=true", token=admin_token
        )
        assert answer.status == 200, answer.text
        report = answer.json()
        results = {c["id"]: c for c in report["connections"]}
        assert results[managed]["result"] == "revoked"
        assert results[zk]["result"] == "zero_knowledge"
        assert results[unsupported]["result"] == "not_supported"
        assert results[failing]["result"] == "failed"
        assert report["deleted"] is False
        # The provider recorded the managed grant's refresh and access tokens, nothing of the
        # zero-knowledge one (the server cannot open it), and the grant is dead there.
        revoked = good.revoked_tokens()
        grant_tokens = set(issued[0]) | set(issued[1])
        assert revoked and set(revoked) <= grant_tokens
        assert {r["token_type_hint"] for r in good.revocation_requests} == {
            "refresh_token",
            "access_token",
        }
        assert len(good.valid_access_tokens()) == 1  # the zero-knowledge grant lives on
        assert none.revocation_requests == [] and len(flaky.revocation_requests) == 1
        # No secret in the report.
        assert not any(t in answer.text for t in grant_tokens)

        # The failed one stays, disabled by an administrator, with its (disabled) member.
        left = appliance.store.call(lambda: list(Connection.select()))
        assert [c.id for c in left] == [failing]
        assert left[0].status == "disabled" and left[0].disabled_by == "admin"
        member = appliance.store.call(lambda: User.get_by_id(member_id))
        assert member.disabled_at is not None
        run = appliance.store.call(lambda: JobRun.get(JobRun.name == "offboarding"))
        assert run.outcome == "error" and "1 failed" in (run.detail or "")

        # A retry once the provider answers again finishes the job.
        flaky.revoke_status = None
        again = await api(
            appliance, "DELETE", f"/api/v1/users/{member_id}?revoke=true", token=admin_token
        )
        assert again.status == 200, again.text
        assert [c["result"] for c in again.json()["connections"]] == ["revoked"]
        assert again.json()["deleted"] is True
        assert appliance.store.call(lambda: User.get_or_none(User.id == member_id)) is None
        assert appliance.store.call(lambda: Connection.select().count()) == 0


async def test_confirm_deletes_despite_a_failed_revocation_and_members_leave_themselves(
    appliance: Appliance, admin_token: str, member_id: str, other_id: str
) -> None:
    async with OAuthUpstream(clock=appliance.clock, revoke_status=500) as flaky:
        await _service(appliance, admin_token, "flaky", flaky)
        browser = await appliance.browser(member_id)
        await _connect(browser, "flaky")
        answer = await api(
            appliance,
            "DELETE",
            f"/api/v1/users/{member_id}?revoke=true&confirm=true",
            token=admin_token,
        )
        assert answer.status == 200
        assert answer.json()["connections"][0]["result"] == "failed"
        assert answer.json()["deleted"] is True
        assert appliance.store.call(lambda: Connection.select().count()) == 0

        # A member deletes their own account the same way.
        other = await appliance.browser(other_id)
        await _connect(other, "flaky", "zero_knowledge")
        mine = await other.api("DELETE", "/api/v1/me?revoke=true")
        assert mine.status == 200, mine.text
        [only] = mine.json()["connections"]
        assert only["result"] == "zero_knowledge" and mine.json()["deleted"] is True
        assert appliance.store.call(lambda: User.get_or_none(User.id == other_id)) is None


async def test_remove_member_page_revokes_and_lists_the_outcome(
    appliance: Appliance, admin_id: str, admin_token: str, member_id: str
) -> None:
    async with OAuthUpstream(clock=appliance.clock) as good:
        await _service(appliance, admin_token, "acme", good)
        await _connect(await appliance.browser(member_id), "acme")
        admin = await appliance.browser(admin_id)
        confirm = await admin.post(f"/admin/users/{member_id}", {"action": "delete"})
        assert confirm.status == 200 and 'name="revoke"' in confirm.text
        done = await admin.post(
            f"/admin/users/{member_id}", {"action": "delete", "confirm": "yes", "revoke": "yes"}
        )
        assert done.status == 200, done.text
        assert "Member removed" in done.text and 'data-result="revoked"' in done.text
        assert len(good.revocation_requests) == 2
        assert appliance.store.call(lambda: User.get_or_none(User.id == member_id)) is None
