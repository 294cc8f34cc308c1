#!/usr/bin/env bash
# Builds the kernel lab's initramfs: busybox-static, the few modules needed to reach the host's
# root filesystem (virtio-pci, 9p, overlayfs), and init-stage1.sh as /init.
# Usage: initramfs.sh KERNEL_TREE OUTPUT   (KERNEL_TREE: the unpacked kernel package)
set -euo pipefail
tree=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
version=$(ls "$tree/lib/modules")
busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
  || { echo "initramfs: needs a static $busybox (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d /tmp/shoal-kernel-lab-initramfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,lower,upper,newroot,modules}
cp "$busybox" "$work/bin/busybox"
for applet in sh mount umount mkdir insmod switch_root cat echo sleep poweroff; do
  ln -s busybox "$work/bin/$applet"
done
# Modules in load order, each once (modprobe resolves the dependencies from the kernel tree).
n=0
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -d "$tree" -S "$version" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  n=$((n + 1))
  cp "$ko" "$work/modules/$(printf '%02d' "$n")-$(basename "$ko")"
done
cp "$here/init-stage1.sh" "$work/init"
chmod 755 "$work/init"
mknod -m 600 "$work/dev/console" c 5 1
( cd "$work" && find . | cpio -o -H newc --quiet ) | gzip -1 > "$out.tmp"
mv "$out.tmp" "$out"
