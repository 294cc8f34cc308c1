#!/bin/sh
# Kernel lab, stage 1 (/init in the initramfs, busybox): reach the host's root filesystem over 9p,
# make it writable with a tmpfs overlay, mount everything a root test expects (static busybox
# does it faster than the host's dynamically linked tools under emulation; /run is a fresh tmpfs,
# the rest of the tree, /tmp included, shows the host's files), and switch_root into
# it (not chroot: module autoloading runs /sbin/modprobe from the real root). Stage 2 is the
# script named by shoal_init= on the kernel command line; shoal_modules= names the kernel
# package's lib/modules, bound onto /lib/modules.
fail() { echo "kernel-lab stage1: $*"; echo o > /proc/sysrq-trigger; sleep 5; }
n=/newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for ko in /modules/*.ko; do insmod "$ko" || fail "insmod $ko"; done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro root /lower || fail "mount 9p root"
mount -t tmpfs -o mode=755,size=80% upper /upper || fail "mount tmpfs"
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay $n \
  || fail "mount overlay"
for d in dev proc sys; do mount --move /$d $n/$d || fail "move /$d"; done
mkdir -p $n/dev/pts $n/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $n/dev/pts
mount -t tmpfs -o mode=1777 shm $n/dev/shm
ln -sfn /proc/self/fd $n/dev/fd
ln -sfn /proc/self/fd/0 $n/dev/stdin
ln -sfn /proc/self/fd/1 $n/dev/stdout
ln -sfn /proc/self/fd/2 $n/dev/stderr
mount -t tmpfs -o mode=755 run $n/run
mount -t cgroup2 cgroup2 $n/sys/fs/cgroup
mount -t bpf bpf $n/sys/fs/bpf
mount -t debugfs debugfs $n/sys/kernel/debug
mount -t tracefs tracefs $n/sys/kernel/tracing
mkdir -p $n/run/kernel-lab/job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none job $n/run/kernel-lab/job \
  || fail "mount the job share"
version=$(cat /proc/sys/kernel/osrelease)
mkdir -p $n/lib/modules/$version
mount -o bind $n$shoal_modules/$version $n/lib/modules/$version || fail "bind $shoal_modules/$version"
hostname kernel-lab
ip link set lo up || fail "lo up"
[ -n "$shoal_init" ] || fail "no shoal_init= on the kernel command line"
exec switch_root $n /bin/bash "$shoal_init"
