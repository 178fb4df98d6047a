"""The outbound client's SSRF guard: every refused form, at every layer, and on every redirect;
credentials never following a cross-origin redirect; size and reachability errors."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import AsyncIterator

import pytest
import tornado.web
from support.connect_helpers import MapResolver
from support.ports import free_port, free_socket
from tornado.httpserver import HTTPServer

from bindify_appliance.errors import OutboundError, UnsafeDestinationError
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.outbound_policy import (
    AddressPolicy,
    _guarded_resolver,
    address_refusal,
    destination_refusal,
)

REFUSED = [
    ("https://127.0.0.1/", "loopback"),
    ("https://127.8.9.10:8443/x", "loopback"),
    ("https://10.1.2.3/", "private"),
    ("https://172.16.0.1/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("https://169.254.1.1/", "link-local"),
    ("https://100.64.0.1/", "shared"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://224.0.0.1/", "multicast"),
    ("https://[::1]/", "loopback"),
    ("https://[::]/", "unspecified"),
    ("https://[fe80::1]/", "link-local"),
    ("https://[fd12:3456::1]/", "unique-local"),
    ("https://[fc00::1]/", "unique-local"),
    ("https://[::ffff:127.0.0.1]/", "loopback (embedded in IPv6)"),
    ("https://[::ffff:7f00:1]/", "loopback (embedded in IPv6)"),
    ("https://[::ffff:10.0.0.1]/", "private (embedded in IPv6)"),
    ("https://[64:ff9b::a9fe:a9fe]/", "cloud metadata (embedded in IPv6)"),
    ("https://[64:ff9b::a9fe:101]/", "link-local (embedded in IPv6)"),
    ("https://[64:ff9b::7f00:1]/", "loopback (embedded in IPv6)"),
    ("https://[2002:7f00:1::]/", "loopback (embedded in IPv6)"),
    ("https://2130706433/", "numeric host"),
    ("https://0x7f.1/", "numeric host"),
    ("https://0x7f000001/", "numeric host"),
    ("https://017700000001/", "numeric host"),
    ("https://127.1/", "numeric host"),
    ("https://127.0.0.01/", "numeric host"),
    ("https://1.2.3.4.5/", "numeric host"),
    ("https://localhost/", "loopback name"),
    ("https://api.localhost./", "loopback name"),
    ("http://example.com/", "plain http"),
    ("ftp://example.com/", "only https"),
    ("https://user:pw@example.com/", "user-info"),
    ("https:///nohost", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_every_refused_form(url: str, reason: str) -> None:
    refusal = destination_refusal(url, allow_private=False)
    assert refusal is not None and reason in refusal, (url, refusal)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/mcp",
        "https://mcp.example.com:8443/v1/mcp?x=1",
        "https://93.184.216.34/",
        "https://[2606:4700:4700::1111]/",
        "https://1.1.1.1/",
        "https://host-0x7f.example/",
    ],
)
def test_public_destinations_pass(url: str) -> None:
    assert destination_refusal(url, allow_private=False) is None


def test_allow_private_lifts_the_range_check_but_not_unspecified_or_multicast() -> None:
    for url in ("http://127.0.0.1:8080/", "https://10.0.0.1/", "https://localhost/"):
        assert destination_refusal(url, allow_private=True) is None
    assert "unspecified" in (destination_refusal("https://0.0.0.0/", allow_private=True) or "")
    assert "multicast" in (destination_refusal("https://[ff02::1]/", allow_private=True) or "")
    # Numeric tricks stay refused: they are never how anyone names a server.
    assert destination_refusal("http://2130706433/", allow_private=True) is not None


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.170.2",  # ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_cloud_metadata_is_refused_even_with_private_upstreams(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert "metadata" in (address_refusal(parsed, allow_private=True) or ""), address
    assert "metadata" in (
        destination_refusal(
            f"http://[{address}]/" if ":" in address else f"http://{address}/", allow_private=True
        )
        or ""
    )


@pytest.mark.parametrize("allow_private", [False, True])
async def test_the_resolver_refuses_non_canonical_numeric_names_before_asking_dns(
    allow_private: bool,
) -> None:
    inner = MapResolver({name: ["127.0.0.1"] for name in ("0x7f.1", "127.1", "2130706433")})
    resolver = _guarded_resolver(inner, AddressPolicy(allow_private=allow_private))
    for name in ("0x7f.1", "127.1", "2130706433", "017700000001"):
        with pytest.raises(UnsafeDestinationError, match="numeric"):
            await resolver.resolve(name, 443)
    assert inner.asked == []


def test_the_socket_factory_refuses_whatever_reaches_it() -> None:
    guard = AddressPolicy(allow_private=False)
    for address in ("127.0.0.1", "10.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with pytest.raises(OSError, match="SSRF guard"):
            guard.socket((family, socket.SOCK_STREAM, 6, "", (address, 80)))
    sock = guard.socket((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)))
    sock.close()


# -- a live client against loopback servers --------------------------------------------------


class Echo(tornado.web.RequestHandler):
    def check_xsrf_cookie(self) -> None:
        return

    def _echo(self) -> None:
        self.write(
            {
                "method": self.request.method,
                "headers": {k.lower(): v for k, v in self.request.headers.items()},
                "body": self.request.body.decode("utf-8", "replace"),
            }
        )

    get = post = _echo  # type: ignore[assignment]


class Redirect(tornado.web.RequestHandler):
    def check_xsrf_cookie(self) -> None:
        return

    def _go(self) -> None:
        self.set_status(int(self.get_query_argument("code", "302")))
        self.set_header("Location", self.get_query_argument("to"))
        self.finish()

    get = post = _go  # type: ignore[assignment]


class Big(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(b"x" * 5000)


class Loop(tornado.web.RequestHandler):
    def get(self) -> None:
        self.redirect("/loop")


async def _serve(address: str = "127.0.0.1") -> tuple[HTTPServer, str]:
    sockets, port = free_socket(address)
    app = tornado.web.Application(
        [("/echo", Echo), ("/redirect", Redirect), ("/big", Big), ("/loop", Loop)]
    )
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, f"http://{address}:{port}"


@pytest.fixture
async def sites() -> AsyncIterator[tuple[str, str]]:
    a, url_a = await _serve()
    b, url_b = await _serve()
    yield url_a, url_b
    for server in (a, b):
        server.stop()
        await server.close_all_connections()


@pytest.fixture
async def guarded() -> AsyncIterator[OutboundClient]:
    """Guard on; 127.0.0.1 exactly plays "a public server", names resolve through a map."""
    client = OutboundClient(
        allow_private=False,
        allow_http=True,
        allowed_networks=["127.0.0.1/32"],
        resolver=MapResolver(
            {
                "public.test": ["127.0.0.1"],
                "internal.test": ["10.0.0.7"],
                "metadata.test": ["169.254.169.254"],
                "mixed.test": ["127.0.0.1", "192.168.0.10"],
                "six.test": ["::1"],
                "mapped.test": ["::ffff:127.0.0.1"],
            }
        ),
    )
    yield client
    await client.close()


async def test_exempted_public_stand_in_is_reachable(
    guarded: OutboundClient, sites: tuple[str, str]
) -> None:
    a, _ = sites
    answer = await guarded.get(a + "/echo")
    assert answer.status == 200 and answer.json()["method"] == "GET"
    port = a.rsplit(":", 1)[1]
    by_name = await guarded.get(f"http://public.test:{port}/echo")
    assert by_name.status == 200


@pytest.mark.parametrize(
    "host", ["internal.test", "metadata.test", "mixed.test", "six.test", "mapped.test"]
)
async def test_names_resolving_to_refused_ranges_are_refused_at_connect_time(
    guarded: OutboundClient, host: str
) -> None:
    with pytest.raises(UnsafeDestinationError) as caught:
        await guarded.get(f"http://{host}:1/path/with-secret?key=SECRET123")
    assert host in str(caught.value)
    assert "SECRET123" not in str(caught.value) and "with-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/",
        "http://127.0.0.2:{port}/echo",
        "http://[::ffff:127.0.0.1]:{port}/echo",
        "http://[::1]:{port}/echo",
        "http://2130706433:{port}/echo",
        "http://0x7f.1:{port}/echo",
        "http://017700000001:{port}/echo",
        "http://0.0.0.0:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.test/",
        "http://localhost:{port}/echo",
    ],
)
async def test_redirects_to_refused_destinations_are_refused(
    guarded: OutboundClient, sites: tuple[str, str], target: str
) -> None:
    a, _ = sites
    port = a.rsplit(":", 1)[1]
    from urllib.parse import quote

    with pytest.raises(UnsafeDestinationError):
        await guarded.get(a + "/redirect?to=" + quote(target.format(port=port), safe=""))


async def test_credentials_never_follow_a_cross_origin_redirect(
    guarded: OutboundClient, sites: tuple[str, str]
) -> None:
    a, b = sites
    from urllib.parse import quote

    headers = {
        "Authorization": "Bearer TOPSECRET",
        "X-Figma-Token": "ALSOSECRET",
        "Cookie": "sid=1",
        "Accept": "application/json",
    }
    crossed = await guarded.get(a + "/redirect?to=" + quote(b + "/echo", safe=""), headers=headers)
    seen = crossed.json()["headers"]
    assert "authorization" not in seen and "x-figma-token" not in seen and "cookie" not in seen
    assert seen["accept"] == "application/json"
    assert crossed.url.startswith(b)
    # Same origin: the credentials stay.
    same = await guarded.get(a + "/redirect?to=/echo", headers=headers)
    assert same.json()["headers"]["authorization"] == "Bearer TOPSECRET"


async def test_a_body_is_never_resent_to_another_origin(
    guarded: OutboundClient, sites: tuple[str, str]
) -> None:
    a, b = sites
    from urllib.parse import quote

    to_b = quote(b + "/echo", safe="")
    with pytest.raises(OutboundError) as caught:
        await guarded.post(
            a + f"/redirect?code=307&to={to_b}", form={"client_secret": "s3cr3t", "code": "c"}
        )
    assert caught.value.reason == "redirect_refused" and "s3cr3t" not in str(caught.value)
    # 303 turns into a GET without the body, which is safe to follow.
    seen = (await guarded.post(a + f"/redirect?code=303&to={to_b}", form={"x": "1"})).json()
    assert seen["method"] == "GET" and seen["body"] == ""
    # Same-origin 307 keeps method and body.
    kept = await guarded.post(a + "/redirect?code=307&to=/echo", form={"x": "1"})
    assert kept.json()["method"] == "POST" and kept.json()["body"] == "x=1"


async def test_limits_and_unreachable_hosts(
    guarded: OutboundClient, sites: tuple[str, str]
) -> None:
    a, _ = sites
    with pytest.raises(OutboundError) as caught:
        await guarded.get(a + "/loop")
    assert caught.value.reason == "too_many_redirects"
    with pytest.raises(OutboundError) as caught:
        await guarded.get(a + "/big", max_body=1000)
    assert caught.value.reason == "too_large"
    port = free_port()  # nothing listens there
    with pytest.raises(OutboundError) as caught:
        await guarded.get(f"http://127.0.0.1:{port}/secret-path")
    assert caught.value.reason == "unreachable" and "secret-path" not in str(caught.value)
    no_redirects = await guarded.get(a + "/redirect?to=/echo", follow_redirects=False)
    assert no_redirects.status == 302


async def test_the_default_client_refuses_loopback_and_private_upstreams(
    sites: tuple[str, str],
) -> None:
    a, _ = sites
    strict = OutboundClient(allow_private=False)
    try:
        with pytest.raises(UnsafeDestinationError):
            await strict.get(a.replace("http://", "https://") + "/echo")
        with pytest.raises(UnsafeDestinationError, match="plain http"):
            await strict.get("http://example.com/")
    finally:
        await strict.close()
    relaxed = OutboundClient(allow_private=True)  # BINDIFY_ALLOW_PRIVATE_UPSTREAMS=true
    try:
        assert (await relaxed.get(a + "/echo")).status == 200
    finally:
        await relaxed.close()


def test_json_errors_never_quote_the_body() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from bindify_appliance.outbound import OutboundResponse

    response = OutboundResponse(200, CIMultiDictProxy(CIMultiDict()), b"token=SECRET not json")
    with pytest.raises(ValueError) as caught:
        response.json()
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(response)
    assert json.loads(b"{}") == {}
