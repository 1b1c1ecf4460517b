#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Opening the control node loads the module, as a Debian host does it: blktap.ko installed
# under /lib/modules and depmod run, the module not loaded, the node /dev/blktap/control there
# beforehand (systemd makes it at boot from modules.devname, as for /dev/fuse or
# /dev/loop-control). The open succeeds, the module is loaded by the kernel's modprobe, and
# the control device sits at its fixed minor 248; ALLOC_TAP through that node works. (blktap-ctl
# and blktapd load the module this way; tap-ctl checks /proc/misc first, so for it the module is
# loaded at boot by modules-load.d.)
. "$(dirname "$0")/lib/common.sh"

require_cmd depmod
require_cmd modprobe
require_cmd modinfo
unload_blktap

minor=248
rel=$(uname -r)
moddir=/lib/modules/$rel
node=/dev/blktap-on-demand-control
modprobe_path=$(cat /proc/sys/kernel/modprobe)
tap=
cleanup() {
	[ -z "$tap" ] || blktap-ctl --control "$node" free -m "$tap" > /dev/null 2>&1
	rm -f "$node"
	rm -rf "$moddir/extra"
	[ -d "$moddir" ] && depmod "$rel" 2>/dev/null
	echo "$modprobe_path" > /proc/sys/kernel/modprobe
	unload_blktap
}
atexit cleanup

mkdir -p "$moddir/extra"
cp "$BLKTAP_KO" "$moddir/extra/blktap.ko" || fail "cannot copy $BLKTAP_KO to $moddir/extra"
depmod "$rel" || fail "depmod failed"
aliases=$(modinfo -F alias "$moddir/extra/blktap.ko" | tr '\n' ' ')
log "blktap.ko aliases: $aliases"
case " $aliases" in
*" devname:blktap/control "*) ;;
*) fail "no devname:blktap/control alias (has: $aliases)" ;;
esac
case " $aliases" in
*" char-major-10-$minor "*) ;;
*) fail "no char-major-10-$minor alias (has: $aliases)" ;;
esac
grep -q "char-major-10-$minor blktap" "$moddir/modules.alias" ||
	fail "depmod's modules.alias does not map char-major-10-$minor to blktap"

# The kernel runs this program for request_module (here busybox's, which reads modules.alias).
mp=
for p in /sbin/modprobe /bin/modprobe /usr/sbin/modprobe /usr/bin/modprobe; do
	[ -x "$p" ] && { mp=$p; break; }
done
[ -n "$mp" ] || skip "no modprobe program for the kernel to run"
echo "$mp" > /proc/sys/kernel/modprobe
mknod "$node" c "$MISC_MAJOR" "$minor" || fail "mknod $node failed"
module_gone || fail "blktap is loaded before the open"

# blktap-ctl alloc opens the control node it is given (it exists: no /proc/misc lookup, as in
# tap-ctl) and allocates a tap through it.
out=$(blktap-ctl --control "$node" alloc 2>&1) || fail "ALLOC_TAP through $node: $out"
tap=$out
module_loaded || fail "the open of $node did not load blktap"
log "open of $node (c $MISC_MAJOR:$minor) loaded blktap: $(grep ' blktap' /proc/misc | tr '\n' ' ')"
grep -q "^$minor blktap/control\$" /proc/misc || fail "blktap/control is not at minor $minor: $(grep blktap /proc/misc | tr '\n' ' ')"
wait_for 5 test -e /dev/blktap/control || fail "/dev/blktap/control was not created"
expect_chrdev /dev/blktap/control "$MISC_MAJOR" "$minor"

out=$(blktap-ctl --control "$node" free -m "$tap" 2>&1) || fail "FREE_TAP of $tap through $node: $out"
freed=$tap
tap=
log "tap $freed allocated and freed through $node"
