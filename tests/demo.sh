#!/usr/bin/env bash
# The demo, as root on Debian 12: installs prerequisites, builds shoal, installs it as
# /usr/local/bin/shoal, and runs `shoal lab demo`. The lab stays up for exploring;
# `shoal lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo needs no kernel lab (qemu, a stock kernel): only the tests do.
bash tests/prereqs.sh --no-kernel-lab
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "==> building shoal (release)"
cargo build --release --locked --bin shoal 2>&1 | tail -n 1
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/shoal" /usr/local/bin/shoal
exec shoal lab demo "$@"
