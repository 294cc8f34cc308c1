#!/usr/bin/env bash
# The routing mesh benchmark (benches/mesh.rs) under Debian's stock kernel in the kernel lab,
# which has IPVS (this machine's kernel has not): builds the bench binary here, boots the guest
# once and runs eBPF, nftables and IPVS in that one run, so their ratios share the emulation.
# Software emulation (qemu TCG) slows everything: compare ratios within one run only, never
# absolute figures with the host's.
#
# Usage: tests/kernel-lab/bench-mesh.sh            (from the repository root, as root)
# Environment, passed into the guest (defaults for emulation in brackets): SHOAL_BENCH_LB
#   [every balancer the guest kernel can run], SHOAL_BENCH_ONLY [both halves],
#   SHOAL_BENCH_CONNS [1000], SHOAL_BENCH_ROUNDS [3], SHOAL_BENCH_SERVICES [10000];
#   SHOAL_KERNEL_LAB_TIMEOUT [1800] s for the whole guest run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cargo bench --bench mesh --no-run --message-format=json 2>/dev/null |
  ruby -rjson -ne 'm = JSON.parse($_) rescue next; puts m["executable"] if m["reason"] == "compiler-artifact" && m["target"]["name"] == "mesh" && m["executable"]' | tail -1)
[ -n "$bin" ] || { echo "bench-mesh: cargo bench --bench mesh --no-run found no executable (run it to see why)" >&2; exit 1; }
envs=(--env "SHOAL_BENCH_CONNS=${SHOAL_BENCH_CONNS:-1000}" --env "SHOAL_BENCH_ROUNDS=${SHOAL_BENCH_ROUNDS:-3}"
  --env "SHOAL_BENCH_SERVICES=${SHOAL_BENCH_SERVICES:-10000}")
for v in SHOAL_BENCH_LB SHOAL_BENCH_ONLY; do
  [ -n "${!v:-}" ] && envs+=(--env "$v=${!v}")
done
echo "bench-mesh: $bin in the kernel lab (software emulation: compare ratios within this run only)" >&2
exec bash tests/kernel-lab/vm.sh "${envs[@]}" --timeout "${SHOAL_KERNEL_LAB_TIMEOUT:-1800}" -- "$bin" --bench
