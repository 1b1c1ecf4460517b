#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Daemons that are alive but stuck (blktap-test stuck), and what ends the wait for them:
#  - the request timeout: a tap's sysfs "timeout" is the module's request_timeout for a new
#    tap, 0 (never) by default as in V-XS (issue 19, rule R3), takes whole seconds, refuses "x"
#    and -1 (EINVAL); set to 3 s, an O_DIRECT read from a daemon that never polls and one that
#    polls but never responds fails with EIO after 3 to 10 s (the timer ticks once a second;
#    the rest is slack for a loaded TCG host), and the tap counts the timeout;
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
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test blktapd fio
load_blktap
dstate_watch_start 20
stuck_env

iters=$(scaled 1 10)
it=0 reads=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	for mode in never-poll never-respond; do
		stuck_tap "$mode"
		attr=$(tap_sysfs "$m")/timeout
		[ "$(cat "$attr")" = 0 ] || fail "timeout of a new tap is '$(cat "$attr")', expected the module's default 0"
		for bad in x -1 4294967296; do
			write_attr "$attr" "$bad" && fail "timeout accepted '$bad'"
			[ "$WRITE_ERR" = "Invalid argument" ] || fail "timeout '$bad': '$WRITE_ERR', expected EINVAL"
		done
		write_attr "$attr" 3 || fail "cannot set the timeout: $WRITE_ERR"
		[ "$(cat "$attr")" = 3 ] || fail "timeout reads '$(cat "$attr")' after writing 3"
		read_start
		read_wait 3 10 "$mode, timeout 3 s"
		grep -q 'timeouts:[1-9]' "$(tap_sysfs "$m")/debug" || { cat "$(tap_sysfs "$m")/debug"; fail "$mode: the tap counted no timeout"; }
		stuck_finish
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
	stuck_finish
	blktap-ctl abort -m "$m" 2>/dev/null && fail "abort of a freed tap succeeded"
	reads=$((reads + 4))
done

# Abort under fio: a working daemon (blktapd) and fio at QD32; the abort fails fio with EIO
# within 5 s, later I/O fails at once; the tap frees once the daemon is stopped.
tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
serve_tap "$m" mem:64M
daemon_record "$DAEMON_PID"
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
