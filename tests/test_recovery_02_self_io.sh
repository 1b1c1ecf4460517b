#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Recovery never holds a dying daemon's own I/O (issue 19, point 5; rule R4). A tap with a 60 s
# recovery window, served by a single-threaded daemon that reads its own disk with O_DIRECT
# before it ever polls (blktap-test stuck --mode self-io: D state, waiting for itself). kill -9:
# its own request is not held for a successor (none could ever answer it while the daemon
# keeps its mapping): it fails, the daemon is gone within 5 s, and a new daemon (blktapd) then
# maps the same minor, takes over the disk (the window keeps it) and serves an O_DIRECT read
# within 20 s. Before issue 19 the request was held for the window, and the daemon stayed in D
# state with its ring mapped, so no successor could map it. `make stress` runs it 5 times.
# timeout: 600
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test blktapd
load_blktap
dstate_watch_start 20
stuck_env

iters=$(scaled 1 5)
it=0 ios=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	stuck_tap self-io
	write_attr "$(tap_sysfs "$m")/recovery" 60 || fail "cannot set the recovery window: $WRITE_ERR"
	wait_for 10 thread_in_d "$pid" || fail "the self-I/O daemon is not in D state ($(proc_where "$pid"))"
	sleep 1
	log "round $it: daemon $pid in D state, waiting for its own read; recovery window 60 s"
	kill_gone "$pid" 5 "round $it: self-I/O daemon with a recovery window"
	disk_present "$m" || fail "round $it: the disk went although a recovery window was open"
	rm -f "blktapd.$m.log"
	serve_tap "$m" mem:16M
	daemon_record "$DAEMON_PID"
	t0=$(now)
	rc=0
	timeout 20 dd if="$disk" of=read.bin bs=4k count=1 iflag=direct > read.out 2>&1 || rc=$?
	[ "$rc" = 0 ] || { cat read.out; fail "round $it: a read through the new daemon failed (rc=$rc)"; }
	log "round $it: the new daemon serves tap $m (a read took $(since "$t0") s)"
	ios=$((ios + 2))
	kill_daemon "$DAEMON_PID" TERM
	wait_for 10 disk_gone "$m" || fail "round $it: disk still there after the new daemon stopped"
	free_tap "$m" || fail "round $it: cannot free tap $m"
done
dstate_watch_check
stat_report recovery "$iters" "$ios" "$iters"
