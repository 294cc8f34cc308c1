#!/usr/bin/env bash
# Provisions one host of a shoal cluster (Debian 12), as root: installs the prerequisites with
# the README's install script (tests/prereqs.sh), builds and installs shoal, starts the shoal
# daemon, then makes the host the first manager or joins it to the cluster.
#
# Usage: provision.sh manager ADVERTISE_ADDR
#        provision.sh worker  ADVERTISE_ADDR MANAGER_ADDR TOKEN_FILE
#   The manager prints its worker join token and writes it to $SHOAL_TOKEN_OUT when set; a
#   worker reads the token from TOKEN_FILE and joins MANAGER_ADDR:2377.
# Environment:
#   SHOAL_BIN         install this binary instead of building one (cargo build --release)
#   SHOAL_STATE_DIR   the daemon's state (default /var/lib/shoal)
#   SHOAL_HOST        the daemon's API socket (default unix:///run/shoal/shoal.sock)
#   SHOAL_DAEMON_ARGS more `shoal daemon` flags (e.g. --no-dns-upstream)
# Re-running it is safe: a host already in a cluster is left as it is.
# The daemon runs as the systemd unit shoal.service where systemd runs, else in the background
# (pid in $SHOAL_STATE_DIR/daemon.pid, log in $SHOAL_STATE_DIR/daemon.log).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
role=${1:-}
addr=${2:-}
usage="usage: $0 manager ADVERTISE_ADDR | $0 worker ADVERTISE_ADDR MANAGER_ADDR TOKEN_FILE"
case "$role" in
  manager) [ $# = 2 ] || { echo "$usage" >&2; exit 2; } ;;
  worker) [ $# = 4 ] || { echo "$usage" >&2; exit 2; }; manager=$3; token_file=$4 ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
state=${SHOAL_STATE_DIR:-/var/lib/shoal}
export SHOAL_HOST=${SHOAL_HOST:-unix:///run/shoal/shoal.sock}
socket=${SHOAL_HOST#unix://}
say() { echo "provision ($role $addr): $*"; }

# 1. Rust, when the box has none (Debian 12's rustc is too old for shoal).
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${SHOAL_BIN:-}" ] && ! command -v cargo >/dev/null 2>&1; then
  say "installing Rust with rustup"
  command -v curl >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq curl ca-certificates >/dev/null; }
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# 2. The README's install script (build and runtime prerequisites; no kernel lab on a VM).
say "prerequisites (tests/prereqs.sh)"
bash "$repo/tests/prereqs.sh" --no-kernel-lab

# 3. shoal itself.
if [ -n "${SHOAL_BIN:-}" ]; then
  bin=$SHOAL_BIN
else
  say "building shoal (cargo build --release)"
  (cd "$repo" && cargo build --release --locked -p shoal)
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/shoal"
fi
# -C: the same binary again is left alone; a new one replaces the file (a running daemon keeps
# the old one).
install -C -m 755 "$bin" /usr/local/bin/shoal
say "installed $(/usr/local/bin/shoal --version) (shoal doctor: which kernel features and backends)"

# 4. The daemon.
mkdir -p "$state" "$(dirname "$socket")"
daemon_args=(daemon --state-dir "$state" --socket "$socket" --advertise-addr "$addr" ${SHOAL_DAEMON_ARGS:-})
if [ -d /run/systemd/system ]; then
  say "starting shoal.service"
  cat > /etc/systemd/system/shoal.service <<UNIT
[Unit]
Description=shoal node daemon
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
ExecStart=/usr/local/bin/shoal ${daemon_args[*]}
Restart=on-failure
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now shoal.service
elif ! { [ -s "$state/daemon.pid" ] && kill -0 "$(cat "$state/daemon.pid")" 2>/dev/null; }; then
  say "starting shoal daemon (no systemd here)"
  setsid /usr/local/bin/shoal "${daemon_args[@]}" >> "$state/daemon.log" 2>&1 < /dev/null &
  echo $! > "$state/daemon.pid"
fi
for _ in $(seq 1 300); do
  [ -S "$socket" ] && break
  sleep 0.2
done
[ -S "$socket" ] || { echo "provision: shoal daemon did not open $socket; see $state/daemon.log or journalctl -u shoal" >&2; exit 1; }

# 5. The cluster.
if shoal node ls >/dev/null 2>&1 || [ -s "$state/joined" ]; then
  say "already in a cluster: nothing to do"
elif [ "$role" = manager ]; then
  say "shoal init --advertise-addr $addr"
  shoal init --advertise-addr "$addr"
  token=$(shoal join-token -q worker)
  [ -n "${SHOAL_TOKEN_OUT:-}" ] && { mkdir -p "$(dirname "$SHOAL_TOKEN_OUT")"; echo "$token" > "$SHOAL_TOKEN_OUT"; }
  echo "$role" > "$state/joined"
else
  [ -s "$token_file" ] || { echo "provision: no join token in $token_file: provision the manager first (vagrant up smgr, or vagrant provision smgr)" >&2; exit 1; }
  say "shoal join --token ... $manager:2377"
  shoal join --token "$(tr -d '[:space:]' < "$token_file")" --advertise-addr "$addr" "$manager:2377"
  echo "$role" > "$state/joined"
fi
