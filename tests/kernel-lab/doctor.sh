#!/usr/bin/env bash
# Kernel lab test of `shoal doctor`: Debian's stock kernel has every feature shoal uses, so the
# doctor must find them all (its first line ends in "missing none") and pick a load balancer.
set -euo pipefail
[ -x "${SHOAL_BIN:-}" ] || { echo "doctor: SHOAL_BIN must name the shoal binary under test" >&2; exit 2; }
out=$("$SHOAL_BIN" doctor)
echo "$out"
head -1 <<< "$out" | grep -q 'missing none$' || { echo "doctor: a feature of this kernel was reported missing" >&2; exit 1; }
grep -qE '^  load balancer +(ebpf|nftables|ipvs) ' <<< "$out" || { echo "doctor: no load balancer picked" >&2; exit 1; }
