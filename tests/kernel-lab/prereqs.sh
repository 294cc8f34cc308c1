#!/usr/bin/env bash
# Installs what the kernel lab needs on Debian 12 (bookworm), as root, and unpacks Debian's stock
# kernel into a cache. Idempotent: asks apt only when something is missing.
#
# - qemu-system-x86: from bookworm when nothing conflicts; when the machine already has a newer
#   qemu-utils from bookworm-backports (bookworm's qemu-system-common breaks it), from
#   bookworm-backports too, so nothing the machine had is removed.
# - busybox-static and cpio: the lab's initramfs (tests/kernel-lab/initramfs.sh).
# - kmod: depmod here, modprobe in the guest.
# - ruby: `ruby -c` checks the Vagrantfile's syntax (vagrant/).
# - Debian's stock kernel (the package linux-image-amd64 points to): downloaded with apt and
#   unpacked into $SHOAL_KERNEL_LAB_CACHE (default /var/cache/shoal/kernel-lab), not installed:
#   installing it would run update-initramfs, write /boot and pull in initramfs-tools and a
#   systemd upgrade, for a kernel this host never boots. The guest sees the unpacked
#   lib/modules through the shared root filesystem and binds it onto its /lib/modules.
set -euo pipefail

cache=${SHOAL_KERNEL_LAB_CACHE:-/var/cache/shoal/kernel-lab}

if [ "$(id -u)" != 0 ]; then
  echo "kernel-lab prereqs: run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
  [ "$updated" = 1 ] || { apt-get update -qq; updated=1; }
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in busybox-static cpio ruby kmod; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kernel-lab prereqs: installing ${missing[*]}"
  apt_update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [ -n "$utils" ] && dpkg --compare-versions "$utils" gt '1:8' \
     && grep -q '^VERSION_CODENAME=bookworm' /etc/os-release; then
    echo "kernel-lab prereqs: qemu-utils $utils is from bookworm-backports: installing qemu-system-x86 from there too"
    src=/etc/apt/sources.list.d/shoal-bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' > "$src"
      updated=0
    fi
    apt_update
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  else
    echo "kernel-lab prereqs: installing qemu-system-x86"
    apt_update
    apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
  fi
fi

# The kernel package linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
  apt_update
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "kernel-lab prereqs: apt does not know linux-image-amd64" >&2; exit 1; }
if [ ! -e "$cache/$pkg/.complete" ]; then
  echo "kernel-lab prereqs: unpacking $pkg into $cache/$pkg"
  tmp=$(mktemp -d /tmp/shoal-kernel-lab-deb.XXXXXX)
  chmod 755 "$tmp"
  ( cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null ) \
    || { apt_update; ( cd "$tmp" && apt-get download -qq "$pkg" ); }
  rm -rf "$cache/$pkg"
  mkdir -p "$cache/$pkg"
  dpkg-deb -x "$tmp"/*.deb "$cache/$pkg"
  rm -rf "$tmp"
  version=$(ls "$cache/$pkg/lib/modules")
  depmod -b "$cache/$pkg" "$version"
  touch "$cache/$pkg/.complete"
fi
ln -sfn "$pkg" "$cache/current"
