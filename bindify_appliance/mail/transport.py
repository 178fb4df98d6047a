"""The SMTP transport: parse `BINDIFY_SMTP_URL` and hand one message to the server (blocking).

`send_message` uses `smtplib` and blocks; the outbox job calls it in an executor, never on the
event loop.

Invariants:
- `smtps://` speaks TLS from the first byte; `smtp://` to a host that is not loopback must
  upgrade with STARTTLS before anything else is said (no AUTH, no envelope): a server that does
  not offer it is refused (`MailError`, permanent). Loopback (`127.0.0.0/8`, `::1`,
  `localhost`) is exempt and stays plain even when STARTTLS is offered: that traffic never
  leaves the machine, and local relays often hold a certificate no one can verify.
- TLS always verifies the server's certificate and name (the system's CAs unless the caller
  passes a context, as the tests do with their own CA).
- The password is never in a message, a log line or a repr: `SmtpTarget` hides it, and every
  error here names the step and the server's reply code only.
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Final
from urllib.parse import unquote, urlsplit

from bindify_appliance.errors import MailError

__all__ = ["DEFAULT_PORTS", "SEND_TIMEOUT", "SmtpTarget", "parse_smtp_url", "send_message"]

DEFAULT_PORTS: Final = {"smtp": 587, "smtps": 465}
SEND_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class SmtpTarget:
    """Where mail goes. `password` is excluded from repr and comparison output."""

    scheme: str  # "smtp" (STARTTLS) or "smtps" (implicit TLS)
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def loopback(self) -> bool:
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a name other than localhost: never assumed local


def parse_smtp_url(text: str) -> SmtpTarget:
    """`smtp[s]://[user[:password]@]host[:port]`; user and password are percent-decoded.

    Raises:
        ValueError: a one-line reason that never repeats the URL (it may hold a password).
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError("must be smtp://[user:password@]host[:port] or smtps://…") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError("must be smtp://[user:password@]host[:port] or smtps://…")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must not have a path, query or fragment")
    if (parts.username is None) != (parts.password is None):
        raise ValueError("must give both a user and a password, or neither")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and not username:
        raise ValueError("has an empty user name")
    return SmtpTarget(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        username=username,
        password=password,
    )


def _client_context(context: ssl.SSLContext | None) -> ssl.SSLContext:
    return context if context is not None else ssl.create_default_context()


def _refusal(step: str, exc: smtplib.SMTPResponseException) -> MailError:
    # Only the code: a server's text may echo what we sent (an address, a user name).
    code = int(exc.smtp_code)
    return MailError(f"the mail server refused the {step} ({code})", permanent=500 <= code < 600)


def send_message(
    target: SmtpTarget,
    message: EmailMessage,
    *,
    require_starttls: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = SEND_TIMEOUT,
) -> None:
    """Deliver `message` (its From/To headers give the envelope) to `target`, or raise.

    `require_starttls` defaults to the rule above (`smtp://` to a non-loopback host); a caller
    may demand it for a loopback server too (the tests do, to exercise the refusal).

    Raises:
        MailError: anything went wrong; `permanent` when a retry cannot help.
    """
    if require_starttls is None:
        require_starttls = target.scheme == "smtp" and not target.loopback
    client: smtplib.SMTP
    try:
        if target.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=timeout, context=_client_context(ssl_context)
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=timeout)
    except smtplib.SMTPResponseException as exc:
        raise _refusal("connection", exc) from None
    except ssl.SSLError:
        raise MailError("TLS with the mail server failed (certificate or protocol)") from None
    except (OSError, smtplib.SMTPException):
        raise MailError("the mail server could not be reached") from None
    try:
        with client:
            client.ehlo()
            if target.scheme == "smtp" and require_starttls:
                if not client.has_extn("starttls"):
                    raise MailError(
                        "the mail server does not offer STARTTLS; refusing to send in the clear",
                        permanent=True,
                    )
                client.starttls(context=_client_context(ssl_context))
                client.ehlo()
            if target.username is not None:
                client.login(target.username, target.password or "")
            client.send_message(message)
    except MailError:
        raise
    except smtplib.SMTPRecipientsRefused:
        raise MailError("the mail server refused the recipient", permanent=True) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise _refusal("login", exc) from None
    except smtplib.SMTPResponseException as exc:
        raise _refusal("message", exc) from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(
            "the mail server does not support a needed command", permanent=True
        ) from None
    except ssl.SSLError:
        raise MailError("TLS with the mail server failed (certificate or protocol)") from None
    except (TimeoutError, OSError, smtplib.SMTPException):
        raise MailError("the connection to the mail server failed") from None
