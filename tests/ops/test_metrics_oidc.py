"""Single sign-on outcomes reach `/metrics` (method `oidc`), against the test identity provider."""

from __future__ import annotations

from accounts.test_oidc import Factory, sso, sso_login  # noqa: F401 - `sso` is a fixture
from peers.oidc_provider import Login
from prometheus_client.parser import text_string_to_metric_families
from support.inprocess import Browser, fetch


def _logins(text: str) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bindify_logins_total" and s.labels["method"] == "oidc"
    }


async def test_sso_outcomes_are_counted(sso: Factory) -> None:  # noqa: F811
    server, provider = await sso()
    provider.next_token = Login(email="someone@elsewhere.test")
    assert (await sso_login(Browser(server.url), provider)).status == 403
    provider.next_token = Login()  # `next_token` stays until replaced
    assert (await sso_login(Browser(server.url), provider)).status == 303
    cancelled = await Browser(server.url).get("/login/oidc/callback?error=access_denied&state=x")
    assert cancelled.status == 400
    assert (await Browser(server.url).get("/login/oidc/callback?state=x&code=y")).status == 400
    text = (await fetch(server.url + "/metrics")).body.decode()
    assert _logins(text) == {"success": 1, "refused": 1, "cancelled": 1, "failed": 1}
    assert "@" not in text
