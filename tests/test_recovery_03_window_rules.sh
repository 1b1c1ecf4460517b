#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The smaller rules of the recovery window (issue 19, point 6), one case each (run_case: one run
# reports every case):
#  (a) abort while a new ring is mapped but not ready: a tap with a 30 s window served by a
#      daemon that never answers (stuck --mode never-respond); an O_DIRECT read is sent to it;
#      kill -9: the read is held (debug holding:1); a new daemon maps the ring but never calls
#      CREATE_DEVICE (stuck --mode map-only: ready:false, the read stays held); "blktap-ctl
#      abort": the held read fails with EIO within 10 s, debug shows holding:0 and counts the
#      failure (failed and aborted each grow by at least one), a new read fails at once, and
#      the tap frees once that daemon is killed. (Before the fix the held requests were ended
#      inside the io spinlock and left out of the abort's count.)
#  (b1) an expired, unused window never suppresses the next one: window 2 s; daemon 1 (blktapd,
#      file backend with a pattern) serving; the test keeps the disk open (fd 5), nothing in
#      flight; kill -9 daemon 1; 4 s later (window expired unused) daemon 2 maps the ring but
#      never makes or finds the disk (map-only), so nothing closes the expired window; an
#      O_DIRECT read is queued on its ring; window set to 30 s; kill -9 daemon 2: the read is
#      HELD (holding:1, still waiting 2 s later), and daemon 3 (blktapd) completes it: rc 0, the
#      pattern read back, reissued >= 1. Before the fix the expired window kept the second one
#      from opening and the read failed at once.
#  (b2) the same through a successor that takes the disk over: window 2 s, kill -9 of daemon
#      1 with nothing in flight, 4 s later daemon 2 (blktapd) finds the disk (CREATE_DEVICE
#      EEXIST) and serves a read; window 30 s; daemon 2 is stopped (SIGSTOP: it never polls)
#      while a read is queued on its ring, then killed: the read is held, and daemon 3
#      (blktapd) completes it with the pattern. This passed before the fix too (the takeover
#      closed the expired window); it is kept because it is the path tapdisk takes.
#  (c) the lingering disk: window 2 s, blktapd killed with no opener and nothing held; once the
#      window has expired, an attempt to open the disk fails with ENXIO ("No such device or
#      address"), the disk then goes, the tap frees, and (after all cases) the module unloads.
# No task stays in D state longer than 60 s (liveness: a held read waits for seconds).
# Seen failing on the module before issue 19 (329720c): (a) "the failure was not counted: failed
# 0 -> 1, aborted 0 -> 0" (the kernel said "0 request(s) failed"); (b1) "the tap does not hold
# the read" (it had failed with EIO at once); (c) "the open failed without ENXIO" (it opened,
# and the read got EIO).
# timeout: 900
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test blktapd md5sum
load_blktap
dstate_watch_start 60
stuck_env

# dbg MINOR KEY: the value of the first "KEY:VALUE" word of the tap's debug attribute.
dbg() { tr ' ' '\n' < "$(tap_sysfs "$1")/debug" 2>/dev/null | sed -n "s/^$2://p" | head -n 1; }
dbg_is() { [ "$(dbg "$1" "$2")" = "$3" ]; }
dbg_ge() { [ "$(dbg "$1" "$2")" -ge "$3" ] 2>/dev/null; }
dump() { log "--- debug of tap $m ---"; cat "$(tap_sysfs "$m")/debug" 2>/dev/null; }
# running PID: the background job PID has not ended.
running() { ! proc_gone "$1"; }

# A 64 MiB image with a random first 4 KiB, for the reads to check.
truncate -s 64M disk.img || fail "cannot create disk.img"
dd if=/dev/urandom of=disk.img bs=4k count=1 conv=notrunc status=none || fail "cannot write the pattern"
want=$(dd if=disk.img bs=4k count=1 status=none | md5sum | cut -d' ' -f1)

# blktapd_tap [BLKTAPD ARGS...]: blktapd (file backend) on tap $m; sets pid.
blktapd_tap() {
	rm -f "blktapd.$m.log"
	serve_tap "$m" "file:$PWD/disk.img" "$@"
	pid=$DAEMON_PID
	daemon_record "$pid"
}

# data_read_start: an O_DIRECT 4k read of $disk into read.$m.bin in the background; sets rpid.
data_read_start() {
	rm -f "read.$m.bin"
	dd if="$disk" of="read.$m.bin" bs=4k count=1 iflag=direct > "read.$m.out" 2>&1 &
	rpid=$!
}
# data_read_ok BOUND WHAT: the read of data_read_start ends within BOUND s with rc 0 and the pattern.
data_read_ok() {
	wait_gone "$1" "$rpid" || { kill -KILL "$rpid"; dump; fail "$2: the read still waits after $1 s"; }
	rc=0
	wait "$rpid" || rc=$?
	[ "$rc" = 0 ] || { cat "read.$m.out"; dump; fail "$2: the read failed (rc=$rc)"; }
	got=$(md5sum < "read.$m.bin" | cut -d' ' -f1)
	[ "$got" = "$want" ] || fail "$2: the read returned other data ($got, expected $want)"
	log "$2: the read returned the pattern"
}

# held_check WHAT: a read is running, and the tap holds one request (for up to 10 s to show).
held_check() {
	wait_for 10 dbg_is "$m" holding 1 || { dump; running "$rpid" || cat "read.$m.out"; fail "$1: the tap does not hold the read"; }
	running "$rpid" || { cat "read.$m.out"; fail "$1: the read ended although held"; }
}

# ------------------------------------------------------------------------------------------
case_a() {
	stuck_tap never-respond
	write_attr "$(tap_sysfs "$m")/recovery" 30 || fail "cannot set recovery: $WRITE_ERR"
	read_start
	wait_for 20 dbg_ge "$m" sent 1 || { dump; fail "(a) the read was not sent to the never-respond daemon"; }
	kill_gone "$pid" 10 "(a) never-respond daemon"
	held_check "(a) after kill -9"
	disk_present "$m" || fail "(a) the disk went although a window was open"
	daemon_start blktap-test stuck --ring "$ring" --mode map-only
	wait_for 10 grep -q 'stuck: serving' "daemon.$m.log" || fail "(a) map-only daemon: $(cat "daemon.$m.log")"
	dbg_is "$m" ready false || { dump; fail "(a) the ring is ready without CREATE_DEVICE"; }
	sleep 1
	held_check "(a) new ring mapped, not ready"
	log "(a) read held (holding:1) with a new ring mapped but not ready"
	failed0=$(dbg "$m" failed) aborted0=$(dbg "$m" aborted)
	t0=$(now)
	blktap-ctl abort -m "$m" || fail "(a) blktap-ctl abort -m $m failed"
	read_wait 0 10 "(a) the held read at abort"
	dbg_is "$m" holding 0 || { dump; fail "(a) the tap still holds requests after the abort"; }
	failed1=$(dbg "$m" failed) aborted1=$(dbg "$m" aborted)
	[ "$failed1" -gt "$failed0" ] && [ "$aborted1" -gt "$aborted0" ] ||
		{ dump; fail "(a) the failure was not counted: failed $failed0 -> $failed1, aborted $aborted0 -> $aborted1"; }
	dbg_is "$m" poisoned abort || { dump; fail "(a) the session is not poisoned by the abort"; }
	log "(a) holding:0, failed $failed0 -> $failed1, aborted $aborted0 -> $aborted1"
	t0=$(now)
	read_start
	read_wait 0 10 "(a) a new read after the abort"
	stuck_finish
	log "(a) tap $m freed"
}

# ------------------------------------------------------------------------------------------
# window_expires_unused: window 2 s on a blktapd tap whose disk the test keeps open (fd 5),
# kill -9 of the daemon with nothing in flight, then 4 s (the window expires unused).
window_expires_unused() {
	tap_alloc_m
	blktapd_tap --recover 2
	dbg_is "$m" recovery 2 || { dump; fail "$1: blktapd --recover 2 did not set the window"; }
	exec 5< "$disk" || fail "$1: cannot open $disk"
	[ "$(dbg "$m" pending)" = 0 ] || { dump; fail "$1: requests in flight before the kill"; }
	kill_gone "$pid" 10 "$1: daemon 1"
	disk_present "$m" || fail "$1: the disk went although it is open and a window was open"
	sleep 4
	dbg_is "$m" holding 0 || { dump; fail "$1: the tap holds requests nobody made"; }
	log "$1: the 2 s window expired unused"
}
# second_window_completes WHAT: after the window was set to 30 s and the daemon with the read
# queued on its ring was killed: held, then completed by daemon 3 (blktapd).
second_window_completes() {
	held_check "$1: after kill -9 of daemon 2 (second window)"
	reissued0=$(dbg "$m" reissued)
	sleep 2
	held_check "$1: 2 s later"
	log "$1: the read is held by the second window"
	blktapd_tap
	data_read_ok 30 "$1: daemon 3"
	[ "$(dbg "$m" reissued)" -gt "$reissued0" ] || { dump; fail "$1: nothing was reissued to daemon 3"; }
	exec 5<&-
	kill_daemon "$pid" TERM
	wait_for 20 disk_gone "$m" || { dump; fail "$1: disk still there after daemon 3 stopped"; }
	free_tap "$m" || fail "$1: cannot free tap $m"
	log "$1: tap $m freed"
}

case_b1() {
	window_expires_unused "(b1)"
	daemon_start blktap-test stuck --ring "$ring" --mode map-only
	dbg_is "$m" ready false || { dump; fail "(b1) the ring is ready without CREATE_DEVICE"; }
	data_read_start
	wait_for 10 dbg_ge "$m" pending 1 || { dump; running "$rpid" || cat "read.$m.out"; fail "(b1) the read was not queued on daemon 2's ring"; }
	running "$rpid" || { cat "read.$m.out"; fail "(b1) the read ended on a ring that is not served"; }
	write_attr "$(tap_sysfs "$m")/recovery" 30 || fail "(b1) cannot set recovery: $WRITE_ERR"
	kill_gone "$pid" 10 "(b1) map-only daemon 2"
	second_window_completes "(b1)"
}

case_b2() {
	window_expires_unused "(b2)"
	blktapd_tap
	d2=$pid
	data_read_start
	data_read_ok 30 "(b2) daemon 2 (took the disk over)"
	write_attr "$(tap_sysfs "$m")/recovery" 30 || fail "(b2) cannot set recovery: $WRITE_ERR"
	kill -STOP "$d2" || fail "(b2) cannot stop daemon 2"
	data_read_start
	wait_for 10 dbg_ge "$m" pending 1 || { dump; fail "(b2) the read was not queued on daemon 2's ring"; }
	running "$rpid" || { cat "read.$m.out"; fail "(b2) the read ended while its daemon is stopped"; }
	kill_gone "$d2" 10 "(b2) stopped daemon 2"
	second_window_completes "(b2)"
}

# ------------------------------------------------------------------------------------------
case_c() {
	tap_alloc_m
	blktapd_tap --recover 2
	dbg_is "$m" openers 0 || { dump; fail "(c) the disk is open"; }
	kill_gone "$pid" 10 "(c) blktapd"
	disk_present "$m" || fail "(c) the disk went at once although a window was open"
	sleep 4
	dbg_is "$m" holding 0 || { dump; fail "(c) the tap holds requests nobody made"; }
	disk_present "$m" && log "(c) window expired; the disk is still there (removed lazily)"
	rc=0
	dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct > open.out 2>&1 || rc=$?
	[ "$rc" != 0 ] || fail "(c) the disk of an expired window opened (and read)"
	grep -q 'No such device or address' open.out || { cat open.out; fail "(c) the open failed without ENXIO"; }
	log "(c) open after the window: $(tail -n 1 open.out)"
	wait_for 20 disk_gone "$m" || { dump; fail "(c) the disk lingers after the refused open"; }
	free_tap "$m" || fail "(c) cannot free tap $m"
	log "(c) disk gone, tap $m freed"
}

run_case a case_a
run_case b1 case_b1
run_case b2 case_b2
run_case c case_c
cases_check
dstate_watch_check
unload_blktap
log "module unloaded"
