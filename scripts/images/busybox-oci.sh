#!/usr/bin/env bash
# Builds a busybox OCI image archive without a registry: an empty umoci
# layout, one layer holding the static busybox and its applet links, packed
# as an OCI layout tar that `zixiao image import` (and `ctr import`) accept.
#
# Usage: busybox-oci.sh OUT.tar
# The image's index carries the tag `latest`; zixiao names a tag-only image
# after the archive's file name, so busybox.oci.tar imports as
# docker.io/library/busybox:latest.
set -euo pipefail

out=${1:?usage: busybox-oci.sh OUT.tar}
# busybox-static installs /bin/busybox; a dynamic one would not run in an
# image without libc, and ldd fails on (only) a static binary.
busybox=/bin/busybox
if [[ ! -x "$busybox" ]] || ldd "$busybox" >/dev/null 2>&1; then
  echo "busybox-oci.sh: a static /bin/busybox is needed (apt-get install busybox-static)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:latest" >/dev/null
umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
chmod 1777 "$rootfs/tmp"
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"
umoci repack --image "$work/oci:latest" "$work/bundle" >/dev/null
umoci config --image "$work/oci:latest" \
  --config.cmd /bin/sh \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.workingdir / >/dev/null
umoci gc --layout "$work/oci" >/dev/null

mkdir -p "$(dirname "$out")"
tar -C "$work/oci" -cf "$out.partial" .
mv "$out.partial" "$out"
