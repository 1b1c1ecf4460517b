#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# tap-ctl destroy of a tapdev that another task holds open (a mounted file system or blkback in
# real life). tapdisk's close retries REMOVE_DEVICE while the driver says EBUSY and waits for
# the disk's last close (the driver's poll wakes it): destroy must wait, the disk must keep
# serving I/O meanwhile, and once the holder closes it, destroy completes by itself: disk,
# tap and tapdisk gone, the image intact. Twice: holder closes after 3 s and after 10 s.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp
tapdisk_env
truncate -s 16M disk.img || fail "cannot create disk.img"
pattern data.bin 2

for hold in 3 10; do
	td_create -a "aio:$PWD/disk.img"
	m=$TD_MINOR pid=$TD_PID dev=$TD_DEV
	exec 5< "$dev" || td_fail "cannot open $dev"
	# Not inherited by tap-ctl (5<&-): it would hold the disk open itself and wait for itself.
	tap-ctl destroy -p "$pid" -m "$m" < /dev/null > destroy.out 2> destroy.err 5<&- &
	dpid=$!
	sleep "$hold"
	kill -0 "$dpid" 2>/dev/null || { cat destroy.out destroy.err; td_fail "hold $hold s: destroy returned while the disk was open"; }
	disk_present "$m" || td_fail "hold $hold s: the disk went while open"
	proc_alive "$pid" || td_fail "hold $hold s: tapdisk exited while its disk was open"
	# The disk serves I/O while destroy waits (close is still retrying REMOVE_DEVICE).
	dd if="$dev" of=/dev/null bs=4k count=16 iflag=direct status=none ||
		td_fail "hold $hold s: the held disk does not serve reads while destroy waits"
	t0=$(now)
	exec 5<&-
	drc=0
	waited=0
	while kill -0 "$dpid" 2>/dev/null && [ "$waited" -lt 300 ]; do sleep 0.1; waited=$((waited + 1)); done
	kill -0 "$dpid" 2>/dev/null && { kill -KILL "$dpid"; td_fail "hold $hold s: destroy still waiting 30 s after the last close"; }
	wait "$dpid" || drc=$?
	[ "$drc" = 0 ] || { cat destroy.out destroy.err; td_fail "hold $hold s: tap-ctl destroy failed (rc=$drc)"; }
	wait_for 10 td_gone "$m" "$pid" || td_fail "hold $hold s: tap or tapdisk still there after destroy"
	TD_MINORS=
	log "hold $hold s: destroy waited for the holder and completed $(since "$t0") s after the last close"
done
