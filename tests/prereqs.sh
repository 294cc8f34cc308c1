#!/usr/bin/env bash
# Installs what shoal's build, tests and demo need on Debian 12 (bookworm). Run as root.
# Idempotent: asks apt only when something is missing.
# --no-kernel-lab: leave out the kernel lab's qemu, stock kernel and ruby (tests/kernel-lab/), as
# on a cluster host (vagrant/provision.sh).
set -euo pipefail
kernel_lab=1
for arg in "$@"; do
  case "$arg" in
    --no-kernel-lab) kernel_lab=0 ;;
    *) echo "prereqs: unknown option $arg (only --no-kernel-lab)" >&2; exit 2 ;;
  esac
done

packages=(
  iproute2 iputils-ping nftables ethtool procps util-linux kmod
  clang llvm libbpf-dev bpftool libclang-dev pkg-config protobuf-compiler
  iperf3 dnsutils curl netcat-openbsd dnsperf dnsmasq-base busybox-static tar
  redis-server redis-tools python3
  runc docker-registry skopeo gzip tini
  e2fsprogs
)

if [ "$(id -u)" != 0 ]; then
  echo "prereqs: run as root (apt-get, network namespaces)" >&2
  exit 1
fi

# One dpkg-query for all (it runs inside the kernel lab's emulated guest too).
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}' || true)
declare -A have
for p in $installed; do have[$p]=1; done
missing=()
for p in "${packages[@]}"; do
  [ -n "${have[$p]:-}" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "prereqs: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # redis-server is a workload of the tests (run inside tasks), not a service of this host:
  # keep its package from starting one (policy-rc.d 101 = "do not start"), unless the host
  # already has a policy of its own.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [ -n "$policy" ]; then rm -f "$policy"; fi
  [ "$status" = 0 ] || exit "$status"
fi

# The Docker CLI that tests/engine.rs drives against shoal's Engine API: Debian's docker.io
# 20.10 client (API 1.41), extracted alone from the package. dockerd and containerd are never
# installed or started. It goes to its own directory; /usr/local/bin/docker points at it only
# when the host has no docker client of its own.
docker_dir=/usr/local/lib/shoal/docker.io
if [ ! -x "$docker_dir/docker" ]; then
  echo "prereqs: extracting the docker client from Debian's docker.io package"
  tmp=$(mktemp -d)
  # apt-get download runs as the _apt user when it can: give it a directory it may write.
  chmod 755 "$tmp"
  ( cd "$tmp" && apt-get download -qq docker.io >/dev/null 2>&1 ) || { apt-get update -qq && ( cd "$tmp" && apt-get download -qq docker.io ); }
  mkdir -p "$tmp/x" "$docker_dir"
  dpkg-deb --fsys-tarfile "$tmp"/docker.io_*.deb | tar -x -C "$tmp/x" ./usr/bin/docker
  install -m 0755 "$tmp/x/usr/bin/docker" "$docker_dir/docker"
  rm -rf "$tmp"
fi
if ! command -v docker >/dev/null 2>&1; then
  ln -sf "$docker_dir/docker" /usr/local/bin/docker
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "prereqs: no Rust toolchain. Install Rust 1.85 or newer (https://rustup.rs) and run again." >&2
  exit 1
fi
# The test command checks formatting and lints (rustfmt, clippy): rustup's default profile has
# both; a minimal one gets them here.
if command -v rustup >/dev/null 2>&1 && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
rust_minor=$(rustc --version | awk '{split($2, v, "."); print v[2]}')
if [ "$rust_minor" -lt 85 ]; then
  echo "prereqs: $(rustc --version) is too old: shoal needs Rust 1.85 or newer (rustup update)." >&2
  exit 1
fi

# The kernel lab (tests/kernel-lab/): when it cannot be installed, tests/run.sh skips the lab
# loudly and .ci/run fails.
if [ "$kernel_lab" = 1 ] && ! bash "$(dirname "$0")/kernel-lab/prereqs.sh"; then
  echo "prereqs: WARNING: the kernel lab's prerequisites could not be installed (see above): tests/run.sh will skip the kernel lab" >&2
fi
