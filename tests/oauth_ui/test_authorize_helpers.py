"""The pure parts of the authorize page: the consent page's CSP source, the destination shown,
resources and the answer's URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from bindify_appliance.oauth_server.authorize_request import (
    error_redirect,
    service_of_resource,
    success_redirect,
)
from bindify_appliance.oauth_server.consent import form_action_source, redirect_host


def test_form_action_source_is_the_redirect_origin_or_scheme() -> None:
    assert form_action_source("http://127.0.0.1:4000/cb?x=1") == "http://127.0.0.1:4000"
    assert form_action_source("https://claude.ai/api/mcp/auth_callback") == "https://claude.ai"
    assert form_action_source("http://[::1]:9/cb") == "http://[::1]:9"
    assert form_action_source("cursor://anysphere.cursor-mcp/oauth/callback") == "cursor:"
    assert form_action_source("com.example.app:/cb") == "com.example.app:"
    # Nothing that could end the directive or add a source.
    assert form_action_source("https://a.example;script-src *") is None
    assert form_action_source("x y:/cb") is None


def test_redirect_host_names_where_the_member_goes() -> None:
    assert redirect_host("https://chatgpt.com/cb") == "chatgpt.com"
    assert redirect_host("http://127.0.0.1:33418/cb").startswith("127.0.0.1:33418 (")
    assert "on your device" in redirect_host(
        "vscode://vscode.github-authentication/did-authenticate"
    )


def test_service_of_resource() -> None:
    base = "https://mcp.example.com"
    services = {"linear", "github"}
    assert service_of_resource("https://mcp.example.com/mcp/linear", base, services) == "linear"
    assert service_of_resource("https://mcp.example.com/mcp/linear/", base, services) == "linear"
    assert service_of_resource("https://mcp.example.com/mcp/nope", base, services) is None
    assert service_of_resource("https://mcp.example.com/mcp/linear/x", base, services) is None
    assert service_of_resource("https://evil.example/mcp/linear", base, services) is None
    assert service_of_resource("https://mcp.example.com.evil/mcp/linear", base, services) is None


def test_answers_keep_the_redirect_query_and_drop_a_fragment() -> None:
    url = success_redirect("https://app.example/cb?tenant=7#frag", "C", "S", "https://i")
    parts = urlsplit(url)
    assert parts.fragment == ""
    assert parse_qs(parts.query) == {
        "tenant": ["7"],
        "code": ["C"],
        "state": ["S"],
        "iss": ["https://i"],
    }
    denied = error_redirect("http://127.0.0.1:1/cb", "access_denied", "no", None, "https://i")
    assert parse_qs(urlsplit(denied).query) == {
        "error": ["access_denied"],
        "error_description": ["no"],
        "iss": ["https://i"],
    }
