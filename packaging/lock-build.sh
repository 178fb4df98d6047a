#!/usr/bin/env bash
# Regenerate packaging/requirements-build.txt (every distribution pinned, with the sha256 of every
# published file, so `pip install --require-hashes` refuses anything else) from
# packaging/requirements-build.in. Run it after changing the .in file; commit both.
# pip-tools lives in a throw-away venv under build/ (ignored by git), not in the project's venvs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOCKVENV=build/venv-lock
test -x "$LOCKVENV/bin/pip-compile" || {
  "$PYTHON" -m venv "$LOCKVENV"
  "$LOCKVENV/bin/python" -m pip install --quiet pip-tools==7.6.2
}
"$LOCKVENV/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
  --output-file packaging/requirements-build.txt packaging/requirements-build.in
echo "packaging/requirements-build.txt regenerated"
