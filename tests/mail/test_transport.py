"""The SMTP transport against a real local server: STARTTLS, smtps, AUTH, and the TLS rule."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from support.smtp_sink import Certs, SmtpSink

from bindify_appliance.config import load_settings
from bindify_appliance.errors import ConfigError, MailError
from bindify_appliance.mail.messages import build_message, invite_mail
from bindify_appliance.mail.transport import SmtpTarget, parse_smtp_url, send_message

PASSWORD = "p@ss:w/rd hunter2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs.make(tmp_path_factory.mktemp("certs"))


def _message(to: str = "ann@example.com") -> EmailMessage:
    from datetime import UTC, datetime

    payload = invite_mail(
        to, "https://bindify.example.com", "https://x/invite?token=t", "member", 7
    )
    return build_message(payload, "Bindify <bindify@example.com>", datetime.now(UTC))


@pytest.fixture
def starttls_sink(certs: Certs) -> Iterator[SmtpSink]:
    with SmtpSink(certs=certs, starttls=True, login=("mailer", PASSWORD)) as sink:
        yield sink


def test_starttls_with_login_delivers_over_tls(starttls_sink: SmtpSink, certs: Certs) -> None:
    target = SmtpTarget("smtp", "127.0.0.1", starttls_sink.port, "mailer", PASSWORD)
    send_message(target, _message(), require_starttls=True, ssl_context=certs.client_context())
    [got] = starttls_sink.received
    assert got.tls and got.login == "mailer"
    assert got.rcpt_tos == ["ann@example.com"]
    assert got.message["Subject"] == "Your invitation to Bindify"
    assert got.message["Auto-Submitted"] == "auto-generated"
    assert "https://x/invite?token=t" in got.message.get_content()


def test_a_wrong_password_is_a_permanent_refusal_naming_no_secret(
    starttls_sink: SmtpSink, certs: Certs
) -> None:
    target = SmtpTarget("smtp", "127.0.0.1", starttls_sink.port, "mailer", "wrong-password")
    with pytest.raises(MailError) as caught:
        send_message(target, _message(), require_starttls=True, ssl_context=certs.client_context())
    assert caught.value.permanent
    assert "wrong-password" not in str(caught.value) and "mailer" not in str(caught.value)
    assert starttls_sink.received == []


@pytest.mark.allow_error_logs  # the sink (aiosmtpd) logs the failed handshake as an error
def test_an_unknown_certificate_is_refused(starttls_sink: SmtpSink) -> None:
    target = SmtpTarget("smtp", "127.0.0.1", starttls_sink.port, "mailer", PASSWORD)
    with pytest.raises(MailError, match="TLS"):
        send_message(target, _message(), require_starttls=True)  # system CAs only
    assert starttls_sink.received == []


def test_smtps_speaks_tls_from_the_first_byte(certs: Certs) -> None:
    with SmtpSink(certs=certs, implicit_tls=True, login=("mailer", PASSWORD)) as sink:
        target = parse_smtp_url(f"smtps://mailer:{_quoted(PASSWORD)}@127.0.0.1:{sink.port}")
        send_message(target, _message(), ssl_context=certs.client_context())
        [got] = sink.received
        assert got.tls and got.login == "mailer"


def test_a_remote_server_without_starttls_gets_nothing_not_even_the_login() -> None:
    """`smtp://` to a host that is not loopback must not fall back to plain text."""
    with SmtpSink(login=("mailer", PASSWORD), auth_in_clear=True) as sink:
        target = SmtpTarget("smtp", "127.0.0.1", sink.port, "mailer", PASSWORD)
        with pytest.raises(MailError, match="STARTTLS") as caught:
            send_message(target, _message(), require_starttls=True)  # as if it were remote
        assert caught.value.permanent
        assert sink.received == []
        # The same server on loopback, as configured: plain SMTP is allowed there.
        send_message(target, _message())
        assert len(sink.received) == 1 and not sink.received[0].tls


def test_only_loopback_is_exempt_from_starttls() -> None:
    assert parse_smtp_url("smtp://127.0.0.1:25").loopback
    assert parse_smtp_url("smtp://[::1]:25").loopback
    assert parse_smtp_url("smtp://localhost").loopback
    for remote in ("smtp://mail.example.com", "smtp://10.0.0.1", "smtp://127.0.0.1.example.com"):
        assert not parse_smtp_url(remote).loopback


def test_url_parts_and_defaults() -> None:
    target = parse_smtp_url(f"smtp://a%40b.example:{_quoted(PASSWORD)}@mail.example.com")
    assert (target.scheme, target.host, target.port) == ("smtp", "mail.example.com", 587)
    assert (target.username, target.password) == ("a@b.example", PASSWORD)
    assert PASSWORD not in repr(target)
    assert parse_smtp_url("smtps://mail.example.com").port == 465


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@mail.example.com",
        "smtp://user:hunter2@",
        "smtp://user:hunter2@mail.example.com:99999",
        "smtp://user:hunter2@mail.example.com/path",
        "smtp://user:hunter2@mail.example.com?x=1",
        "smtp://justuser@mail.example.com",
        "mail.example.com",
    ],
)
def test_a_bad_smtp_url_is_a_one_line_error_without_the_password(url: str) -> None:
    env = {"BINDIFY_SMTP_URL": url, "BINDIFY_SMTP_FROM": "bindify@example.com"}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    message = str(caught.value)
    assert message.startswith("BINDIFY_SMTP_URL: ") and "\n" not in message
    assert "hunter2" not in message


def test_the_smtp_url_file_variant_and_the_sender_rules(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-url"
    secret.write_text("smtps://u:hunter2@mail.example.com\n")
    settings = load_settings(
        environ={"BINDIFY_SMTP_URL_FILE": str(secret), "BINDIFY_SMTP_FROM": "b@example.com"}
    )
    assert settings.smtp_url == "smtps://u:hunter2@mail.example.com"
    assert "hunter2" not in repr(settings)
    with pytest.raises(ConfigError, match="^BINDIFY_SMTP_FROM: must be set"):
        load_settings(environ={"BINDIFY_SMTP_URL": "smtp://127.0.0.1"})
    with pytest.raises(ConfigError, match="^BINDIFY_SMTP_FROM: must be an e-mail address"):
        load_settings(environ={"BINDIFY_SMTP_URL": "smtp://127.0.0.1", "BINDIFY_SMTP_FROM": "x"})


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
