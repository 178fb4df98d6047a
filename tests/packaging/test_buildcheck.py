"""The build guards (packaging/buildcheck.py) on the real files and on made-up failures.

The real-file test is the early warning: a dependency added to pyproject.toml without the
hash-pinned build lock fails here, in the main suite, before anyone builds a binary without it.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
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
def buildcheck() -> ModuleType:
    return _load("bindify_buildcheck", "packaging/buildcheck.py")


def test_build_lock_covers_every_runtime_dependency(buildcheck: ModuleType) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "packaging" / "requirements-build.txt").read_text()
    requirements = buildcheck.runtime_requirements(pyproject)
    assert {r.name for r in requirements} >= {"tornado", "peewee", "psycopg"}
    assert buildcheck.requirement_problems(requirements, buildcheck.lock_pins(lock)) == []


def test_build_lock_pins_everything_with_hashes() -> None:
    lock = (ROOT / "packaging" / "requirements-build.txt").read_text()
    # Every pinned entry is followed by at least one --hash line (pip's --require-hashes).
    blocks = lock.replace("\\\n", " ").splitlines()
    pinned = [b for b in blocks if "==" in b and not b.lstrip().startswith("#")]
    assert len(pinned) >= 20
    assert all("--hash=sha256:" in b for b in pinned), [b for b in pinned if "--hash" not in b]
    assert all("==" in b.split()[0] for b in pinned)


def test_missing_or_out_of_range_dependencies_are_reported(buildcheck: ModuleType) -> None:
    Requirement, Version = buildcheck.Requirement, buildcheck.Version
    pins = buildcheck.lock_pins("tornado==6.6.1 \\\n    --hash=sha256:00\npeewee==4.4.0\n")
    assert pins == {"tornado": Version("6.6.1"), "peewee": Version("4.4.0")}
    problems = buildcheck.requirement_problems(
        [Requirement("tornado>=6.6,<6.7"), Requirement("peewee>=4.5"), Requirement("uvloop")],
        pins,
    )
    assert problems == [
        "peewee: the build lock pins 4.4.0, outside >=4.5",
        "uvloop: needed by pyproject.toml but not pinned in the build lock",
    ]


def test_an_extra_whose_packages_are_not_pinned_is_reported(buildcheck: ModuleType) -> None:
    # psycopg is installed in the test venv, so its metadata names what [binary] adds.
    problems = buildcheck.requirement_problems(
        [buildcheck.Requirement("psycopg[binary]>=3.2")], {"psycopg": buildcheck.Version("3.3.9")}
    )
    assert problems == ["psycopg[binary]: psycopg-binary is not pinned in the build lock"]


def test_unresolved_imports_of_our_code_fail_the_build(buildcheck: ModuleType) -> None:
    warn = "\n".join(
        [
            "missing module named winreg - imported by platform (delayed, optional)",
            "missing module named uvloop - imported by bindify_appliance.server (top-level)",
            "missing module named 'a.b' - imported by bindify_appliance.x (delayed), y (top-level)",
            "missing module named opt - imported by bindify_appliance.z (top-level, optional)",
            "excluded module named unittest - imported by bindify_appliance.w (delayed)",
            "missing module named nt - imported by bindify_appliance.v (conditional)",
        ]
    )
    assert buildcheck.missing_imports(warn) == [
        "missing module uvloop imported by bindify_appliance.server",
        "missing module a.b imported by bindify_appliance.x",
        "excluded module unittest imported by bindify_appliance.w",
    ]


def test_a_resource_file_missing_from_a_one_folder_build_is_reported(
    buildcheck: ModuleType, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    for name in ("templates/base.html", "static/app.css", "migrations/0001_initial.py"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x")
    (source / "migrations" / "__pycache__").mkdir()
    (source / "migrations" / "__pycache__" / "0001_initial.cpython-311.pyc").write_bytes(b"")
    build = tmp_path / "bindify-dir"
    internal = build / "_internal" / "bindify_appliance" / "_resources"
    for name in ("templates/base.html", "migrations/0001_initial.py"):
        (internal / name).parent.mkdir(parents=True, exist_ok=True)
        (internal / name).write_text("x")
    (build / "bindify").write_text("")
    assert buildcheck.missing_resources(build / "bindify", source) == [
        f"bindify_appliance/_resources/static/app.css is not in {build / 'bindify'}"
    ]
    (internal / "static").mkdir()
    (internal / "static" / "app.css").write_text("x")
    assert buildcheck.missing_resources(build / "bindify", source) == []
