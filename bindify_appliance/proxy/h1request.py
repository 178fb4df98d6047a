"""The request of the lean upstream client (`h1client.py`), written by hand.

The method must be a token, the target an origin-form path whose CR, LF and NUL are refused
(other bytes outside visible ASCII are percent-encoded, the fragment is dropped); a header name
must be a token and may not be one the client owns (`Host`, `Content-Length`, hop-by-hop
framing); a value may carry no control character but HTAB. So no header can end early or
smuggle a second request. `Host` is written from the URL, `Content-Length` from the body (0 for
a body-less POST, PUT or PATCH); nothing else is added.

Invariant: a refusal is a ValueError naming the part, never its content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from bindify_appliance.header_names import HOP_BY_HOP

__all__ = ["serialize"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET: Final = re.compile(r"[\x00\r\n]")
_UNSAFE_TARGET: Final = re.compile(r"[^\x21-\x7e]")
# Printable ASCII the target keeps as is: everything but the space (and `#`, cut before).
_TARGET_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")
# Framing is the client's: a caller may not set these (a second `Content-Length` or a
# `Transfer-Encoding` would make the upstream read a different request than was meant).
_OWNED: Final = HOP_BY_HOP | {"host", "content-length", "expect"}
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# Header names already found valid (the few the relay sends), so each is checked once.
_checked_names: set[str] = set()


def serialize(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The request head (and body) as bytes; ValueError for anything that is not valid HTTP."""
    if _TOKEN.fullmatch(method) is None:
        raise ValueError("invalid method")
    target = target.partition("#")[0]
    if _UNSAFE_TARGET.search(target) is not None:
        if _BAD_TARGET.search(target) is not None:
            raise ValueError("invalid request target")
        target = quote(target, safe=_TARGET_SAFE)
    if not target.startswith("/"):
        raise ValueError("invalid request target")
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers.items():
        if name not in _checked_names:
            if _TOKEN.fullmatch(name) is None or name.lower() in _OWNED:
                raise ValueError("invalid header name")
            if len(_checked_names) < 1024:
                _checked_names.add(name)
        lines.append(f"{name}: {value}\r\n")
    if _BAD_VALUE.search("".join(headers.values())) is not None or _BAD_VALUE.search(host):
        raise ValueError("invalid header value")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\n\r\n")
    else:
        lines.append("\r\n")
    head = "".join(lines).encode("utf-8")
    return head + body if body else head
