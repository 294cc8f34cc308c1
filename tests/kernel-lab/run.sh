#!/usr/bin/env bash
# The kernel lab stage: builds the test binaries named in tests.list, boots Debian's stock kernel
# once (vm.sh) and runs every suite in it, reporting each test as
# "test kernel_lab::SUITE::TEST ... ok" and each suite's SHOAL-SKIP lines as
# "SHOAL-SKIP kernel_lab::SUITE::TEST: reason" (appended to $SHOAL_SKIP_LOG when set).
# Usage: tests/kernel-lab/run.sh [SUITE]...   (default: every suite in tests.list)
# Exit codes: 0 all passed; 1 a suite failed; 77 the lab cannot run here (reason printed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

names=() kinds=() specs=() args=()
while read -r name kind spec rest; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  [[ "$name" =~ ^[a-z0-9_]+$ ]] || { echo "kernel-lab: tests.list: suite name '$name' must be lower case, digits and _" >&2; exit 2; }
  case "$kind" in
    test) [[ "$spec" == */* ]] || { echo "kernel-lab: tests.list: $name: write the test as PACKAGE/TARGET, not '$spec'" >&2; exit 2; } ;;
    cmd) ;;
    *) echo "kernel-lab: tests.list: $name: kind must be 'test' or 'cmd', not '$kind'" >&2; exit 2 ;;
  esac
  names+=("$name") kinds+=("$kind") specs+=("$spec") args+=("$rest")
done < "$here/tests.list"
[ ${#names[@]} -gt 0 ] || { echo "kernel-lab: no suite selected (tests.list: $(awk '!/^#/ && NF {printf "%s ", $1}' "$here/tests.list"))" >&2; exit 2; }

# Build the test binaries and find their paths: one `cargo test --workspace --no-run`, the same
# build as the host's suite (tests/run.sh), so after it this costs nothing. Building per package
# (`-p`) would unify dependency features differently and rebuild half the tree (6 minutes here).
declare -A exe dir
json=$(cargo test --workspace --locked --no-run --message-format=json)
shoal_bin=""
while IFS= read -r line; do
  [[ "$line" == *'"reason":"compiler-artifact"'* && "$line" == *'"executable":"/'* ]] || continue
  path=$(sed -E 's/.*"executable":"([^"]+)".*/\1/' <<< "$line")
  # The package's name: "path+file:///repo/dataplane#shoal-dataplane@0.1.0" (or "...#0.1.0"
  # when the directory is the package's name).
  pkg_id=$(sed -E 's/.*"package_id":"([^"]+)".*/\1/' <<< "$line")
  pkg=${pkg_id##*#}
  if [[ "$pkg" == *@* ]]; then pkg=${pkg%@*}; else pkg_dir=${pkg_id%#*}; pkg=${pkg_dir##*/}; fi
  target=$(sed -E 's/.*"target":\{[^}]*"name":"([^"]+)".*/\1/' <<< "$line")
  # The profile's "test" says whether this is a test harness ("target" has a "test" flag too).
  is_test=$(sed -E 's/.*"profile":\{[^}]*"test":(true|false).*/\1/' <<< "$line")
  if [ "$is_test" = true ]; then
    [[ "$line" == *'"kind":["lib"]'* ]] && target=lib
    exe[$pkg/$target]=$path
    manifest=$(sed -E 's/.*"manifest_path":"([^"]+)".*/\1/' <<< "$line")
    dir[$pkg/$target]=$(dirname "$manifest")
  elif [ "$pkg/$target" = shoal/shoal ] && [[ "$line" == *'"kind":["bin"]'* ]]; then
    # The shoal binary of this build, for cmd suites (test binaries know theirs).
    shoal_bin=$path
  fi
done <<< "$json"
# Without its debug information (270 -> 30 MB): cheaper to page in over 9p and to install.
if [ -n "$shoal_bin" ]; then
  lean="$(dirname "$shoal_bin")/shoal-kernel-lab"
  if [ ! -e "$lean" ] || [ "$shoal_bin" -nt "$lean" ]; then
    objcopy --strip-debug "$shoal_bin" "$lean.tmp" && mv "$lean.tmp" "$lean"
  fi
  shoal_bin=$lean
fi

# The guest's script. Suites run in $jobs lanes (the guest's CPUs: qemu gives each its own host
# thread), in tests.list order, so list the long ones first. Each suite's output goes to its own
# file in the results folder and is printed whole when the suite ends (or, should the guest run
# out of time, by this script afterwards), test names prefixed, skips kept per suite.
jobs=${SHOAL_KERNEL_LAB_JOBS:-${SHOAL_KERNEL_LAB_SMP:-2}}
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "kernel-lab: SHOAL_KERNEL_LAB_JOBS must be a positive number, not '$jobs'" >&2; exit 2; }
out=$(mktemp -d /tmp/shoal-kernel-lab-out.XXXXXX)
trap 'rm -rf "$out"' EXIT
{
  echo 'R=$KERNEL_LAB_RESULTS'
  [ -n "$shoal_bin" ] && echo "export SHOAL_BIN=$(printf %q "$shoal_bin")"
  for i in "${!names[@]}"; do
    n=${names[$i]}
    prefix="s/^test ([^ ]+) \\.\\.\\. /test kernel_lab::$n::\\1 ... /"
    echo "suite_$n() {"
    if [ "${kinds[$i]}" = test ]; then
      key=${specs[$i]}
      [ -n "${exe[$key]:-}" ] || { echo "kernel-lab: cargo built no test binary for $key" >&2; exit 1; }
      echo "  cd $(printf %q "${dir[$key]}") || return 1"
      echo "  SHOAL_SKIP_LOG=\$R/skips-$n $(printf %q "${exe[$key]}") ${args[$i]} 2>&1 | sed -u -E '$prefix'"
      echo '  return ${PIPESTATUS[0]}'
    else
      echo "  cd $(printf %q "$root") || return 1"
      echo "  SHOAL_SKIP_LOG=\$R/skips-$n ${specs[$i]} ${args[$i]} 2>&1"
      echo "  local rc=\$?; [ \$rc = 0 ] && r=ok || r=FAILED"
      echo "  echo \"test kernel_lab::$n ... \$r\""
      echo "  [ \$rc = 0 ] && echo 'test result: ok. 1 passed; 0 failed; 0 ignored' || echo 'test result: FAILED. 0 passed; 1 failed; 0 ignored'"
      echo '  return $rc'
    fi
    echo "}"
  done
  cat <<'GUEST'
run_suite() {
  local n=$1 start=$SECONDS rc
  echo "$n" > "$R/running-$n"
  ( "suite_$n" ) > "$R/log-$n" 2>&1 < /dev/null
  rc=$?
  echo "kernel-lab: suite $n took $((SECONDS - start)) s" >> "$R/log-$n"
  [ $rc = 0 ] || echo "kernel-lab: suite $n failed (exit $rc)" >> "$R/log-$n"
  rm -f "$R/running-$n"
  return $rc
}
status=0
declare -A lane_of
finish() {  # wait for one suite, print its output whole
  local pid n
  wait -n -p pid; local rc=$?
  n=${lane_of[$pid]}; unset "lane_of[$pid]"
  echo "== kernel lab: $n"; cat "$R/log-$n"
  [ $rc = 0 ] || status=1
}
GUEST
  echo "for n in ${names[*]}; do"
  echo "  while [ \${#lane_of[@]} -ge $jobs ]; do finish; done"
  echo '  run_suite "$n" & lane_of[$!]=$n'
  echo "done"
  echo 'while [ ${#lane_of[@]} -gt 0 ]; do finish; done'
  echo "echo \"kernel-lab: ${#names[@]} suites in $jobs lanes took \$SECONDS s\""
  echo 'exit $status'
} > "$out/suites.sh"

set +e
bash "$here/vm.sh" --env RUST_BACKTRACE=1 --timeout "${SHOAL_KERNEL_LAB_TIMEOUT:-900}" --results "$out/results" \
  -- bash -c "$(cat "$out/suites.sh")"
status=$?
set -e
[ "$status" = 77 ] && exit 77
# Suites that had not ended (the guest ran out of time or died): their output so far.
for f in "$out"/results/running-*; do
  [ -e "$f" ] || continue
  n=${f##*/running-}
  echo "== kernel lab: $n did not finish; its output so far:"
  cat "$out/results/log-$n" 2>/dev/null || true
done

# Skips in the guest, named after their suite.
for i in "${!names[@]}"; do
  n=${names[$i]}
  [ -s "$out/results/skips-$n" ] || continue
  sed -E "s/^SHOAL-SKIP /SHOAL-SKIP kernel_lab::$n::/" "$out/results/skips-$n" | sort -u | while IFS= read -r line; do
    echo "$line" >&2
    if [ -n "${SHOAL_SKIP_LOG:-}" ]; then echo "$line" >> "$SHOAL_SKIP_LOG"; fi
  done
done
exit "$status"
