#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A write the kernel failed must never land after a newer write to the same sectors (issue 19,
# point 1; rule R1). A daemon (blktap-test withhold, RAM disk) withholds W1, 4 KiB of 'A' at
# sector 0, with the tap's timeout at 2 s: W1 fails with EIO after 2 to 10 s. The test then
# writes B ('B' x 4 KiB) at sector 0 (O_DIRECT, within 30 s); the daemon, if it ever gets it,
# applies B and then A and answers both, as a daemon holding both may; if it does not get it,
# it applies A alone once told to. It then dumps what its sector 0 holds. Pass: the sector holds
# B, or the write of B failed with EIO and debug shows poisoned:timeout (a poisoned session:
# nothing more is sent to a daemon that holds a failed request). Fail: B succeeded and the sector holds the stale A.
# The tap frees once the daemon is killed. `make stress` runs it 10 times.
# timeout: 600
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test cmp
load_blktap
dstate_watch_start 20
stuck_env
printf '%4096s' '' | tr ' ' A > a.bin
printf '%4096s' '' | tr ' ' B > b.bin

iters=$(scaled 1 10)
it=0 ios=0 failed=0 b_failed=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	tap_alloc_m
	rm -f "go.$m" "sector0.$m"
	daemon_start blktap-test withhold --ring "$ring" --dump "$PWD/sector0.$m" --go "$PWD/go.$m"
	write_attr "$(tap_sysfs "$m")/timeout" 2 || fail "cannot set the timeout: $WRITE_ERR"

	t0=$(now)
	dd if=a.bin of="$disk" bs=4k count=1 oflag=direct conv=notrunc > wa.out 2>&1 &
	eio_wait $! wa.out 2 10 "round $it: W1 (A at sector 0, withheld by the daemon)"

	t0=$(now)
	brc=0
	timeout 30 dd if=b.bin of="$disk" bs=4k count=1 oflag=direct conv=notrunc > wb.out 2>&1 || brc=$?
	el=$(since "$t0")
	[ "$brc" != 124 ] && [ "$brc" != 143 ] || fail "round $it: the write of B did not end within 30 s"
	touch "go.$m"
	wait_for 20 test -s "sector0.$m" || fail "round $it: the daemon dumped no sector 0: $(cat "daemon.$m.log")"
	holds=$(head -c 1 "sector0.$m")
	if [ "$brc" = 0 ]; then
		cmp -s "sector0.$m" b.bin ||
			fail "round $it: the write of B succeeded (${el}s), but sector 0 holds '$holds...': the timed-out write A landed after it ($(tr '\n' ' ' < "daemon.$m.log"))"
		log "round $it: B written in ${el}s and sector 0 holds B"
	else
		grep -q 'Input/output error' wb.out || { cat wb.out; fail "round $it: the write of B failed (rc=$brc) without EIO"; }
		grep -q 'poisoned:timeout' "$(tap_sysfs "$m")/debug" ||
			fail "round $it: the write of B failed, but the tap's debug does not show a session poisoned by the timeout: $(grep abort: "$(tap_sysfs "$m")/debug")"
		log "round $it: the write of B failed with EIO after ${el}s (the session is poisoned); sector 0 holds '$holds...'"
		b_failed=$((b_failed + 1))
		failed=$((failed + 1))
	fi
	ios=$((ios + 2)) failed=$((failed + 1))
	stuck_finish
done
dstate_watch_check
log "$iters round(s): B failed with EIO in $b_failed, B landed in $((iters - b_failed))"
stat_report stale "$iters" "$ios" "$failed"
