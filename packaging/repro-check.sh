#!/usr/bin/env bash
# Reproducibility check: build the one-file executable twice from one snapshot of the work tree,
# at two different paths, each with its own freshly created build venv, and compare sha256.
# Exit 0 when identical; 1 (with both digests) when not. Two full builds: about 5 minutes.
#
#   packaging/repro-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d /tmp/bindify-repro.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# One snapshot (with .git, so both builds embed the same commit id and timestamp), never venvs
# or build output; the two copies get different path lengths on purpose.
tar --exclude='./.venv*' --exclude=./build --exclude=./dist --exclude=./bindify-data \
  --exclude='*/__pycache__' --exclude=./.hypothesis --exclude='./.*_cache' \
  -cf "$scratch/tree.tar" .
digests=()
for copy in one second-copy; do
  mkdir -p "$scratch/$copy"
  tar -C "$scratch/$copy" -xf "$scratch/tree.tar"
  (cd "$scratch/$copy" && ./packaging/build-binary.sh >"$scratch/$copy.log" 2>&1) \
    || { cat "$scratch/$copy.log" >&2; exit 1; }
  digests+=("$(sha256sum "$scratch/$copy/dist/bindify" | cut -d' ' -f1)")
  echo "build at $scratch/$copy: ${digests[-1]}"
done
if [ "${digests[0]}" = "${digests[1]}" ]; then
  echo "identical"
else
  echo "DIFFERENT" >&2
  exit 1
fi
