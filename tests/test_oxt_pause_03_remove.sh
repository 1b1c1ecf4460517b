#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# sysfs remove (V-OXT): the kernel writes CLOSE into the ring, OpenXT's legacy tapdisk2 closes its
# image, unmaps and closes the ring and exits, and the tap goes as FREE_TAP would.
# Idle: the write returns 0 once the tap is gone (both sysfs names), tapdisk2 has exited, the
# disk is removed, the image keeps the data, and the next allocation gets the same minor.
# Open: while a process holds the disk open, the write fails with EBUSY after message_timeout
# (3 s); tapdisk2 has exited; the disk fails reads with EIO, refuses new opens (ENXIO) and the
# ring refuses opens (ENXIO); once the holder closes it, the disk and the tap go.
# No daemon: a tap allocated with no tapdisk2 goes at once.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"
. "$(dirname "$0")/lib/oxt_pause.sh"

require_cmd cmp
require_openxt

tap_is_gone() { [ ! -d "$(tap_sysfs "$1")" ] && [ ! -d "$BLKTAP_CLASS/blktap$1" ]; }
dead() { ! proc_alive "$pid"; }

# --- idle ---------------------------------------------------------------------------------------
pattern p1.bin 4
truncate -s 32M disk.img || fail "cannot create disk.img"
oxt_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID disk=$TD_DISK
write_region "$TD_DEV" 4 p1.bin
expect_write "$m" remove "idle remove"
tap_is_gone "$m" || td_fail "idle remove: tap $m is still in sysfs after the write returned"
td_forget "$m"
wait_for 10 dead || td_fail "idle remove: tapdisk2 $pid did not exit"
[ ! -e "/sys/block/$disk" ] || td_fail "idle remove: /sys/block/$disk is still there"
region_equal disk.img 4 4 p1.bin || td_fail "idle remove: the image lost data"
oxt_create -a "aio:$PWD/disk.img"
[ "$TD_MINOR" = "$m" ] || td_fail "idle remove: the next tap got minor $TD_MINOR, not the freed $m"
region_equal "$TD_DEV" 4 4 p1.bin || td_fail "idle remove: the data does not read back through a new tap"
log "idle remove: tap, disk and tapdisk2 gone; the minor is reused"

# --- open ---------------------------------------------------------------------------------------
m=$TD_MINOR pid=$TD_PID disk=$TD_DISK
write_attr "$(tap_sysfs "$m")/message_timeout" 3 || td_fail "message_timeout 3: $WRITE_ERR"
exec 7< "/dev/$disk" || td_fail "cannot open /dev/$disk"
expect_write_err "$m" remove 1 "Device or resource busy" "remove while open"
within "$ELAPSED" 2.5 15 || td_fail "remove while open took $ELAPSED s, message_timeout is 3 s"
wait_for 10 dead || td_fail "remove while open: tapdisk2 $pid did not exit"
[ "$(pause_field "$m" removing)" = true ] || td_fail "remove while open: the removal is not pending"
drop_caches
# Through the descriptor held open (a new open would fail, below).
if dd of=/dev/null bs=4k skip=2000 count=1 status=none <&7 2> read.err; then
	td_fail "remove while open: a read of the disk succeeded without a daemon"
fi
grep -q "Input/output error" read.err || { cat read.err; td_fail "remove while open: the read did not fail with EIO"; }
if dd if="/dev/$disk" of=/dev/null bs=4k count=1 status=none 2> open.err; then
	td_fail "remove while open: a new open of the disk succeeded"
fi
grep -q "No such device or address" open.err || { cat open.err; td_fail "remove while open: a new open did not fail with ENXIO"; }
if cat "$TD_NODE_DIR/blktap$m" > /dev/null 2> ring.err; then
	td_fail "remove while open: the ring could be opened"
fi
grep -q "No such device or address" ring.err || { cat ring.err; td_fail "remove while open: opening the ring did not fail with ENXIO"; }
tap_is_gone "$m" && td_fail "remove while open: the tap went while its disk was open"
exec 7<&-
wait_for 10 tap_is_gone "$m" || td_fail "remove while open: tap $m still there after the last close"
td_forget "$m"
[ ! -e "/sys/block/$disk" ] || td_fail "remove while open: /sys/block/$disk is still there"
log "remove while open: EBUSY after $ELAPSED s; the disk failed I/O, refused opens, went at its last close"

# --- no daemon ----------------------------------------------------------------------------------
td_run alloc "$OXT_TAPCTL" allocate || { cat alloc.err; td_fail "tap-ctl allocate failed"; }
n=$(sed -n 's|.*tapdev\([0-9]*\)$|\1|p' alloc.out | tail -n 1)
[ -n "$n" ] || { cat alloc.out; td_fail "tap-ctl allocate printed no tapdev"; }
expect_write "$n" remove "remove without a daemon"
tap_is_gone "$n" || td_fail "remove without a daemon: tap $n is still there"
log "remove without a daemon: gone at once"
