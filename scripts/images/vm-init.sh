#!/bin/busybox sh
# /init of the vm test initramfs (see vm-initramfs.sh): mounts the kernel
# filesystems, prints the boot marker on the serial console, then serves a
# shell there. `zixiao.poweroff` on the kernel command line makes the guest
# power itself off after the marker (the lifecycle-event tests use it).
# Each `ip=<addr>::<gateway>:<netmask>::<dev>:off` on the command line (what
# the vm driver passes per network) configures that interface before the
# marker, and prints `ZIXIAO-NET <dev> <addr>` once it is up.
# `zixiao.serve=<port>` starts a TCP server on that port before the marker.
# `zixiao.cidata` prints each virtio disk holding cloud-init NoCloud files
# (its volume label, then each file) between ZIXIAO-CIDATA-BEGIN and -END.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The ACPI power button, so a graceful shutdown (virsh shutdown) powers
# off, and virtio-net; `order` lists them dependencies first.
if [ -e /lib/modules/order ]; then
  while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/order
else
  for m in /lib/modules/*.ko; do [ -e "$m" ] && insmod "$m" 2>/dev/null; done
fi
ip link set lo up 2>/dev/null
routed=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ip=*:*) ;;
    *) continue ;;
  esac
  # <addr>::<gateway>:<netmask>:<hostname>:<dev>:<autoconf>
  rest=${arg#ip=}
  addr=${rest%%:*}
  gw=$(echo "$rest" | cut -d: -f3)
  mask=$(echo "$rest" | cut -d: -f4)
  dev=$(echo "$rest" | cut -d: -f6)
  [ -n "$addr" ] && [ -n "$dev" ] || continue
  # The driver binds the NIC asynchronously: wait for it a little.
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    [ -e "/sys/class/net/$dev" ] && break
    sleep 0.25
  done
  if ifconfig "$dev" "$addr" netmask "${mask:-255.255.255.0}" up; then
    # The first interface with a gateway carries the default route.
    if [ -n "$gw" ] && [ -z "$routed" ] && route add default gw "$gw" dev "$dev"; then
      routed=1
    fi
    echo "ZIXIAO-NET $dev $addr"
  fi
done
# busybox acpid runs /etc/acpi/<event> for a button press.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
echo 'PWRF PWRF/00000080' >/etc/acpid.conf
# acpid exits at once without the directories of its log and pid files.
mkdir -p /var/log /var/run
acpid -c /etc/acpi -a /etc/acpid.conf
# `zixiao.serve=<port>` answers every TCP connection on that port with a
# line (the published-port tests reach it through the node).
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    zixiao.serve=*) nc -ll -p "${arg#zixiao.serve=}" -e echo ZIXIAO-SERVED & ;;
  esac
done
if grep -q zixiao.cidata /proc/cmdline; then
  mkdir -p /cidata
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    ls /dev/vd? >/dev/null 2>&1 && break
    sleep 0.25
  done
  for dev in /dev/vd?; do
    mount -t iso9660 -o ro "$dev" /cidata 2>/dev/null || continue
    if [ -f /cidata/user-data ]; then
      # The ISO 9660 volume id: 32 bytes at 32768 + 40.
      echo "ZIXIAO-CIDATA-BEGIN $dev label=$(dd if="$dev" bs=1 skip=32808 count=32 2>/dev/null)"
      for f in user-data meta-data network-config; do
        [ -f "/cidata/$f" ] && echo "== $f" && cat "/cidata/$f"
      done
      echo ZIXIAO-CIDATA-END
    fi
    umount /cidata
  done
fi
echo ZIXIAO-BOOT-OK
if grep -q zixiao.poweroff /proc/cmdline; then
  poweroff -f
fi
while :; do
  setsid cttyhack sh </dev/ttyS0 >/dev/ttyS0 2>&1
done
