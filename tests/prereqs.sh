#!/usr/bin/env bash
# Installs what shoal's build, tests and demo need on Debian 12 (bookworm). Run as root.
# Idempotent: asks apt only when something is missing.
set -euo pipefail

packages=(
  iproute2 iputils-ping nftables ethtool procps util-linux kmod
  clang llvm libbpf-dev bpftool libclang-dev pkg-config protobuf-compiler
  iperf3 dnsutils curl netcat-openbsd dnsperf dnsmasq-base
)

if [ "$(id -u)" != 0 ]; then
  echo "prereqs: run as root (apt-get, network namespaces)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "prereqs: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "prereqs: no Rust toolchain. Install Rust 1.85 or newer (https://rustup.rs) and run again." >&2
  exit 1
fi
rust_minor=$(rustc --version | awk '{split($2, v, "."); print v[2]}')
if [ "$rust_minor" -lt 85 ]; then
  echo "prereqs: $(rustc --version) is too old: shoal needs Rust 1.85 or newer (rustup update)." >&2
  exit 1
fi
