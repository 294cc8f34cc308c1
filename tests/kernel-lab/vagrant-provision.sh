#!/usr/bin/env bash
# Kernel lab test of vagrant/provision.sh, the Vagrant lab's provisioning: three hosts smgr,
# snode1, snode2 at 192.168.33.10/20/30 (network namespaces on one bridge, inside the guest),
# each provisioned by the script exactly as Vagrant runs it (the daemon in the background, as
# there is no systemd here), then `shoal node ls` on smgr must list all three hosts Ready.
# What this cannot check: Vagrant itself, the rustup install and the release build (the guest
# reuses the build under test: SHOAL_BIN), and the systemd unit.
# Runs only inside the kernel lab: it installs /usr/local/bin/shoal and writes /var/lib.
set -euo pipefail
[ -d /run/kernel-lab/job ] || { echo "vagrant-provision: runs only inside the kernel lab (tests/kernel-lab/run.sh provision)" >&2; exit 2; }
[ -x "${SHOAL_BIN:-}" ] || { echo "vagrant-provision: SHOAL_BIN must name the shoal binary under test" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
hosts=(smgr snode1 snode2)
declare -A ip=([smgr]=192.168.33.10 [snode1]=192.168.33.20 [snode2]=192.168.33.30)
under=kl-vagrant-underlay

cleanup() {
  for h in "${hosts[@]}"; do
    pid=$(cat "/var/lib/shoal-$h/daemon.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for h in "${hosts[@]}"; do ip netns del "kl-$h" 2>/dev/null || true; done
  ip netns del "$under" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$under"
ip -n "$under" link add br0 type bridge
ip -n "$under" link set br0 up
for h in "${hosts[@]}"; do
  ip netns add "kl-$h"
  ip -n "kl-$h" link set lo up
  ip -n "kl-$h" link add eth1 type veth peer name "v-$h" netns "$under"
  ip -n "$under" link set "v-$h" master br0 up
  ip -n "kl-$h" addr add "${ip[$h]}/24" dev eth1
  ip -n "kl-$h" link set eth1 up
done

provision() {
  local h=$1; shift
  echo "== provision.sh $* (on $h)"
  ip netns exec "kl-$h" env SHOAL_BIN="$SHOAL_BIN" SHOAL_STATE_DIR="/var/lib/shoal-$h" \
    SHOAL_HOST="unix:///run/shoal-$h/shoal.sock" SHOAL_DAEMON_ARGS="--hostname $h --no-dns-upstream" \
    SHOAL_TOKEN_OUT=/run/kl-vagrant/worker-token \
    bash "$repo/vagrant/provision.sh" "$@"
}
provision smgr manager "${ip[smgr]}"
provision snode1 worker "${ip[snode1]}" "${ip[smgr]}" /run/kl-vagrant/worker-token
provision snode2 worker "${ip[snode2]}" "${ip[smgr]}" /run/kl-vagrant/worker-token
echo "== provision.sh again on smgr (re-running changes nothing)"
provision smgr manager "${ip[smgr]}" | tee /tmp/kl-reprovision.log
grep -q 'already in a cluster' /tmp/kl-reprovision.log || { echo "vagrant-provision: re-provisioning smgr did not find it in its cluster" >&2; exit 1; }

echo "== shoal node ls (on smgr)"
ls_nodes() { ip netns exec kl-smgr env SHOAL_HOST=unix:///run/shoal-smgr/shoal.sock shoal node ls; }
for _ in $(seq 1 150); do
  out=$(ls_nodes 2>&1 || true)
  ready=$(grep -cE '(smgr|snode1|snode2) .*Ready' <<< "$out" || true)
  [ "$ready" = 3 ] && break
  sleep 0.4
done
echo "$out"
for h in "${hosts[@]}"; do
  grep -qE "$h .*Ready" <<< "$out" || { echo "vagrant-provision: $h is not Ready in smgr's node ls" >&2; exit 1; }
done
echo "vagrant-provision: smgr, snode1 and snode2 provisioned and Ready"
