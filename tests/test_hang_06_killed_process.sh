#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A killed daemon is a killed process, whatever its ring-owner thread did with the SIGKILL
# (issue 19, point 3; rule R2). The tap's timeout is 60 s, far longer than the bound, so only
# the kill can end the wait. Two daemons that wait for their own disk:
#  (a) threaded-self-io: the thread that mapped the ring sleeps, serving nothing; a second
#      thread reads the disk with O_DIRECT (D state). On kill -9 the owner thread exits at once,
#      and the process only with the read;
#  (b) aio-self-io: one thread submits an O_DIRECT read of its disk with io_submit and waits in
#      io_getevents. On kill -9 it exits at once, and its exit waits for the AIO read (exit_aio)
#      with the ring still mapped.
# In both the process must be gone within 5 s of kill -9, its disk must go, the tap free and
# the module unload. Before issue 19 the driver looked only at the owner thread's pending
# SIGKILL, gone once it acted on it: the read waited for the timeout. No task stays in D state
# longer than 20 s (the hung-task bound). `make stress` runs both 10 times.
# timeout: 600
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test
unload_blktap
load_blktap
dstate_watch_start 20
stuck_env
BOUND=5

# blocked MODE: the daemon waits for its own read: a thread in D state (threaded), or a
# request of the tap pending (AIO: the thread sleeps interruptibly in io_getevents).
blocked() {
	case $1 in
	threaded-self-io) thread_in_d "$pid" ;;
	*) [ "$(tap_pending "$m")" -gt 0 ] 2>/dev/null ;;
	esac
}

# killed_case MODE: one daemon of MODE, killed; its exit time goes to gone.times (figures).
killed_case() {
	stuck_tap "$1"
	write_attr "$(tap_sysfs "$m")/timeout" 60 || fail "$1: cannot set the timeout: $WRITE_ERR"
	wait_for 10 blocked "$1" || fail "$1: the daemon is not waiting for its own read ($(proc_where "$pid")): $(cat "daemon.$m.log")"
	sleep 1
	log "$1: daemon $pid waits for its own read ($(proc_where "$pid"))"
	kill_gone "$pid" "$BOUND" "$1"
	echo "$GONE_AFTER" >> gone.times
	wait_for 10 disk_gone "$m" || fail "$1: disk still there after its daemon died"
	free_tap "$m" || fail "$1: cannot free tap $m"
}

iters=$(scaled 1 10)
it=0 ios=0
: > gone.times
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	for mode in threaded-self-io aio-self-io; do
		run_case "$mode" killed_case "$mode"
		ios=$((ios + 1))
	done
done
cases_check
dstate_watch_check
unload_blktap
log "slowest exit after kill -9: $(sort -n gone.times | tail -n 1) s"
stat_report killed "$iters" "$ios" "$ios"
