"""One deny-list of header names: the proxy's hop-by-hop set and what an API key may not go into."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.inprocess import Server, api
from tornado.httputil import HTTPHeaders

from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.header_names import (
    HOP_BY_HOP,
    NOT_INJECTABLE,
    RELAY_MANAGED,
    header_value,
)
from bindify_appliance.proxy.headers import FORWARDED_REQUEST_HEADERS
from bindify_appliance.proxy.headers import HOP_BY_HOP as PROXY_HOP_BY_HOP
from bindify_appliance.services.validation import parse_service_body


def _body(header: str) -> dict[str, object]:
    return {
        "id": "acme",
        "name": "Acme",
        "mcp_url": "https://mcp.acme.example/mcp",
        "auth": {"type": "api_key", "header": header},
    }


def test_the_proxy_drops_exactly_the_shared_hop_by_hop_set() -> None:
    assert set(PROXY_HOP_BY_HOP) == set(HOP_BY_HOP)


def test_every_header_the_relay_sets_or_forwards_for_the_transport_is_not_injectable() -> None:
    # The client headers the relay forwards verbatim, bar the ones that only describe the client.
    transport = set(FORWARDED_REQUEST_HEADERS) - {"user-agent", "traceparent", "tracestate"}
    assert transport - {"baggage"} <= RELAY_MANAGED
    assert HOP_BY_HOP | RELAY_MANAGED <= NOT_INJECTABLE


@pytest.mark.parametrize("header", sorted(NOT_INJECTABLE))
def test_a_key_cannot_be_injected_into_a_header_the_relay_owns(header: str) -> None:
    for spelling in (header, header.upper(), header.title()):
        with pytest.raises(HTTPFacingError) as refused:
            parse_service_body(_body(spelling), allow_private=False)
        assert refused.value.status == 400
        assert refused.value.field == "auth.header"


def test_an_ordinary_header_is_accepted() -> None:
    spec = parse_service_body(_body("X-Api-Key"), allow_private=False)
    assert spec.auth["header"] == "X-Api-Key"


async def test_an_admin_cannot_aim_a_key_at_proxy_authorization(
    server: Server, admin_token: str
) -> None:
    answer = await api(
        server, "POST", "/api/v1/services", _body("Proxy-Authorization"), token=admin_token
    )
    assert answer.status == 400
    assert answer.json()["field"] == "auth.header"
    listed = await api(server, "GET", "/api/v1/services", token=admin_token)
    assert "acme" not in {item["id"] for item in listed.json()["items"]}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Origin", "origin", "Mcp-Method", "MCP-METHOD", "Accept", "X-A"]),
            st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=6),
        ),
        max_size=6,
    ),
    st.sampled_from(["Origin", "mcp-method", "Accept", "X-A", "Sec-Fetch-Mode"]),
)
def test_header_value_is_what_tornado_headers_get_gives(
    pairs: list[tuple[str, str]], name: str
) -> None:
    headers = HTTPHeaders()
    for key, value in pairs:
        headers.add(key, value)
    assert header_value(headers, name) == headers.get(name)
