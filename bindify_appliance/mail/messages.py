"""The appliance's e-mails: their texts, and turning a queued payload into an `EmailMessage`.

A queued mail is a small payload `{"to", "subject", "body"}` (sealed in the outbox, since an
invite's body holds a one-time link); `build_message` adds the headers when it is sent, so a
restart or another instance sends the same message.

Invariants:
- Messages are plain text, built with `email.message.EmailMessage` (headers are encoded by the
  standard library; a CR or LF in a subject or address is refused there, never passed on).
- Every mail says it was sent automatically (`Auto-Submitted: auto-generated`, RFC 3834) so
  auto-responders stay quiet.
- Texts hold metadata only: a service id, a connection label, a job name, links into the
  appliance. Never a credential other than the invite link meant for its recipient.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

__all__ = [
    "build_message",
    "check_sender",
    "invite_mail",
    "job_failing_mail",
    "reconnect_mail",
]


def check_sender(text: str) -> str:
    """Validate `BINDIFY_SMTP_FROM` (`addr@host` or `Name <addr@host>`); ValueError if not."""
    _name, address = parseaddr(text)
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c in text for c in "\r\n"):
        raise ValueError("must be an e-mail address such as Bindify <bindify@example.com>")
    return text


def _domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def build_message(payload: Mapping[str, Any], sender: str, now: datetime) -> EmailMessage:
    """The message for one queued payload, from `sender`, dated `now`."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(addr_spec=str(payload["to"]))
    message["Subject"] = str(payload["subject"])
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(str(payload["body"]))
    return message


def invite_mail(to: str, base_url: str, link: str, role: str, days: int) -> dict[str, str]:
    article = "an" if role == "admin" else "a"
    body = (
        f"You have been invited to the Bindify appliance at {base_url} as {article} {role}.\n\n"
        f"Choose your password here (the link works once, for {days} days):\n\n{link}\n\n"
        "If you did not expect this invitation, ignore this message.\n"
    )
    return {"to": to, "subject": "Your invitation to Bindify", "body": body}


def reconnect_mail(
    to: str, base_url: str, connection_id: str, service: str, label: str | None
) -> dict[str, str]:
    name = f"{service} ({label})" if label else service
    body = (
        f"Your Bindify connection to {name} needs reconnecting: requests through it are "
        "refused until you do.\n\n"
        f"Reconnect it here:\n\n{base_url}/connections/{connection_id}\n\n"
        "You get at most one such message a day for each connection.\n"
    )
    return {"to": to, "subject": f"Reconnect your {service} connection", "body": body}


def job_failing_mail(to: str, base_url: str, job: str, failures: int) -> dict[str, str]:
    body = (
        f'The background job "{job}" of the Bindify appliance at {base_url} has failed '
        f"{failures} times in a row.\n\n"
        f"See the appliance's log and {base_url}/admin/jobs for details.\n"
        "You will not be told again until it has succeeded once.\n"
    )
    return {"to": to, "subject": f"Bindify: job {job} keeps failing", "body": body}
