#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The `make run` demo, run inside the VM: serve a raw disk image through a tap, the way a Xen
# dom0 toolstack would, and use it. The image is served by the real tapdisk 3.55.5 (tap-ctl)
# when the VM has it (scripts/build-tapdisk.sh), else by our blktapd (blktap-ctl).
set -e
step() { printf '\n==> %s\n' "$*"; }

step "load blktap.ko"
insmod /lib/modules/blktap.ko
grep blktap /proc/misc

step "a sample raw image (64 MiB, sparse) on tmpfs"
dd if=/dev/zero of=/tmp/sample.img bs=1M count=0 seek=64 2>/dev/null
ls -l /tmp/sample.img

if [ -x /usr/libexec/tapdisk ] && command -v tap-ctl >/dev/null 2>&1; then
	server=tapdisk
	# tapdisk's run-time needs: its control socket directory and syslog.
	mkdir -p /var/run /var/log
	syslogd -O /var/log/messages
	step "tap-ctl create -a aio:/tmp/sample.img (the real tapdisk 3.55.5)"
	# Into a file, not $(...): the tapdisk it spawns would keep the pipe open.
	tap-ctl create -a aio:/tmp/sample.img > /tmp/create.out 2>&1 </dev/null
	dev=$(tail -n 1 /tmp/create.out)
	tap-ctl list > /tmp/list.out
	cat /tmp/list.out
else
	server=blktapd
	echo "(no tapdisk in the VM: $(cat /etc/blktap-rs/tapdisk-skip 2>/dev/null || echo 'not built')); using blktapd"
	step "blktap-ctl create --backend file:/tmp/sample.img"
	dev=$(blktap-ctl create --backend file:/tmp/sample.img)
	blktap-ctl list
fi
echo "disk: $dev"
ls -l /dev/xen/blktap-2/

step "mkfs.ext4, mount, write"
mkfs.ext4 -q -F "$dev"
mkdir -p /mnt/tap
mount -t ext4 "$dev" /mnt/tap
cp -a /bin /mnt/tap/
echo "hello from a tap served by $server" > /mnt/tap/hello.txt
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

if [ "$server" = tapdisk ]; then
	pid=$(sed -n 's/^pid=\([0-9]*\) minor=0 .*/\1/p' /tmp/list.out)
	step "tap-ctl destroy -p $pid -m 0; rmmod"
	tap-ctl destroy -p "$pid" -m 0 </dev/null
	e2fsck -fn /tmp/sample.img >/dev/null && echo "fsck of the image file: clean"
else
	step "blktap-ctl destroy -m 0; rmmod"
	blktap-ctl destroy -m 0
fi
rmmod blktap
echo
echo "demo ($server): OK"
