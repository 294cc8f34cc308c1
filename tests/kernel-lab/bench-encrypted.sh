#!/usr/bin/env bash
# The encrypted overlay benchmark (benches/encrypted.rs) under Debian's stock kernel in the
# kernel lab, which has kernel WireGuard and ESP (this machine's kernel has neither): builds the
# bench binary here, boots the guest once and runs kernel WireGuard, IPsec and userspace
# WireGuard (with boringtun-cli when SHOAL_BORINGTUN names it) in that one run, each against the
# plain overlay of its own phase. Software emulation (qemu TCG) slows everything, crypto most:
# compare ratios within one run only, never absolute figures with the host's.
#
# Usage: tests/kernel-lab/bench-encrypted.sh        (from the repository root, as root)
# Environment, passed into the guest (defaults for emulation in brackets):
#   SHOAL_BENCH_ENCRYPTION [every backend the guest kernel can run: kernel,ipsec,userspace],
#   SHOAL_BENCH_SECS [5], SHOAL_BENCH_ROUNDS [3], SHOAL_BORINGTUN [none: its row is skipped; the
#   guest sees the host's files, so a path from `cargo install boringtun-cli --root DIR` works];
#   SHOAL_KERNEL_LAB_TIMEOUT [1800] s for the whole guest run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench --bench encrypted --no-run --message-format=json 2>/dev/null |
  ruby -rjson -ne 'm = JSON.parse($_) rescue next; puts m["executable"] if m["reason"] == "compiler-artifact" && m["target"]["name"] == "encrypted" && m["executable"]' | tail -1)
[ -n "$bin" ] || { echo "bench-encrypted: cargo bench --bench encrypted --no-run found no executable (run it to see why)" >&2; exit 1; }
envs=(--env "SHOAL_BENCH_SECS=${SHOAL_BENCH_SECS:-5}" --env "SHOAL_BENCH_ROUNDS=${SHOAL_BENCH_ROUNDS:-3}")
for v in SHOAL_BENCH_ENCRYPTION SHOAL_BORINGTUN; do
  [ -n "${!v:-}" ] && envs+=(--env "$v=${!v}")
done
echo "bench-encrypted: $bin in the kernel lab (software emulation: compare ratios within this run only)" >&2
exec bash tests/kernel-lab/vm.sh "${envs[@]}" --timeout "${SHOAL_KERNEL_LAB_TIMEOUT:-1800}" -- "$bin" --bench
