#!/bin/bash
# Kernel lab, stage 2: PID 1 on the host's root filesystem (read-only 9p under a tmpfs overlay,
# everything mounted by stage 1). Loads the modules listed in modules.list, runs the job the host
# wrote (/run/kernel-lab/job/cmd, in the folder named by job/cwd), records its exit code in
# job/rc, and powers the guest off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
job=/run/kernel-lab/job
off() { sync; echo o > /proc/sysrq-trigger; sleep 10; }
fail() { echo "kernel-lab stage2: $*" >&2; echo "stage2: $*" >> "$job/stage2-error"; off; }

mapfile -t modules < <(grep -v -e '^#' -e '^$' "$(dirname "$0")/modules.list")
modprobe -a "${modules[@]}" || fail "modprobe: $(for m in "${modules[@]}"; do modprobe -n "$m" 2>&1; done)"
ulimit -l unlimited

read -r booted _ < /proc/uptime
echo "$booted" > "$job/booted"
cd "$(cat "$job/cwd")" || fail "cd $(cat "$job/cwd")"
bash "$job/cmd" > "$job/out" 2>&1 < /dev/null
echo $? > "$job/rc"
off
