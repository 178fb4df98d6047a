#!/usr/bin/env bash
# Build the frozen executable from the hash-pinned build environment.
#
#   packaging/build-binary.sh            -> dist/bindify         (one file; `make binary`)
#   packaging/build-binary.sh --onedir   -> dist/bindify-dir/    (one folder; `make binary-dir`)
#
# Reproducible: the build venv (.venv-build) is recreated whenever packaging/requirements-build.txt
# changes and installed with --require-hashes from wheels only; PYTHONHASHSEED=0 fixes set and
# dict ordering inside the analysis; SOURCE_DATE_EPOCH is the commit's time. Two builds of one
# commit give the same file, also from different folders with fresh build venvs
# (packaging/repro-check.sh checks that).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=onefile
case "${1:-}" in
  "") ;;
  --onedir) mode=onedir ;;
  *) echo "usage: $0 [--onedir]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "the build needs Python 3.11+")'
VENV=.venv-build
LOCK=packaging/requirements-build.txt
export PYTHONHASHSEED=0
export PYTHONDONTWRITEBYTECODE=1  # keep the checkout free of stray __pycache__ from the build
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

started=$(date +%s)
stamp="$VENV/.lock-$(sha256sum "$LOCK" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "build venv: installing $LOCK (hash-checked)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # The hashes decide what installs, whatever index pip is configured with. Wheels only: no
  # sdist build step (with its unpinned build dependencies) outside the lock.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary :all: --no-deps -r "$LOCK"
  touch "$stamp"
fi
"$VENV/bin/python" packaging/buildcheck.py requirements

# BINDIFY_COMMIT: for builds without the git metadata (the Docker build context has no .git).
commit=${BINDIFY_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
# Bundled into the executable, then removed so a checkout keeps reading its commit from git.
printf 'COMMIT = "%s"\n' "$commit" > bindify_appliance/_build_info.py
trap 'rm -f bindify_appliance/_build_info.py' EXIT

workpath=build/pyi-$mode
spec_args=()
[ "$mode" = onedir ] && spec_args=(-- --onedir)
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath dist --workpath "$workpath" build.spec "${spec_args[@]}"
"$VENV/bin/python" packaging/buildcheck.py warnings "$workpath/build/warn-build.txt"

if [ "$mode" = onedir ]; then
  exe=dist/bindify-dir/bindify
  size=$(du -sb dist/bindify-dir | cut -f1)
else
  exe=dist/bindify
  size=$(stat -c %s "$exe")
fi
"$VENV/bin/python" packaging/buildcheck.py resources "$exe"
"$exe" --version >/dev/null  # the bundle starts and finds its modules
echo "built $exe ($mode): $size bytes in $(( $(date +%s) - started )) s"
if [ "$mode" = onefile ]; then sha256sum "$exe"; fi
