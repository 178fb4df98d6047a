"""A local SMTP server for the e-mail tests (aiosmtpd, in its own thread, on 127.0.0.1).

`SmtpSink` records every accepted message with whether it arrived over TLS and who logged in.
Options: `starttls` (offer STARTTLS with `Certs`), `implicit_tls` (smtps), `login` (a user and
password AUTH PLAIN/LOGIN must match; over STARTTLS, mail without a login is refused), and
`auth_in_clear` (offer AUTH before TLS, for loopback tests).
`Certs.make(dir)` writes a throwaway CA and a server certificate for 127.0.0.1 with
`cryptography`; `client_context()` trusts that CA only.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ports import free_port as free_port  # re-exported for older imports


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Certs:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bindify test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        paths = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return paths

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    implicit_tls: bool = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = cast(EmailMessage, message_from_bytes(envelope.content, policy=policy.default))
        raw = session.auth_data if session.authenticated else None
        login = raw.decode() if isinstance(raw, bytes) else None
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message,
                    self.implicit_tls or server._tls_protocol is not None,
                    login,
                )
            )
        return "250 OK"


class SmtpSink:
    def __init__(
        self,
        *,
        certs: Certs | None = None,
        starttls: bool = False,
        implicit_tls: bool = False,
        login: tuple[str, str] | None = None,
        auth_in_clear: bool = False,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self._handler = _Handler()
        self._login = login
        kwargs: dict[str, Any] = {}
        if starttls and certs is not None:
            kwargs["tls_context"] = certs.server_context()
        if implicit_tls and certs is not None:
            kwargs["ssl_context"] = certs.server_context()
        if login is not None:
            kwargs["authenticator"] = self._authenticate
        # aiosmtpd counts only STARTTLS as TLS for AUTH (smtps is TLS from the first byte), and
        # it warns when AUTH is required without that; the tests check `login` instead.
        in_clear = auth_in_clear or implicit_tls
        kwargs["auth_require_tls"] = not in_clear
        kwargs["auth_required"] = login is not None and not in_clear
        self._handler.implicit_tls = implicit_tls
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **kwargs
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if mechanism not in ("LOGIN", "PLAIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        expected = self._login or ("", "")
        ok = (auth_data.login.decode(), auth_data.password.decode()) == expected
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def received(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.received)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return self.received
            time.sleep(0.1)
        raise AssertionError(f"expected {count} mail(s), got {len(self.received)}")
