"""The frozen executable's entry script and runtime hook, as functions (they run for real in the
binary-marked tests of test_frozen.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import pytest
from support.appliance import ROOT


def _load(name: str, relative: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entry() -> ModuleType:
    return _load("bindify_entry", "packaging/entry.py")


@pytest.fixture(scope="module")
def certs() -> ModuleType:
    return _load("bindify_rthook_certs", "packaging/rthooks/certs.py")


@pytest.mark.parametrize(
    ("argv", "serves"),
    [
        ([], True),
        (["serve"], True),
        (["--port", "9000", "serve"], True),
        (["serve", "--data-dir", "/srv/bindify"], True),
        (["--port", "9000"], True),  # no subcommand means serve
        (["--port=9000", "serve"], True),
        (["--data-dir", "serve"], True),  # "serve" is the flag's value here; still the default
        (["keys", "list"], False),
        (["--data-dir", "/srv", "admin", "create-user", "a@example.com"], False),
        (["version"], False),
        (["--version"], False),
        (["serve", "--help"], False),
        (["-h"], False),
    ],
)
def test_only_serve_leaves_the_terminal_process_group(
    entry: ModuleType, argv: list[str], serves: bool
) -> None:
    assert entry.runs_server(argv) is serves


def test_outside_a_one_file_bundle_nothing_changes(entry: ModuleType) -> None:
    assert entry.is_onefile_child() is False
    group = os.getpgrp()
    entry.prepare(["serve"])  # a no-op in a checkout: the process group stays
    assert os.getpgrp() == group


def test_ca_bundle_fallback_only_when_the_built_in_paths_are_missing(certs: ModuleType) -> None:
    present = {"/etc/pki/tls/certs/ca-bundle.crt"}

    def choose(env: dict[str, str], cafile: str = "/usr/lib/ssl/cert.pem") -> str | None:
        return certs.choose_ca_file(  # type: ignore[no-any-return]
            env,
            cafile,
            "/usr/lib/ssl/certs",
            isfile=lambda p: p in present,
            isdir=lambda p: p in present,
        )

    # A Fedora-like host: the Debian paths compiled into OpenSSL are missing.
    assert choose({}) == "/etc/pki/tls/certs/ca-bundle.crt"
    # The operator's own setting always wins.
    assert choose({"SSL_CERT_FILE": "/opt/ca.pem"}) is None
    assert choose({"SSL_CERT_DIR": "/opt/certs"}) is None
    # Where the built-in location exists nothing changes.
    present.add("/usr/lib/ssl/cert.pem")
    assert choose({}) is None
    # No known bundle at all: leave OpenSSL's default (and its error) alone.
    present.clear()
    assert choose({}) is None


def test_ca_bundle_hook_does_nothing_when_not_frozen(
    certs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    _load("bindify_rthook_certs_again", "packaging/rthooks/certs.py")
    assert "SSL_CERT_FILE" not in os.environ
