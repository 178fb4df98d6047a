"""PyInstaller runtime hook: find the host's CA certificates for outbound HTTPS.

The executable carries the OpenSSL of the machine that built it, and that OpenSSL looks for
trusted CA certificates where the *build* distribution keeps them (Debian: /usr/lib/ssl/cert.pem
and /usr/lib/ssl/certs). On a host that keeps them elsewhere (Fedora, RHEL, openSUSE, Alpine)
every outbound HTTPS call — upstream MCP servers, OAuth token endpoints — would fail certificate
verification. Before any code runs, this hook checks the compiled-in locations and, only if
neither exists and the operator set neither SSL_CERT_FILE nor SSL_CERT_DIR, points
SSL_CERT_FILE at the host's bundle from the well-known list below.

Invariant: never overrides an operator's SSL_CERT_FILE/SSL_CERT_DIR, never changes anything on a
host where the built-in locations work, and never trusts a file that is not already the system's
CA bundle. Runs only inside a frozen bundle.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

# Where distributions keep the system CA bundle (first match wins).
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, CentOS, Amazon Linux
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL-family, newer layout
    "/etc/ssl/ca-bundle.pem",  # openSUSE, SLES
    "/etc/ssl/cert.pem",  # Alpine, macOS, BSDs
)


def choose_ca_file(
    env: Mapping[str, str],
    compiled_cafile: str,
    compiled_capath: str,
    candidates: Sequence[str] = CA_BUNDLES,
    isfile: Callable[[str], bool] = os.path.isfile,
    isdir: Callable[[str], bool] = os.path.isdir,
) -> str | None:
    """The bundle to use as SSL_CERT_FILE, or None when nothing needs to change."""
    if env.get("SSL_CERT_FILE") or env.get("SSL_CERT_DIR"):
        return None
    if isfile(compiled_cafile) or isdir(compiled_capath):
        return None
    return next((path for path in candidates if isfile(path)), None)


def _apply() -> None:
    import ssl

    paths = ssl.get_default_verify_paths()
    chosen = choose_ca_file(os.environ, paths.openssl_cafile, paths.openssl_capath)
    if chosen is not None:
        os.environ["SSL_CERT_FILE"] = chosen


if getattr(sys, "frozen", False):
    _apply()
