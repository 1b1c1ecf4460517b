#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Daemons that are alive but stuck (blktap-test stuck), and what ends the wait for them:
#  - the request timeout: a tap's sysfs "timeout" is the module's request_timeout (180 s) for
#    a new tap, takes whole seconds, refuses "x" and -1 (EINVAL); set to 3 s, an O_DIRECT read
#    from a daemon that never polls and one that polls but never responds fails with EIO after
#    3 to 10 s (the timer ticks once a second; the rest is slack for a loaded TCG host), and
#    the tap counts the timeout;
#  - timeout 0 (never): the read still waits after 6 s; then "blktap-ctl abort" fails it with
#    EIO (within 5 s: no timer involved, the slack is for the host), and later I/O too;
#  - the disk of an aborted or timed-out tap can be removed and the tap freed once the stuck
#    daemon is killed;
#  - abort under fio (QD32, a working blktapd): fio fails with EIO within 10 s (4.5 s seen on a
#    host at load 7: fio's own exit is slow under TCG), a later read within 5 s,
#    and the tap frees once the daemon stops. No task stays in D state longer than the bound.
# `make stress` runs the whole sequence 10 times.
# timeout: 1800
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktap-test blktapd fio
load_blktap
dstate_watch_start 20
daemons=
cleanup() { for p in $daemons; do kill -KILL "$p" 2>/dev/null; done; }
atexit cleanup

# stuck_tap MODE: a tap served by "blktap-test stuck --mode MODE"; sets m, disk, pid.
stuck_tap() {
	tap_alloc
	m=$TAP_MINOR disk=/dev/$(disk_name "$TAP_MINOR")
	blktap-test stuck --ring "/dev/blktap/blktap$m" --mode "$1" > "stuck.$m.log" 2>&1 3<&- 4<&- 5<&- &
	pid=$!
	daemons="$daemons $pid"
	wait_for 20 tap_mapped "$m" || fail "$1: the stuck daemon did not map tap $m: $(cat "stuck.$m.log")"
	wait_for 20 test -b "$disk" || fail "$1: no disk for tap $m"
}
# read_eio SECS: an O_DIRECT 4k read of $disk in the background; sets rpid and t0.
read_start() {
	t0=$(now)
	dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct > "read.$m.out" 2>&1 &
	rpid=$!
}
# eio_wait PID OUT LOW HIGH WHAT: the background job PID, started at $t0, ends with EIO (in its
# output file OUT) between LOW and HIGH seconds after it began.
eio_wait() {
	while kill -0 "$1" 2>/dev/null && [ "$(awk -v e="$(since "$t0")" -v h="$4" 'BEGIN { print (e > h + 5) }')" = 0 ]; do
		sleep 0.1
	done
	el=$(since "$t0")
	kill -0 "$1" 2>/dev/null && { kill -KILL "$1"; fail "$5: still waiting after ${el}s"; }
	rc=0
	wait "$1" || rc=$?
	[ "$rc" != 0 ] || fail "$5: it succeeded"
	grep -q 'Input/output error' "$2" || { cat "$2"; fail "$5: it failed without EIO"; }
	awk -v e="$el" -v l="$3" -v h="$4" 'BEGIN { exit !(e >= l && e <= h) }' ||
		fail "$5: EIO after ${el}s, expected between $3 and $4 s"
	log "$5: EIO after ${el}s"
}
# read_wait LOW HIGH WHAT: the read of read_start ends with EIO between LOW and HIGH seconds.
read_wait() { eio_wait "$rpid" "read.$m.out" "$@"; }
# finish: kill the stuck daemon, then the tap frees (its disk goes with the ring).
finish() {
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	wait_for 10 disk_gone "$m" || fail "tap $m: disk still there after its daemon died"
	free_tap "$m" || fail "tap $m: cannot be freed after its daemon died"
}

iters=$(scaled 1 10)
it=0 reads=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	for mode in never-poll never-respond; do
		stuck_tap "$mode"
		attr=$(tap_sysfs "$m")/timeout
		[ "$(cat "$attr")" = 180 ] || fail "timeout of a new tap is '$(cat "$attr")', expected the module's 180"
		for bad in x -1 4294967296; do
			write_attr "$attr" "$bad" && fail "timeout accepted '$bad'"
			[ "$WRITE_ERR" = "Invalid argument" ] || fail "timeout '$bad': '$WRITE_ERR', expected EINVAL"
		done
		write_attr "$attr" 3 || fail "cannot set the timeout: $WRITE_ERR"
		[ "$(cat "$attr")" = 3 ] || fail "timeout reads '$(cat "$attr")' after writing 3"
		read_start
		read_wait 3 10 "$mode, timeout 3 s"
		grep -q 'timeouts:[1-9]' "$(tap_sysfs "$m")/debug" || { cat "$(tap_sysfs "$m")/debug"; fail "$mode: the tap counted no timeout"; }
		finish
	done

	# Timeout 0: nothing ends the wait but the administrator.
	stuck_tap never-respond
	write_attr "$(tap_sysfs "$m")/timeout" 0 || fail "cannot set timeout 0: $WRITE_ERR"
	read_start
	sleep 6
	kill -0 "$rpid" 2>/dev/null || { cat "read.$m.out"; fail "timeout 0: the read ended within 6 s"; }
	t0=$(now)
	blktap-ctl abort -m "$m" || fail "blktap-ctl abort -m $m failed"
	read_wait 0 5 "timeout 0, then abort"
	read_start
	read_wait 0 5 "after the abort, a new read"
	grep -q 'abort:true' "$(tap_sysfs "$m")/debug" || fail "the debug attribute does not show the abort"
	write_attr "$(tap_sysfs "$m")/abort" 1 || fail "a second abort failed: $WRITE_ERR"
	finish
	blktap-ctl abort -m "$m" 2>/dev/null && fail "abort of a freed tap succeeded"
	reads=$((reads + 4))
done

# Abort under fio: a working daemon (blktapd) and fio at QD32; the abort fails fio with EIO
# within 5 s, later I/O fails at once; the tap frees once the daemon is stopped.
tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
serve_tap "$m" mem:64M
daemons="$daemons $DAEMON_PID"
fio --name=abort --filename="$disk" --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw \
	--bs=4k --size=64M --time_based --runtime=300 > fio.out 2>&1 &
fio_pid=$!
flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt 300 ]; }
wait_for 60 flowing || fail "abort under fio: fio did not get going"
t0=$(now)
blktap-ctl abort -m "$m" || fail "blktap-ctl abort -m $m failed under fio"
eio_wait "$fio_pid" fio.out 0 10 "abort under fio: fio"
read_start
read_wait 0 5 "after the abort under fio, a new read"
kill_daemon "$DAEMON_PID" TERM
wait_for 10 disk_gone "$m" || fail "abort under fio: disk still there after its daemon stopped"
free_tap "$m" || fail "abort under fio: cannot free tap $m"

dstate_watch_check
# Every read of each round failed with EIO, as expected.
stat_report hang "$iters" "$reads" "$reads"
