"""Guards around `make binary`: the build environment covers the project, the analysis found it.

    python packaging/buildcheck.py requirements    before the build
    python packaging/buildcheck.py warnings FILE   after the build, on PyInstaller's warn file
    python packaging/buildcheck.py resources EXE   after the build, on the executable

`requirements`: every distribution pyproject.toml needs at run time (`dependencies` plus the
`postgres` and `billing` extras, so the one file scales out and can bill) must be pinned in
packaging/requirements-build.txt at a version its range admits. A dependency added to
pyproject.toml without the lock would otherwise leave the frozen executable without it, and it
would fail only when that code runs.

`warnings`: PyInstaller lists every import it could not resolve. Most belong to other platforms
or optional features; an import made by bindify_appliance itself that is neither optional
(inside try/except) nor conditional (inside an if) must resolve, or the executable is broken.

`resources`: every file of templates/, static/ and migrations/ is inside the executable (the
one file's archive, or the one folder's `_internal/`), where resources.resource_dir() finds it.

Exit status 0 when clean; 1 with one line per problem on stderr otherwise. Needs `packaging`
(the build environment has it through PyInstaller).
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

__all__ = [
    "bundled_names",
    "extra_requirements",
    "lock_pins",
    "missing_imports",
    "missing_resources",
    "requirement_problems",
    "runtime_requirements",
]

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_EXTRAS = ("postgres", "billing")
OUR_CODE = ("bindify_appliance", "entry.py", "__main__")
RESOURCE_FOLDERS = ("templates", "static", "migrations")
RESOURCE_PREFIX = "bindify_appliance/_resources"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_WARN = re.compile(r"^(missing|excluded) module named (\S+) - imported by (.*)$")
_IMPORTER = re.compile(r"([\w.]+) \(([^)]*)\)")


def runtime_requirements(pyproject: dict[str, object]) -> list[Requirement]:
    """`dependencies` plus the runtime extras, as parsed requirements."""
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("pyproject.toml has no [project] table")
    specs = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra in RUNTIME_EXTRAS:
        specs.extend(extras.get(extra, []))
    return [Requirement(spec) for spec in specs]


def lock_pins(lock_text: str) -> dict[str, Version]:
    """`name==version` lines of a requirements file, by canonical name."""
    pins: dict[str, Version] = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def extra_requirements(dist: str, extra: str) -> list[Requirement]:
    """What installing `dist[extra]` adds, from the installed metadata (empty if not installed)."""
    try:
        declared = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    added = []
    for spec in declared:
        req = Requirement(spec)
        marker = req.marker
        if (
            marker is not None
            and marker.evaluate({"extra": extra})
            and not marker.evaluate({"extra": ""})
        ):
            added.append(req)
    return added


def requirement_problems(
    requirements: Iterable[Requirement], pins: dict[str, Version]
) -> list[str]:
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        pinned = pins.get(name)
        if pinned is None:
            problems.append(
                f"{req.name}: needed by pyproject.toml but not pinned in the build lock"
            )
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}: the build lock pins {pinned}, outside {req.specifier}")
        for extra in sorted(req.extras):
            for needed in extra_requirements(req.name, extra):
                if canonicalize_name(needed.name) not in pins:
                    problems.append(
                        f"{req.name}[{extra}]: {needed.name} is not pinned in the build lock"
                    )
    return problems


def missing_imports(warn_text: str) -> list[str]:
    """Unresolved imports made by our own code outside try/except and if-blocks."""
    problems = []
    for line in warn_text.splitlines():
        match = _WARN.match(line.strip())
        if not match:
            continue
        state, module, importers = match.groups()
        for importer, kinds in _IMPORTER.findall(importers):
            ours = importer.startswith(OUR_CODE)
            tolerated = "optional" in kinds or "conditional" in kinds
            if ours and not tolerated:
                problems.append(f"{state} module {module.strip(chr(39))} imported by {importer}")
    return problems


def source_resources(root: Path = ROOT) -> set[str]:
    """Bundle paths the resource folders must have: `bindify_appliance/_resources/<folder>/…`."""
    wanted = set()
    for folder in RESOURCE_FOLDERS:
        for path in (root / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                wanted.add(f"{RESOURCE_PREFIX}/{path.relative_to(root).as_posix()}")
    return wanted


def bundled_names(executable: Path) -> set[str]:
    """Every file name inside a one-file executable or a one-folder build's `_internal/`."""
    internal = executable.parent / "_internal"
    if internal.is_dir():
        return {p.relative_to(internal).as_posix() for p in internal.rglob("*") if p.is_file()}
    from PyInstaller.archive.readers import CArchiveReader  # only in the build venv

    return set(CArchiveReader(str(executable)).toc)


def missing_resources(executable: Path, root: Path = ROOT) -> list[str]:
    absent = sorted(source_resources(root) - bundled_names(executable))
    return [f"{name} is not in {executable}" for name in absent]


def main(argv: list[str]) -> int:
    if argv[:1] == ["requirements"]:
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        lock = (ROOT / "packaging" / "requirements-build.txt").read_text(encoding="utf-8")
        problems = requirement_problems(runtime_requirements(pyproject), lock_pins(lock))
        hint = "update packaging/requirements-build.in and run packaging/lock-build.sh"
    elif argv[:1] == ["warnings"] and len(argv) == 2:
        problems = missing_imports(Path(argv[1]).read_text(encoding="utf-8"))
        hint = "install the module in the build lock, or exclude it from build.spec's excludes"
    elif argv[:1] == ["resources"] and len(argv) == 2:
        problems = missing_resources(Path(argv[1]))
        hint = "build.spec's datas must carry templates/, static/ and migrations/"
    else:
        sys.stderr.write(
            "usage: buildcheck.py requirements | warnings WARNFILE | resources EXECUTABLE\n"
        )
        return 2
    for problem in problems:
        sys.stderr.write(f"buildcheck: {problem}\n")
    if problems:
        sys.stderr.write(f"buildcheck: {hint}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
