#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# /init of the Xen suite's dom0 (a debootstrap'd Debian bookworm or trixie with xl, packed as an
# initramfs by scripts/xen-check.sh). Starts what a dom0 needs for xl (xenstored, xen-init-dom0,
# xenconsoled), loads xen-blkback and, for bookworm, blktap.ko, runs tests/xen/cases.sh and
# powers off, which ends QEMU. The trixie dom0 boots like a Debian host: the stock kernel's
# modules with modprobe, the static /dev nodes systemd makes, the modules of modules-load.d
# (blktap among them, from blktap-rs-dkms), udevd if installed.
#
# Kernel command line (no commas: QEMU's -initrd splits Xen's modules on them):
#   xc.cases=a+b+c     cases to run (default: all)
#   xc.shell=1         a shell on the console instead (scripts/xen-check.sh --shell)

# shellcheck shell=bash
xenbin=$(echo /usr/lib/xen-4.*/bin) # 4.17 (bookworm) or 4.20 (trixie)
export PATH=$xenbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=${TERM:-vt100}
umask 022
# The minbase user space has no init system: busybox powers off (which ends QEMU).

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# Without /dev/fd and /dev/std*, Xen's block hotplug script loops in claim_lock and xl gives up
# with "unable to add disk devices" (udev makes these links on a normal system).
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mkdir -p /run/xen /run/lock /run/xen-hotplug /var/lib/xen /var/log/xen/console /var/lib/xenstored \
	/var/log /srv /mnt
hostname dom0

die() {
	echo "dom0-init: $*"
	echo "<3>blktap-test: dom0-init failed: $*" > /dev/kmsg
	sync
	busybox poweroff -f
}

if [ -d /lib/modules/xen-check ]; then
	# bookworm: our kernel's xen-blkback and blktap.ko, from the run's overlay.
	for m in /lib/modules/xen-check/xen-blkback.ko /lib/modules/xen-check/blktap.ko; do
		insmod "$m" || die "insmod $m failed"
	done
else
	# trixie: first what systemd does early at boot (kmod-static-nodes.service, then
	# systemd-tmpfiles-setup-dev): the nodes of modules.devname (blktap's /dev/blktap/control
	# among them) and the /dev lines of tmpfiles.d (blktap-rs-dkms's /dev/xen/blktap-2/control).
	mkdir -p /run/tmpfiles.d
	kmod static-nodes --format=tmpfiles --output=/run/tmpfiles.d/static-nodes.conf ||
		die "kmod static-nodes failed"
	# (some unrelated lines fail without systemd running: logged, not fatal)
	systemd-tmpfiles --prefix=/dev --create --boot > /var/log/tmpfiles-dev.log 2>&1 || true
	# systemd-modules-load.service: the modules of modules-load.d (blktap-rs-dkms's blktap).
	/usr/lib/systemd/systemd-modules-load > /var/log/modules-load.log 2>&1 ||
		echo "dom0-init: systemd-modules-load failed: $(cat /var/log/modules-load.log)"
	# Then what Debian's xen-utils-common loads at boot, from the stock kernel's package.
	modprobe -a xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback loop ||
		die "modprobe of the Xen modules failed"
	if [ -x /usr/lib/systemd/systemd-udevd ]; then
		/usr/lib/systemd/systemd-udevd --daemon || die "udevd did not start"
		udevadm trigger --action=add > /dev/null 2>&1
		udevadm settle --timeout=60 || echo "dom0-init: udevadm settle timed out"
	fi
fi
mount -t xenfs xenfs /proc/xen || die "cannot mount xenfs"
# tapdisk logs through syslog(3) and wants /dev/log.
busybox syslogd -O /var/log/messages || die "cannot start syslogd"

XENSTORED_ROOTDIR=/var/lib/xenstored xenstored --pid-file /run/xen/xenstored.pid ||
	die "xenstored did not start"
xen-init-dom0 > /var/log/xen/xen-init-dom0.log 2>&1 || { cat /var/log/xen/xen-init-dom0.log; die "xen-init-dom0 failed"; }
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console ||
	die "xenconsoled did not start"

cases=all
# shellcheck disable=SC2013 # words are what we want
for w in $(cat /proc/cmdline); do
	case "$w" in
	xc.cases=*) cases=$(echo "${w#*=}" | tr '+' ' ') ;;
	xc.shell=1)
		echo "dom0: a shell; the cases are in /xen/cases.sh ('bash /xen/cases.sh CASE')."
		setsid -c bash -l
		busybox poweroff -f ;;
	esac
done

echo "dom0: toolstack up after $(cut -d' ' -f1 /proc/uptime) s"
# shellcheck disable=SC2086 # a list of words
bash /xen/cases.sh $cases
echo "<5>blktap-test: done" > /dev/kmsg
sync
busybox poweroff -f
