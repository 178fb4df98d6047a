"""The client address behind trusted reverse proxies (`bindify_appliance.clientaddr`)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from bindify_appliance import clientaddr
from bindify_appliance.clientaddr import client_ip, parse_networks
from bindify_appliance.proxy import limits

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "xff", "trusted", "expected"),
    [
        ("203.0.113.5", [], ["198.51.100.1"], TRUSTED, "203.0.113.5"),  # untrusted peer
        ("10.0.0.2", [], ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", [], ["198.51.100.1, 10.0.0.9"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", [], ["1.1.1.1, 198.51.100.1, 10.0.0.9"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", [], ["1.1.1.1", "198.51.100.1"], TRUSTED, "198.51.100.1"),  # two headers
        ("10.0.0.2", [], ["10.0.0.7, 10.0.0.9"], TRUSTED, "10.0.0.7"),  # all trusted: leftmost
        ("10.0.0.2", [], ["garbage, 10.0.0.9"], TRUSTED, "10.0.0.9"),
        ("10.0.0.2", [], [], TRUSTED, "10.0.0.2"),
        ("10.0.0.2", ["for=198.51.100.4;proto=https"], ["1.1.1.1"], TRUSTED, "198.51.100.4"),
        ("10.0.0.2", ['for="[2001:db8::1]:443", for=10.0.0.3'], [], TRUSTED, "2001:db8::1"),
        ("10.0.0.2", ["for=198.51.100.4:8080"], [], TRUSTED, "198.51.100.4"),
        ("::1", [], ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("::ffff:10.0.0.2", [], ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", [], ["198.51.100.1"], (), "10.0.0.2"),  # nothing trusted
    ],
)
def test_client_ip(
    peer: str, forwarded: list[str], xff: list[str], trusted: Any, expected: str
) -> None:
    assert client_ip(peer, forwarded, xff, trusted) == expected
    ipaddress.ip_address(client_ip(peer, forwarded, xff, trusted))


def test_parse_networks_accepts_host_bits_and_both_families() -> None:
    assert parse_networks(["10.1.2.3/8", "::1"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    with pytest.raises(ValueError):
        parse_networks(["not-a-network"])


def test_the_proxy_limits_module_still_exports_the_same_functions() -> None:
    assert limits.client_ip is clientaddr.client_ip
    assert limits.parse_networks is clientaddr.parse_networks
    assert limits.IPNetwork is clientaddr.IPNetwork
