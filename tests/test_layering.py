"""The package's seams, checked on its source: the rules of issue 13's new shape.

- Handlers (`web/`, `api/`, `ops/`) never call a cache `forget()` themselves: the operations in
  `usecases/` (and the connect flows) do the write, the invalidation and the audit together.
- The admin API, the operations routes and the proxy do not import the page layer.
- No call site outside `errors.py` spells an HTTP status or code for `HTTPFacingError`: the
  family's classes carry them.
- The store raises no HTTP-facing error.
- No module of the package is over 500 lines (one job each; split before it grows past).
- One `write_error` in the package (`http.base.ErrorSeam`): pages, the API, the OAuth endpoints
  and the proxy's exchange change only the shape of an error answer (`render_error`).
- Handlers and CLI bodies (`web/`, `api/`, `ops/`, `commands/`) change, disable, delete and
  offboard users only through `usecases.users`, never the store's or `accounts`' functions.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import bindify_appliance

PACKAGE = Path(bindify_appliance.__file__).parent
PAGE_LAYER = (
    "bindify_appliance.web.pages",
    "bindify_appliance.web.session",
    "bindify_appliance.web.ui",
)


@functools.cache  # each file parsed once for all the tests here (they only read the trees)
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _modules(*folders: str) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            yield path, _parsed(path)


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_handler_forgets_a_connection_itself() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path, tree in _modules("web", "api", "ops")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "forget"
    ]
    assert offenders == []


def test_api_ops_and_proxy_do_not_import_the_page_layer() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path, tree in _modules("api", "ops", "proxy", "http", "usecases", "commands")
        for name in _imports(tree)
        if name.startswith(PAGE_LAYER)
    ]
    assert offenders == []


def test_no_call_site_spells_an_http_status_or_code() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "HTTPFacingError"
            ):
                spelled = {k.arg for k in node.keywords} & {"status", "code"}
                if spelled:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_store_raises_no_http_errors() -> None:
    """Store refusals are domain errors (`StoreError`); `errors.http_parts` maps them."""
    from bindify_appliance import errors

    http_names = {
        name
        for name in dir(errors)
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), errors.HTTPFacingError)
    }
    offenders = [
        f"{path.relative_to(PACKAGE)}: {alias.name}"
        for path, tree in _modules("store")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "bindify_appliance.errors"
        for alias in node.names
        if alias.name in http_names
    ]
    assert offenders == []


_USER_WRITES = {"update_user", "delete_user", "offboard"}


def test_user_changes_go_through_the_operations() -> None:
    """A handler that wrote a user row itself would skip the memo, billing or the audit entry."""
    offenders = []
    for path, tree in _modules("web", "api", "ops", "commands"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in _USER_WRITES:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} .{node.attr}")
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module != "bindify_appliance.usecases.users"
                and any(alias.name in _USER_WRITES for alias in node.names)
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} from {node.module}")
    assert offenders == []


def test_one_write_error_in_the_package() -> None:
    definitions = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path, tree in _modules(".")
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "write_error"
    ]
    assert [where.split(":")[0] for where in definitions] == ["http/base.py"], definitions


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}
