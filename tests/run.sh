#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: installs prerequisites, builds, runs the unit tests
# and the root end-to-end suites (network namespaces, real kernel objects, real traffic).
#
# Fails when any test fails, and when a required end-to-end test did not run and pass: a suite
# that skipped everything is a failure. Tests that cannot run on this kernel print
# "SHOAL-SKIP <test>: <reason>"; every skip is listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/prereqs.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

export SHOAL_SKIP_LOG="${SHOAL_SKIP_LOG:-$(mktemp /tmp/shoal-skips.XXXXXX)}"
log=$(mktemp /tmp/shoal-test-log.XXXXXX)
trap 'rm -f "$log"' EXIT

echo "== build"
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3

echo "== tests (unit + root end-to-end)"
set +e
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
skipped=$(sort -u "$SHOAL_SKIP_LOG" | grep -c . || true)

missing=()
while read -r name; do
  case "$name" in ''|'#'*) continue ;; esac
  grep -Eq "^test ([a-z_:]+::)?${name} \.\.\. ok$" "$log" || missing+=("$name")
done < tests/required-e2e.txt

echo
if [ "$skipped" -gt 0 ]; then
  echo "== skipped (missing kernel features)"
  sort -u "$SHOAL_SKIP_LOG" | sed 's/^/  /'
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "== required end-to-end tests that did not run and pass:"
  printf '  %s\n' "${missing[@]}"
  status=1
fi
echo "shoal: $passed passed, $failed failed, $skipped skipped"
exit "$status"
