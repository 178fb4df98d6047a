#!/usr/bin/env bash
# Check the systemd unit offline, as CI does:
#   1. `systemd-analyze verify`: syntax, known directives, valid values. It insists that
#      ExecStart's program exists, so a copy of the unit points it at EXECUTABLE (the freshly
#      built dist/bindify in CI). Any output counts as failure: verify exits 0 on mere warnings
#      such as an unknown or misspelt directive.
#   2. `systemd-analyze security --offline=true`: the exposure score must stay at or below
#      THRESHOLD, in tenths of the printed 0-10 score (default 20, i.e. 2.0; the shipped unit
#      scores 1.5, "OK").
# Works without systemd running (containers, CI): only the systemd package must be installed.
#
#   packaging/systemd/verify.sh EXECUTABLE [UNIT] [THRESHOLD]
set -euo pipefail
exe=$(realpath "${1:?usage: verify.sh EXECUTABLE [UNIT] [THRESHOLD]}")
unit=${2:-"$(dirname "$0")/bindify.service"}
threshold=${3:-20}
test -x "$exe" || { echo "verify.sh: $exe is not executable" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
copy="$scratch/$(basename "$unit")"
sed "s#^ExecStart=/usr/local/bin/bindify#ExecStart=$exe#" "$unit" > "$copy"

out=$(systemd-analyze verify --man=no "$copy" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "verify.sh: systemd-analyze verify reported problems" >&2
  exit 1
fi
if ! report=$(systemd-analyze security --offline=true --threshold="$threshold" "$copy" 2>&1); then
  echo "$report" >&2
  echo "verify.sh: exposure above $threshold/10" >&2
  exit 1
fi
echo "$(basename "$unit"): verify clean; $(echo "$report" | grep -o 'Overall exposure level.*')"
