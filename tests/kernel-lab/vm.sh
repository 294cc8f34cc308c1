#!/usr/bin/env bash
# Runs one command inside the kernel lab: Debian's stock kernel under qemu (software emulation,
# -accel tcg), on this host's root filesystem shared read-only over 9p with a tmpfs overlay,
# no network device. Exits with the command's exit code.
#
# Usage: tests/kernel-lab/vm.sh [--env NAME=VALUE]... [--timeout SECONDS] [--results DIR] [--]
#          COMMAND [ARG]...
#   The command runs as root in the current directory, with PATH, RUST_BACKTRACE, RUST_LOG and
#   SHOAL_LOG passed on, and its output is streamed here as it runs. Files it writes into
#   $KERNEL_LAB_RESULTS (a folder in the guest) are copied into DIR after the run.
# Exit codes: the command's; 77 when the lab cannot run here (no qemu, no kernel, or qemu failed
#   to start: the reason is printed); 124 when the guest ran out of time; 125 when the guest did not report an exit code
#   (its console is printed).
# Environment: SHOAL_KERNEL_LAB_CACHE (where prereqs.sh unpacked the kernel), SHOAL_KERNEL_LAB_MEM
#   (MiB, default 3072), SHOAL_KERNEL_LAB_SMP (default 2), SHOAL_KERNEL_LAB_KEEP=1 keeps the job folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${SHOAL_KERNEL_LAB_CACHE:-/var/cache/shoal/kernel-lab}
timeout_s=900
results=
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) envs+=("$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --) shift; break ;;
    -*) echo "kernel-lab: unknown option $1 (see the usage at the top of $0)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "kernel-lab: no command given (usage: $0 [--env N=V] [--timeout S] -- COMMAND...)" >&2; exit 2; }

cannot_run() { echo "kernel-lab: cannot run here: $*" >&2; exit 77; }
qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || cannot_run "qemu-system-x86_64 is not installed (bash tests/kernel-lab/prereqs.sh)"
tree=$(readlink -f "$cache/current" 2>/dev/null || true)
[ -n "$tree" ] && [ -e "$tree/.complete" ] || cannot_run "no kernel unpacked in $cache (bash tests/kernel-lab/prereqs.sh)"
version=$(ls "$tree/lib/modules")

# Boot the uncompressed kernel through its PVH entry: decompressing the xz bzImage under software
# emulation costs about 5 s per boot.
kernel="$cache/vmlinux-$version"
if [ ! -e "$kernel" ]; then
  bzimage="$tree/boot/vmlinuz-$version"
  offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bzimage" | head -1 | cut -d: -f1 || true)
  # (tail ends on SIGPIPE once xz has its one stream: judge by the result, an ELF file.)
  [ -n "$offset" ] && { tail -c +$((offset + 1)) "$bzimage" | xz -dc --single-stream > "$kernel.tmp" 2>/dev/null || true; }
  if [ -s "$kernel.tmp" ] && [ "$(head -c 4 "$kernel.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    mv "$kernel.tmp" "$kernel"
  else
    rm -f "$kernel.tmp"
    echo "kernel-lab: could not unpack vmlinux from $bzimage: booting the bzImage (about 5 s slower)" >&2
    kernel=$bzimage
  fi
fi

# The initramfs is rebuilt when its inputs change.
initrd="$cache/initramfs-$version.gz"
if [ ! -e "$initrd" ] || [ "$here/init-stage1.sh" -nt "$initrd" ] || [ "$here/initramfs.sh" -nt "$initrd" ]; then
  bash "$here/initramfs.sh" "$tree" "$initrd"
fi

job=$(mktemp -d /tmp/shoal-kernel-lab.XXXXXX)
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  [ "${SHOAL_KERNEL_LAB_KEEP:-0}" = 1 ] && echo "kernel-lab: job folder kept: $job" >&2 || rm -rf "$job"
}
trap cleanup EXIT
pwd > "$job/cwd"
mkdir "$job/results"
{
  echo "export PATH=$(printf %q "$PATH")"
  echo "export KERNEL_LAB_RESULTS=/run/kernel-lab/job/results"
  for v in HOME RUSTUP_HOME CARGO_HOME RUSTUP_TOOLCHAIN RUST_BACKTRACE RUST_LOG SHOAL_LOG; do
    [ -n "${!v:-}" ] && echo "export $v=$(printf %q "${!v}")"
  done
  for e in "${envs[@]}"; do echo "export ${e%%=*}=$(printf %q "${e#*=}")"; done
  printf 'exec'; printf ' %q' "$@"; echo
} > "$job/cmd"
: > "$job/out"

start=$(date +%s.%N)
timeout --foreground -k 5 "$timeout_s" "$qemu" \
  -accel tcg -cpu "${SHOAL_KERNEL_LAB_CPU:-max}" -smp "${SHOAL_KERNEL_LAB_SMP:-2}" -m "${SHOAL_KERNEL_LAB_MEM:-3072}" \
  -nodefaults -no-user-config -no-reboot -display none -monitor none \
  -serial "file:$job/console.log" \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off shoal_init=$here/init-stage2.sh shoal_modules=$tree/lib/modules" \
  -virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$job,mount_tag=job,security_model=none,multidevs=remap" \
  </dev/null 2> "$job/qemu.err" &
qemu_pid=$!
tail -n +1 -f --pid="$qemu_pid" "$job/out" &
tail_pid=$!
set +e
wait "$qemu_pid"
qemu_status=$?
qemu_pid=
wait "$tail_pid"
set -e
end=$(date +%s.%N)

[ -n "$results" ] && mkdir -p "$results" && cp -a "$job/results/." "$results/"
booted=$(cat "$job/booted" 2>/dev/null || echo '?')
echo "kernel-lab: guest kernel $version booted in ${booted} s (guest clock); whole run $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s" >&2
if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
  echo "kernel-lab: the guest did not finish within $timeout_s s" >&2
  tail -n 30 "$job/console.log" >&2 || true
  exit 124
fi
if [ "$qemu_status" != 0 ] && [ ! -s "$job/booted" ]; then
  # qemu itself failed (it exits 0 whatever the guest does): this host cannot run the lab.
  cannot_run "qemu exited $qemu_status before the guest booted: $(tr '\n' ' ' < "$job/qemu.err")"
fi
if [ ! -s "$job/rc" ]; then
  echo "kernel-lab: the guest did not report an exit code (qemu exited $qemu_status); its console:" >&2
  cat "$job/stage2-error" >&2 2>/dev/null || true
  tail -n 40 "$job/console.log" >&2 || true
  exit 125
fi
exit "$(cat "$job/rc")"
