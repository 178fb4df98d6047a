"""Client ID metadata documents fetched for real (DESIGN §10): over https, through the
outbound policy's resolver and address guard, size-capped, cached; then used at the token
endpoint as a public client."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import aiohttp.connector
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.connect_helpers import MapResolver
from support.ports import free_socket
from tornado.httpserver import HTTPServer

from bindify_appliance.oauth_server.clients import find_client
from bindify_appliance.oauth_server.documents import set_outbound
from bindify_appliance.outbound import OutboundClient
from oauth_server.harness import REDIRECT, World


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("client.test"),
                    x509.DNSName("internal.test"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Document(tornado.web.RequestHandler):
    hits: list[str]

    def initialize(self, hits: list[str]) -> None:
        self.hits = hits

    def get(self, name: str) -> None:
        self.hits.append(name)
        url = f"https://{self.request.host}{self.request.path}"
        document = {"client_id": url, "client_name": "Doc App", "redirect_uris": [REDIRECT]}
        if name == "big":
            document["padding"] = "x" * 20_000
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))


async def test_documents_are_fetched_guarded_capped_and_cached(
    world: World, tmp_path: Path
) -> None:
    cert, key = _certificate(tmp_path)
    # The process's verifying context trusts this throw-away certificate (nothing else changes).
    aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(str(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(cert), str(key))
    hits: list[str] = []
    app = tornado.web.Application([(r"/(\w+)\.json", _Document, {"hits": hits})])
    sockets, port = free_socket()
    server = HTTPServer(app, ssl_options=tls)
    server.add_sockets(sockets)
    # 127.0.0.1 plays the public client host; internal.test resolves to a private address.
    client = OutboundClient(
        allow_private=False,
        allowed_networks=["127.0.0.1/32"],
        resolver=MapResolver({"client.test": ["127.0.0.1"], "internal.test": ["10.0.0.7"]}),
    )
    ctx = world.server.ctx
    set_outbound(ctx, client)
    try:
        url = f"https://client.test:{port}/meta.json"
        found = await find_client(ctx, url)
        assert found is not None, hits
        assert found.metadata_document and not found.self_registered
        assert found.client_name == "Doc App" and found.redirect_uris == (REDIRECT,)
        assert found.auth_method == "none"
        assert await find_client(ctx, url) == found
        assert hits == ["meta"]  # cached
        assert await find_client(ctx, f"https://client.test:{port}/big.json") is None
        assert await find_client(ctx, f"https://internal.test:{port}/meta.json") is None
        assert hits == ["meta", "big"]  # the private address was never connected to
        # The document's client at the token endpoint: public, named from the cache.
        code, verifier = await world.code(url, world.managed)
        exchanged = await world.exchange(url, code, verifier)
        assert exchanged.status == 200, exchanged.text
        path = f"/api/v1/connections/{world.managed.id}/grants"
        from support.inprocess import api

        listed = (await api(world.server, "GET", path, token=world.owner_token)).json()["items"]
        assert [(g["client_id"], g["client_name"]) for g in listed] == [(url, "Doc App")]
        with_secret = await world.exchange(url, code, verifier, client_secret="x")
        assert with_secret.status == 401
    finally:
        await client.close()
        server.stop()
        await server.close_all_connections()
