#!/usr/bin/env bash
# Kernel lab test of vagrant/provision.sh, the Vagrant lab's provisioning: three hosts smgr,
# snode1, snode2 at 192.168.33.10/20/30 (network namespaces on one bridge, inside the guest),
# each provisioned by the script exactly as Vagrant runs it (the daemon in the background, as
# there is no systemd here), then `shoal node ls` on smgr must list all three hosts Ready. Then
# what a user does next in that lab, on this (6.1) kernel with the load balancer chosen by auto:
# a published service answers `curl <every host>:5000` from a client on the lab network, and a
# task over its --limit-memory is killed (cgroup v2 here: the host under test is hybrid v1).
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
  ip netns del kl-client 2>/dev/null || true
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

echo "== shoal node ls (on smgr) [${SECONDS}s]"
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

cli() { ip netns exec kl-smgr env SHOAL_HOST=unix:///run/shoal-smgr/shoal.sock shoal "$@"; }
echo "== a published service through the routing mesh (load balancer: auto) [${SECONDS}s]"
cli network create --driver overlay backend
cli service create --detach --name vote --replicas 3 -p 5000:80 --network backend shoal/whoami
ip netns add kl-client
ip -n kl-client link set lo up
ip -n kl-client link add eth0 type veth peer name v-client netns "$under"
ip -n "$under" link set v-client master br0 up
ip -n kl-client addr add 192.168.33.100/24 dev eth0
ip -n kl-client link set eth0 up
for h in "${hosts[@]}"; do
  seen=""
  # Six requests per curl, each on its own connection (a process costs 0.2 s under emulation).
  urls=(); for _ in 1 2 3 4 5 6; do urls+=("http://${ip[$h]}:5000/"); done
  for _ in $(seq 1 100); do
    names=$(ip netns exec kl-client curl -s --max-time 2 -H 'Connection: close' "${urls[@]}" | sed -n 's/^Name: //p' || true)
    seen=$(printf '%s\n%s' "$seen" "$names" | grep . | sort -u || true)
    [ "$(grep -c . <<< "$seen")" = 3 ] && break
    sleep 0.2
  done
  count=$(grep -c . <<< "$seen" || true)
  echo "curl ${ip[$h]}:5000 reached $count replicas:" $seen
  [ "$count" = 3 ] || { cli service ps vote >&2; echo "vagrant-provision: ${ip[$h]}:5000 did not reach all 3 replicas" >&2; exit 1; }
done

echo "== a task over its memory limit is killed [${SECONDS}s]"
cli service create --detach --name greedy --restart-condition none --limit-memory 16M --network backend host sh -c 'head -c 200000000 /dev/zero | tail'
for _ in $(seq 1 150); do
  ps=$(cli service ps greedy)
  grep -q 'code 137' <<< "$ps" && break
  sleep 0.4
done
echo "$ps"
grep -q 'code 137' <<< "$ps" || { echo "vagrant-provision: the greedy task was not killed at its memory limit" >&2; exit 1; }
echo "vagrant-provision: the mesh answers on every host and memory limits hold [${SECONDS}s]"
