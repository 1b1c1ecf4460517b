#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The `make run` demo, run inside the VM: serve a raw disk image through a tap, the way a Xen
# dom0 toolstack would, and use it.
set -e
step() { printf '\n==> %s\n' "$*"; }

step "load blktap.ko"
insmod /lib/modules/blktap.ko
grep blktap /proc/misc

step "a sample raw image (64 MiB, sparse) on tmpfs"
dd if=/dev/zero of=/tmp/sample.img bs=1M count=0 seek=64 2>/dev/null
ls -l /tmp/sample.img

step "blktap-ctl create --backend file:/tmp/sample.img"
dev=$(blktap-ctl create --backend file:/tmp/sample.img)
echo "disk: $dev"
blktap-ctl list
ls -l /dev/xen/blktap-2/

step "mkfs.ext4, mount, write"
mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/tap
mount -t ext4 "$dev" /mnt/tap
cp -a /bin /mnt/tap/
echo "hello from a tap served by blktapd" > /mnt/tap/hello.txt
sha=$(cat /mnt/tap/hello.txt /bin/busybox | sha256sum)
df -h /mnt/tap

step "umount, drop caches, mount again and read back"
umount /mnt/tap
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 "$dev" /mnt/tap
cat /mnt/tap/hello.txt
[ "$(cat /mnt/tap/hello.txt /mnt/tap/bin/busybox | sha256sum)" = "$sha" ] && echo "read back: identical"
umount /mnt/tap
e2fsck -fn "$dev" >/dev/null && echo "fsck: clean"

step "what the kernel shows"
cat /sys/class/blktap2/devices
cat "/sys/class/blktap2/blktap!blktap0/debug"

step "blktap-ctl destroy -m 0; rmmod"
blktap-ctl destroy -m 0
rmmod blktap
echo
echo "demo: OK"
