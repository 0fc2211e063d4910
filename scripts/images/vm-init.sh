#!/bin/busybox sh
# /init of the vm test initramfs (see vm-initramfs.sh): mounts the kernel
# filesystems, prints the boot marker on the serial console, then serves a
# shell there. `zixiao.poweroff` on the kernel command line makes the guest
# power itself off after the marker (the lifecycle-event tests use it).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# The ACPI power button, so a graceful shutdown (virsh shutdown) powers off.
for m in /lib/modules/*.ko; do [ -e "$m" ] && insmod "$m" 2>/dev/null; done
# busybox acpid runs /etc/acpi/<event> for a button press.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
echo 'PWRF PWRF/00000080' >/etc/acpid.conf
# acpid exits at once without the directories of its log and pid files.
mkdir -p /var/log /var/run
acpid -c /etc/acpi -a /etc/acpid.conf
echo ZIXIAO-BOOT-OK
if grep -q zixiao.poweroff /proc/cmdline; then
  poweroff -f
fi
while :; do
  setsid cttyhack sh </dev/ttyS0 >/dev/ttyS0 2>&1
done
