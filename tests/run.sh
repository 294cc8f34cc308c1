#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: installs prerequisites, builds, runs the unit tests
# and the root end-to-end suites (network namespaces, real kernel objects, real traffic).
#
# Fails when any test fails, and when a required end-to-end test did not run and pass: a suite
# that skipped everything is a failure. Tests that cannot run on this kernel print
# "SHOAL-SKIP <test>: <reason>"; every skip is listed at the end.
#
# Then the kernel lab (tests/kernel-lab/): the suites in tests/kernel-lab/tests.list again, on
# Debian's stock kernel under qemu, where IPVS, ESP and kernel WireGuard exist. When qemu cannot
# run here the lab is skipped with a loud reason ("SHOAL-SKIP kernel-lab: ..."), and .ci/run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/prereqs.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

export SHOAL_SKIP_LOG="${SHOAL_SKIP_LOG:-$(mktemp /tmp/shoal-skips.XXXXXX)}"
log=$(mktemp /tmp/shoal-test-log.XXXXXX)
trap 'rm -f "$log"' EXIT

echo "== build"
build_log=$(mktemp /tmp/shoal-build-log.XXXXXX)
if ! cargo build --workspace --all-targets --locked >"$build_log" 2>&1; then
  # The whole compiler output: the error is what matters, and it is rarely in the last lines.
  cat "$build_log"
  rm -f "$build_log"
  echo "shoal: 0 passed, 1 failed (build)"
  exit 1
fi
tail -n 1 "$build_log"
rm -f "$build_log"

echo "== kernel features (shoal doctor)"
"${CARGO_TARGET_DIR:-target}/debug/shoal" doctor || true

echo "== tests (unit + root end-to-end)"
set +e
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo "== lints (cargo fmt --check, cargo clippy -D warnings)"
lint_log=$(mktemp /tmp/shoal-lint-log.XXXXXX)
if cargo fmt --all --check >"$lint_log" 2>&1 && cargo clippy --workspace --all-targets --locked -- -D warnings >>"$lint_log" 2>&1; then
  printf '%s\n' "test lints::rustfmt_and_clippy ... ok" "test result: ok. 1 passed; 0 failed; 0 ignored" | tee -a "$log"
else
  cat "$lint_log"
  printf '%s\n' "test lints::rustfmt_and_clippy ... FAILED" "test result: FAILED. 0 passed; 1 failed; 0 ignored" | tee -a "$log"
  status=1
fi
rm -f "$lint_log"

echo "== Vagrantfile (vagrant/: checked with Ruby; Vagrant cannot run here)"
if command -v ruby >/dev/null 2>&1; then
  if ruby -c vagrant/Vagrantfile >/dev/null && ruby vagrant/test_vagrantfile.rb; then
    printf '%s\n' "test vagrant::vagrantfile_defines_the_seeds_lab ... ok" "test result: ok. 1 passed; 0 failed; 0 ignored" | tee -a "$log"
  else
    printf '%s\n' "test vagrant::vagrantfile_defines_the_seeds_lab ... FAILED" "test result: FAILED. 0 passed; 1 failed; 0 ignored" | tee -a "$log"
    status=1
  fi
else
  echo "SHOAL-SKIP vagrant::vagrantfile_defines_the_seeds_lab: no ruby (bash tests/prereqs.sh installs it)" | tee -a "$SHOAL_SKIP_LOG" >&2
fi

echo "== kernel lab (Debian's stock kernel under qemu -accel tcg: IPVS, ESP, WireGuard)"
lab_start=$(date +%s)
set +e
bash tests/kernel-lab/run.sh 2>&1 | tee -a "$log"
lab_status=${PIPESTATUS[0]}
set -e
lab_ran=1
if [ "$lab_status" = 77 ]; then
  lab_ran=0
  reason=$(grep -m1 -o 'kernel-lab: cannot run here: .*' "$log" | sed 's/^kernel-lab: cannot run here: //')
  echo "SHOAL-SKIP kernel-lab: qemu cannot run here: ${reason:-unknown reason}" >> "$SHOAL_SKIP_LOG"
  echo "!! KERNEL LAB SKIPPED: ${reason:-unknown reason}. IPVS, ESP and kernel WireGuard paths were NOT tested." >&2
elif [ "$lab_status" != 0 ]; then
  status=1
fi
echo "== kernel lab took $(( $(date +%s) - lab_start )) s"

passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
skipped=$(sort -u "$SHOAL_SKIP_LOG" | grep -c . || true)

missing=()
while read -r name; do
  case "$name" in ''|'#'*) continue ;; esac
  # Kernel lab tests are reported as skipped (above) when the lab could not run.
  [ "$lab_ran" = 0 ] && [[ "$name" == kernel_lab::* ]] && continue
  grep -Eq "^test ([a-z_:]+::)?${name} \.\.\. ok$" "$log" || missing+=("$name")
done < tests/required-e2e.txt

echo
# Each failed test's reason once more, here at the end: CI keeps the log's tail, and a
# failure's reason is otherwise far above it. For each: its panic (with 4 lines after) and the
# last 30 lines of its output (the daemons' logs, when a cluster test failed).
if grep -q '^---- .* stdout ----$' "$log"; then
  echo "== failures (repeated from above)"
  awk '
    /^---- .* stdout ----$/ { if (name != "") flush(); name = $2; n = 0; next }
    name != "" && (/^failures:$/ || /^test result:/) { flush(); name = ""; next }
    name != "" { buf[n++] = $0 }
    function flush(  i, j, from) {
      print "---- " name
      for (i = 0; i < n; i++) if (buf[i] ~ /panicked at/) for (j = i; j < n && j <= i + 4; j++) print "  " buf[j]
      print "  ... last lines:"
      from = n > 30 ? n - 30 : 0
      for (i = from; i < n; i++) print "  " buf[i]
    }
  ' "$log"
fi
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
