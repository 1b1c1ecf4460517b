#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# blktap next to the kernel's NBD client (lockdep): tapdisk serves a raw image through its tap
# and, over its unix-socket NBD server, through nbd.ko (nbd-client -unix); data written through
# one reads back through the other; nbd-client -d disconnects; tap-ctl destroy removes the disk.
# Twice, so that lockdep has seen every edge before the second round adds them again. Before
# the fix it reported the cycle mmap lock -> Tap::ctl (mmap) -> update_nr_hwq_lock ->
# elevator_lock (del_gendisk under ctl) -> blk-mq SRCU -> NBD's cmd lock -> unix iolock -> mmap
# lock: the disk is now deleted with no tap lock held. Needs nbd.ko and nbd-client in the VM (vm-run --module .../nbd.ko --bin
# /usr/sbin/nbd-client; make check passes them when it has them), else skips.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

NBD_KO=/lib/modules/nbd.ko
NBD_DEV=/dev/nbd0
[ -f "$NBD_KO" ] || skip "no $NBD_KO in the VM (vm-run --module \$KDIR/drivers/block/nbd.ko)"
command -v nbd-client > /dev/null 2>&1 || skip "no nbd-client in the VM (vm-run --bin /usr/sbin/nbd-client)"
require_cmd cmp blockdev
tapdisk_env
if [ ! -d /sys/module/nbd ]; then
	insmod "$NBD_KO" nbds_max=1 || fail "insmod $NBD_KO failed"
	atexit "rmmod nbd"
fi
wait_for 5 test -b "$NBD_DEV" || fail "no $NBD_DEV after loading nbd"

nbd_size() { cat /sys/block/nbd0/size 2>/dev/null || echo 0; }
nbd_connected() { [ "$(nbd_size)" != 0 ]; }
nbd_disconnected() { [ "$(nbd_size)" = 0 ]; }

truncate -s 32M disk.img || fail "cannot create disk.img"
pattern a.bin 4
pattern b.bin 4
round=1
while [ "$round" -le 2 ]; do
	td_create -a "aio:$PWD/disk.img"
	sock=/var/run/blktap-control/nbd$TD_PID.$TD_MINOR
	wait_for 5 test -S "$sock" || td_fail "round $round: tapdisk $TD_PID has no NBD socket $sock"
	td_run "nbd-connect-$round" nbd-client -unix "$sock" "$NBD_DEV" -b 512 ||
		{ cat "nbd-connect-$round.out" "nbd-connect-$round.err"; td_fail "round $round: nbd-client -unix $sock $NBD_DEV failed"; }
	atexit "nbd-client -d $NBD_DEV < /dev/null > /dev/null 2>&1"
	wait_for 10 nbd_connected || td_fail "round $round: $NBD_DEV has no size after nbd-client"
	[ "$(blockdev --getsize64 "$NBD_DEV")" = 33554432 ] || td_fail "round $round: $NBD_DEV is not 32 MiB"

	write_region "$TD_DEV" $((round * 4)) a.bin
	region_equal "$NBD_DEV" $((round * 4)) 4 a.bin || td_fail "round $round: NBD does not read what the tapdev wrote"
	write_region "$NBD_DEV" $((round * 4 + 12)) b.bin
	region_equal "$TD_DEV" $((round * 4 + 12)) 4 b.bin || td_fail "round $round: the tapdev does not read what NBD wrote"

	td_run "nbd-disconnect-$round" nbd-client -d "$NBD_DEV" ||
		{ cat "nbd-disconnect-$round.out" "nbd-disconnect-$round.err"; td_fail "round $round: nbd-client -d failed"; }
	wait_for 10 nbd_disconnected || td_fail "round $round: $NBD_DEV still has a size after nbd-client -d"
	td_destroy "$TD_MINOR"
	log "round $round: tap $TD_MINOR and $NBD_DEV served the same image, both torn down"
	round=$((round + 1))
done
region_equal disk.img 8 4 a.bin && region_equal disk.img 20 4 b.bin ||
	fail "the image does not hold what was written through the tapdev and NBD"
