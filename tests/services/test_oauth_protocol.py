"""OAuth client pieces without a network: PKCE, authorize URLs, token answers, discovery
helpers, the stored payload, and one-time claims in the KV store."""

from __future__ import annotations

import base64
import hashlib

import pytest
from support.connect_helpers import live_kv_keys

from bindify_appliance.clock import ManualClock
from bindify_appliance.errors import HTTPFacingError, OAuthError
from bindify_appliance.kv import MemoryKV
from bindify_appliance.services import claims, oauth
from bindify_appliance.services.discovery import (
    metadata_urls,
    parse_www_authenticate,
    resource_covers,
)


def test_pkce_pair_is_s256_of_an_86_character_verifier() -> None:
    verifier, challenge = oauth.pkce_pair()
    assert len(verifier) == 86
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()
    assert oauth.pkce_pair()[0] != verifier


def test_authorization_url_keeps_existing_query_and_never_lets_extras_override() -> None:
    url = oauth.authorization_url(
        "https://auth.example/authorize?tenant=t1&state=evil",
        client_id="cid",
        redirect_uri="https://app.example/oauth/callback",
        state="S",
        scopes=("read", "write"),
        code_challenge="C",
        resource="https://mcp.example/mcp",
        extra={"audience": "api://x", "client_id": "override"},
    )
    assert url == (
        "https://auth.example/authorize?tenant=t1&response_type=code&client_id=cid"
        "&redirect_uri=https%3A%2F%2Fapp.example%2Foauth%2Fcallback&state=S&scope=read%20write"
        "&code_challenge=C&code_challenge_method=S256"
        "&resource=https%3A%2F%2Fmcp.example%2Fmcp&audience=api%3A%2F%2Fx"
    )
    bare = oauth.authorization_url("https://a/x", client_id="c", redirect_uri="r", state="s")
    assert bare == "https://a/x?response_type=code&client_id=c&redirect_uri=r&state=s"


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (200, "application/json", b'{"access_token":"A","expires_in":60}', {"access_token": "A"}),
        (200, "application/x-www-form-urlencoded", b"access_token=A&scope=repo", {"scope": "repo"}),
        (200, "text/plain", b"access_token=A&token_type=bearer", {"token_type": "bearer"}),
        (200, "application/json", b'{"access_token":"A","error":"x"}', {"access_token": "A"}),
    ],
)
def test_token_answers_in_any_form_are_read(
    status: int, content_type: str, body: bytes, expected: dict[str, str]
) -> None:
    parsed = oauth.parse_token_response(status, content_type, body)
    assert expected.items() <= parsed.items()


@pytest.mark.parametrize(
    ("status", "content_type", "body", "error"),
    [
        (400, "application/json", b'{"error":"invalid_grant"}', "invalid_grant"),
        (
            200,
            "application/x-www-form-urlencoded",
            b"error=bad_verification_code",
            "bad_verification_code",
        ),
        (200, "text/plain", b"error=bad_refresh_token&error_description=x", "bad_refresh_token"),
        (200, "application/json", b'{"error":"access_denied"}', "access_denied"),
        (200, "application/json", b"[1,2]", "invalid_response"),
        (200, "application/json", b"null", "invalid_response"),
        (200, "text/html", b"<html>login</html>", "invalid_response"),
        (500, "text/html", b"oops", "http_error"),
        (401, "application/json", b'{"error":"invalid_client"}', "invalid_client"),
        (400, "application/json", b'{"error":"bad code\\n!"}', "invalid_response"),
    ],
)
def test_token_errors_even_with_http_200(
    status: int, content_type: str, body: bytes, error: str
) -> None:
    with pytest.raises(OAuthError) as caught:
        oauth.parse_token_response(status, content_type, body)
    assert caught.value.error == error


def test_provider_error_descriptions_are_truncated_and_redacted() -> None:
    body = (
        b'{"error":"invalid_grant","error_description":"code THE-CODE-123 is bad'
        + b"!" * 500
        + b'"}'
    )
    with pytest.raises(OAuthError) as caught:
        oauth.parse_token_response(400, "application/json", body, redact=["THE-CODE-123"])
    message = str(caught.value)
    assert "THE-CODE-123" not in message and "[redacted]" in message and len(message) < 300


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({}, "access_token"),
        ({"access_token": ""}, "access_token"),
        ({"access_token": 42}, "access_token"),
        ({"access_token": "a\nb"}, "access_token"),
        ({"access_token": "A", "token_type": "mac"}, "token_type"),
        ({"access_token": "A", "expires_in": "soon"}, "expires_in"),
        ({"access_token": "A", "expires_in": -5}, "expires_in"),
        ({"access_token": "A", "expires_in": True}, "expires_in"),
        ({"access_token": "A", "refresh_token": 7}, "refresh_token"),
        ({"access_token": "A", "scope": {"a": 1}}, "scope"),
    ],
)
def test_unusable_token_sets_are_refused(raw: dict[str, object], problem: str) -> None:
    with pytest.raises(OAuthError, match=problem):
        oauth.validate_token_set(raw)


def test_token_set_normalisation() -> None:
    tokens = oauth.validate_token_set(
        {
            "access_token": "A",
            "token_type": "bearer",
            "expires_in": "3600",
            "refresh_token": "",
            "scope": ["a", "b"],
        }
    )
    assert (tokens.expires_in, tokens.refresh_token, tokens.scope) == (3600, None, "a b")
    assert oauth.validate_token_set({"access_token": "A", "expires_in": 0}).expires_in is None
    assert "A" not in repr(tokens)


def test_payload_round_trip_keeps_only_registered_client_secrets() -> None:
    tokens = oauth.TokenSet("A", "R", 60, "Bearer", "s")
    dcr = oauth.TokenEndpoint(
        "https://as/token",
        oauth.ClientAuth("cid", "client_secret_post", "reg-secret", kind="dcr"),
        "https://mcp/mcp",
    )
    payload = oauth.connection_payload(tokens, dcr, 1000.0)
    assert payload["expires_at"] == 1060 and payload["client_secret"] == "reg-secret"
    assert oauth.endpoint_from_payload(payload) == dcr
    static = oauth.TokenEndpoint(
        "https://as/token", oauth.ClientAuth("app", "client_secret_post", "app-secret")
    )
    stored = oauth.connection_payload(oauth.TokenSet("A"), static, 1000.0)
    assert "client_secret" not in stored and stored["expires_at"] is None
    assert stored["refresh_token"] == ""
    assert oauth.endpoint_from_payload(stored) is None  # needs the registry's secret
    assert oauth.endpoint_from_payload(stored, static_secret="app-secret") == static
    kept = oauth.connection_payload(oauth.TokenSet("B"), dcr, 2000.0, previous=payload)
    assert kept["refresh_token"] == "R"


def test_www_authenticate_parsing() -> None:
    values = [
        'Bearer error="invalid_token", error_description="expired, sorry", '
        'resource_metadata="https://m.example/.well-known/oauth-protected-resource/mcp", '
        'scope="a b"',
        'DPoP algs="ES256"',
    ]
    params = parse_www_authenticate(values)
    assert params["resource_metadata"].endswith("/oauth-protected-resource/mcp")
    assert params["scope"] == "a b" and params["error_description"] == "expired, sorry"
    assert parse_www_authenticate(['Basic realm="x"']) == {}
    combined = parse_www_authenticate(['Basic realm="x", Bearer resource_metadata=https://x/y'])
    assert combined == {"resource_metadata": "https://x/y"}


def test_resource_matching_and_metadata_urls() -> None:
    assert resource_covers("https://m.example/mcp", "https://m.example/mcp")
    assert resource_covers("https://m.example/mcp/", "https://m.example/mcp")
    assert resource_covers("https://m.example", "https://m.example/mcp")
    assert not resource_covers("https://m.example/other", "https://m.example/mcp")
    assert not resource_covers("https://m.example/mc", "https://m.example/mcp")
    assert not resource_covers("https://evil.example/mcp", "https://m.example/mcp")
    assert not resource_covers("http://m.example/mcp", "https://m.example/mcp")
    assert metadata_urls("https://a.example/tenant1") == [
        "https://a.example/.well-known/oauth-authorization-server/tenant1",
        "https://a.example/.well-known/openid-configuration/tenant1",
        "https://a.example/tenant1/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://a.example/") == [
        "https://a.example/.well-known/oauth-authorization-server",
        "https://a.example/.well-known/openid-configuration",
    ]


# -- claims ---------------------------------------------------------------------------------


async def test_claims_are_one_time_owner_only_and_expire() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock)
    secret = {
        "connection": {"id": "c1"},
        "secret_url": "https://x/mcp/s/SECRET",
        "api_key": "bnd_live_K",
    }
    token = await claims.create_claim(kv, user_id="u1", result=secret)
    assert claims.is_token(token)
    [key] = await live_kv_keys(kv, "claim:")
    assert token not in key and key == claims.claim_key(token)
    stored = await kv.get(key)
    assert stored is not None and "SECRET" not in stored and "bnd_live_K" not in stored

    with pytest.raises(HTTPFacingError) as other:
        await claims.take_claim(kv, token, "u2")
    assert other.value.status == 403
    assert await claims.take_claim(kv, token, "u1") == secret  # not consumed by the refusal
    with pytest.raises(HTTPFacingError) as again:
        await claims.take_claim(kv, token, "u1")
    assert again.value.status == 404

    late = await claims.create_claim(kv, user_id="u1", result=secret)
    clock.advance(claims.CLAIM_TTL + 1)
    with pytest.raises(HTTPFacingError) as expired:
        await claims.take_claim(kv, late, "u1")
    assert expired.value.status == 404
    for junk in ("", "short", "x" * 43 + "!", token[:-1] + ("A" if token[-1] != "A" else "B")):
        with pytest.raises(HTTPFacingError) as bad:
            await claims.take_claim(kv, junk, "u1")
        assert bad.value.status == 404
    await kv.close()


async def test_a_sealed_record_is_bound_to_its_token_and_prefix() -> None:
    kv = MemoryKV(ManualClock())
    token, other = claims.new_token(), claims.new_token()
    await claims.put_sealed(kv, "oauth_state:", token, {"v": 1}, 60)
    # The blob moved under another token's key, or read with another prefix, does not open.
    blob = await kv.get("oauth_state:" + hashlib.sha256(token.encode()).hexdigest())
    assert blob is not None
    await kv.set("oauth_state:" + hashlib.sha256(other.encode()).hexdigest(), blob, 60)
    assert await claims.peek_sealed(kv, "oauth_state:", other) is None
    assert await claims.peek_sealed(kv, "claim:", token) is None
    assert await claims.take_sealed(kv, "oauth_state:", token) == {"v": 1}
    assert await claims.take_sealed(kv, "oauth_state:", token) is None
    await kv.close()


async def test_claims_and_state_on_redis_shared_by_two_instances(redis_url: str) -> None:
    """Two instances sharing Redis: one creates, the other reads once; nobody reads twice."""
    import secrets as pysecrets

    from bindify_appliance.kv import RedisKV

    namespace = f"bindify-test-{pysecrets.token_hex(8)}:"
    one, two = RedisKV(redis_url, namespace=namespace), RedisKV(redis_url, namespace=namespace)
    try:
        token = await claims.create_claim(one, user_id="u1", result={"api_key": "bnd_live_K"})
        with pytest.raises(HTTPFacingError) as other:
            await claims.take_claim(two, token, "u2")
        assert other.value.status == 403
        assert await claims.take_claim(two, token, "u1") == {"api_key": "bnd_live_K"}
        with pytest.raises(HTTPFacingError):
            await claims.take_claim(one, token, "u1")
        state = claims.new_token()
        await claims.put_sealed(one, "oauth_state:", state, {"verifier": "v"}, 600)
        assert await claims.take_sealed(two, "oauth_state:", state) == {"verifier": "v"}
        assert await claims.take_sealed(one, "oauth_state:", state) is None
    finally:
        await one.close()
        await two.close()
