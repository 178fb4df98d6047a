#!/usr/bin/env bash
# Build dist/bindify (one file) in its own virtual environment from pinned requirements.
# PYTHONHASHSEED=0 keeps the build reproducible (two builds of one commit give the same file).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-build
export PYTHONHASHSEED=0
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r packaging/requirements-build.txt
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
printf 'COMMIT = "%s"\n' "$commit" > bindify_appliance/_build_info.py
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN --distpath dist --workpath build build.spec
ls -l dist/bindify
