"""The built-in catalogue: ids, endpoints, auth kinds and injection rules (reference §7.2)."""

from __future__ import annotations

import pytest

from bindify_appliance.config import BUILTIN_SERVICE_IDS
from bindify_appliance.services import BEARER, Injection
from bindify_appliance.services.builtins import BUILTINS


def test_builtins_are_exactly_the_configured_ids_in_order() -> None:
    assert tuple(BUILTINS) == BUILTIN_SERVICE_IDS
    for sid, service in BUILTINS.items():
        assert service.id == sid and service.builtin
        assert service.mcp_url.startswith("https://")
        assert service.transport == "streamable-http"


@pytest.mark.parametrize(
    ("sid", "kinds"),
    [
        ("linear", ("oauth", "api_key")),
        ("github", ("oauth", "api_key")),
        ("notion", ("oauth",)),
        ("atlassian", ("api_key",)),
        ("figma", ("oauth", "api_key")),
        ("todoist", ("oauth", "api_key")),
        ("ticktick", ("oauth", "api_key")),
    ],
)
def test_auth_kinds(sid: str, kinds: tuple[str, ...]) -> None:
    service = BUILTINS[sid]
    assert service.auth_types == kinds
    assert not service.supports("none")
    if "oauth" in kinds:
        assert service.injection_for("oauth") == BEARER


def test_api_key_injection_rules() -> None:
    linear = BUILTINS["linear"].api_key
    assert linear is not None
    # Validation sends the bare key; proxying sends a Bearer token.
    assert linear.injection.headers("k") == {"Authorization": "k"}
    assert BUILTINS["linear"].injection_for("api_key") == BEARER
    assert BUILTINS["figma"].injection_for("api_key") == Injection(header="X-Figma-Token")
    assert BUILTINS["figma"].injection_for("api_key").headers("k") == {"X-Figma-Token": "k"}  # type: ignore[union-attr]
    atl = BUILTINS["atlassian"]
    assert atl.injection_for("api_key").headers("k") == {"Authorization": "Basic k"}  # type: ignore[union-attr]
    assert atl.injection_for("api_key", "personal").prefix == "Basic "  # type: ignore[union-attr]
    assert atl.injection_for("api_key", "service_account") == BEARER
    assert atl.injection_for("oauth") is None
    assert [a.id for a in atl.api_key.applications] == ["jira", "confluence", "compass", "other"]  # type: ignore[union-attr]
    personal = atl.api_key.mode("personal")  # type: ignore[union-attr]
    assert personal is not None and [f.id for f in personal.fields] == ["email", "token"]
    assert personal.assemble == "atlassian_basic"


def test_oauth_facts() -> None:
    notion, ticktick, github = BUILTINS["notion"], BUILTINS["ticktick"], BUILTINS["github"]
    assert notion.oauth and notion.oauth.dcr and notion.oauth.pkce and notion.oauth.scopes == ()
    assert notion.oauth.refresh_interval == 6 * 3600 and notion.oauth.configured
    assert ticktick.oauth and ticktick.oauth.dcr and ticktick.oauth.register_url
    assert github.oauth and not github.oauth.pkce and not github.oauth.configured
    assert github.oauth.scopes == ("repo", "read:user", "read:org")
    assert BUILTINS["todoist"].oauth.requires_refresh is False  # type: ignore[union-attr]
    assert len(BUILTINS["figma"].oauth.scopes) == 13  # type: ignore[union-attr]


def test_expected_errors() -> None:
    github, todoist, linear = BUILTINS["github"], BUILTINS["todoist"], BUILTINS["linear"]
    assert github.expects(
        "upstream_error", upstream_status=405, detail="github:streamable-http:get"
    )
    assert not github.expects("upstream_error", upstream_status=405, detail="github:x:post")
    assert not linear.expects("upstream_error", upstream_status=405, detail="linear:x:get")
    assert todoist.expects("transient_error", upstream_status=None, detail="No MCP session ID")
    assert not github.expects("transient_error", upstream_status=None, detail="No MCP session ID")


def test_injection_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError):
        Injection()
    with pytest.raises(ValueError):
        Injection(header="X", query="k")
    assert Injection(query="key").query_params("s") == {"key": "s"}
    assert Injection(query="key").headers("s") == {}


def test_public_view_has_no_secret() -> None:
    view = BUILTINS["atlassian"].public()
    assert view["api_key"]["auth_modes"][0]["id"] == "personal"
    assert view["oauth_configured"] is False and view["builtin"] is True
    assert BUILTINS["notion"].public()["api_key"] is None
