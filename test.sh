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
# Every test project under tests/ must report a "Passed!" or "Failed!" line of its own. A test host
# that crashed, or an assembly in which no test ran (none found, or a filter matched none), prints
# no such line: without this check it would simply vanish from the count below.
expected=()
for p in "$root"/tests/*/*.csproj; do expected+=("$(basename "$p" .csproj)"); done
# One plain summary line over all test assemblies, each missing or empty one counted as a failure.
# It stays the last line printed: CI reads it.
awk -v expected="${expected[*]}" '
  /^(Passed|Failed)!/ {
    n = 0
    for (i = 1; i <= NF; i++) {
      v = $(i+1); gsub(",", "", v)
      if ($i == "Failed:") { f += v; n += v }
      if ($i == "Passed:") { p += v; n += v }
      if ($i == "Skipped:") s += v
      if ($i ~ /\.dll$/) { name = $i; sub(/\.dll$/, "", name) }
    }
    # Only skipped tests, or none at all, is an assembly that tested nothing.
    if (n > 0) reported[name] = 1
  }
  /^Test Run Aborted/ { aborted++ }
  END {
    split(expected, want, " ")
    for (k in want) if (!(want[k] in reported)) {
      printf "capsule: %s reported no result: its test host crashed, or no test ran\n", want[k]
      missing++
    }
    # A crash is also counted when the crashed assembly did print a result line after all.
    if (aborted > missing) {
      printf "capsule: %d test run(s) aborted\n", aborted - missing
      missing = aborted
    }
    printf "%d passed, %d failed, %d skipped\n", p, f + missing, s
    exit (missing > 0)
  }' "$log" || rc=1
exit $rc
