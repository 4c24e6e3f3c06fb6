#!/usr/bin/env bash
# Runs every test: unit tests of the pure core, then the lab tests that drive real namespaces,
# agents and unmodified programs. Installs what is missing first. Needs root.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/setup.sh" || exit 1
config="${CAPSULE_CONFIG:-Release}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
dotnet test "$root/Capsule.slnx" -c "$config" --no-build -nologo "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# One plain summary line over all test assemblies.
awk '/^(Passed|Failed)!/ { for (i = 1; i <= NF; i++) { v = $(i+1); gsub(",", "", v);
       if ($i == "Failed:") f += v; if ($i == "Passed:") p += v; if ($i == "Skipped:") s += v } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit $rc
