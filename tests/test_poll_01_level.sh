#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Poll readiness is a level for a daemon that keeps req_event the Xen ring way (issue 19,
# point 6; rule R5). blktap-test level serves a RAM disk (a random 4 MiB image), stores
# req_event = 0 right after mmap and req_event = req_cons + 1 after taking requests, and learns
# of requests only from epoll, used in ways that call the driver's poll twice per event:
#  (a) late-queued: the ring fd is added to epoll after 4 reads were queued;
#  (a') late-published: as (a), but a poll(0) whose answer the daemon ignores published them;
#  (b) oneshot: EPOLLONESHOT, re-armed with EPOLL_CTL_MOD 300 ms after each batch, while 16
#      sequential reads keep arriving;
#  (c) nested: the ring fd in an inner epoll, the inner epoll in the outer one it waits on.
# In each, 4 parallel and then 16 sequential O_DIRECT reads complete within 30 s with the
# image's data. And
#  (d) a new mapping starts "not notified": daemon 1 (stuck --mode never-poll) is woken for a
#      read it never polls for, then stops (the test keeps the disk open, so it stays);
#      daemon 2 (level --mode before-mmap) adds the ring fd to epoll before it maps the ring
#      and waits: a new read must wake it and complete with the right data within 30 s.
# Before issue 19 the first poll consumed the event (a, a', b, c hang) and the notified flag
# outlived the mapping (d hangs).
# timeout: 600
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test cmp
load_blktap
stuck_env
BOUND=30
dd if=/dev/urandom of=image bs=1M count=4 status=none || fail "cannot make the image"

# reads_start N: N O_DIRECT 4k reads of $disk in parallel, block 13*i for read i, in the
# background. reads_check WHAT: they all end within $BOUND s with the image's data.
reads_start() {
	_rs_n=$1 _i=0 rpids=
	while [ "$_i" -lt "$_rs_n" ]; do
		_i=$((_i + 1))
		dd if="$disk" of="r.$_i" bs=4k skip=$((_i * 13)) count=1 iflag=direct > "r.$_i.out" 2>&1 &
		rpids="$rpids $!"
	done
	t0=$(now)
}
reads_check() {
	while :; do
		_left=0
		for _p in $rpids; do proc_gone "$_p" || _left=$((_left + 1)); done
		[ "$_left" -gt 0 ] || break
		[ "$(awk -v e="$(since "$t0")" -v b="$BOUND" 'BEGIN { print (e > b) }')" = 0 ] || {
			cat "$(tap_sysfs "$m")/debug"
			fail "$1: $_left read(s) still wait $(since "$t0") s after they began: $(tail -n 3 "daemon.$m.log")"
		}
		sleep 0.2
	done
	_i=0
	for _p in $rpids; do
		_i=$((_i + 1))
		wait "$_p" || { cat "r.$_i.out"; fail "$1: read $_i failed"; }
		dd if=image bs=4k skip=$((_i * 13)) count=1 status=none | cmp -s - "r.$_i" ||
			fail "$1: read $_i returned other data than the image holds"
	done
	log "$1: $_rs_n parallel reads done in $(since "$t0") s"
}
# seq_check WHAT: 16 sequential O_DIRECT 4k reads (one dd) end within $BOUND s with the image's
# data.
seq_check() {
	t0=$(now)
	rc=0
	timeout "$BOUND" dd if="$disk" of=seq.bin bs=4k count=16 iflag=direct > seq.out 2>&1 || rc=$?
	[ "$rc" = 0 ] || {
		cat "$(tap_sysfs "$m")/debug"
		fail "$1: 16 sequential reads did not complete (rc=$rc) within $BOUND s: $(tail -n 3 "daemon.$m.log")"
	}
	dd if=image bs=4k count=16 status=none | cmp -s - seq.bin ||
		fail "$1: the sequential reads returned other data than the image holds"
	log "$1: 16 sequential reads done in $(since "$t0") s"
}

# epoll_case MODE: (a), (a'), (b) or (c).
epoll_case() {
	tap_alloc_m
	rm -f "go.$m"
	daemon_start blktap-test level --ring "$ring" --mode "$1" --image "$PWD/image" --go "$PWD/go.$m"
	reads_start 4
	case $1 in
	late-*)
		queued() { [ "$(tap_pending "$m")" -ge 4 ] 2>/dev/null; }
		wait_for 20 queued || {
			cat "$(tap_sysfs "$m")/debug"
			for _p in $rpids; do log "read $_p: $(proc_where "$_p")"; done
			cat r.*.out
			fail "$1: the 4 reads were not queued"
		}
		touch "go.$m"
		;;
	esac
	reads_check "$1"
	seq_check "$1"
	stuck_finish
}

# remap_case: (d), daemon_notified across a remap.
remap_case() {
	tap_alloc_m
	daemon_start blktap-test stuck --ring "$ring" --mode never-poll --size-mib 4
	d1=$pid
	exec 7< "$disk" || fail "remap: cannot open $disk"
	w0=$(wakeups)
	dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct > r1.out 2>&1 &
	r1=$!
	woken() { [ "$(wakeups)" -gt "$w0" ]; }
	wait_for 20 woken || { cat "$(tap_sysfs "$m")/debug"; fail "remap: daemon 1 was not woken for the first read"; }
	kill -TERM "$d1"
	wait "$d1" 2>/dev/null
	unmapped() { ! tap_mapped "$m"; }
	wait_for 10 unmapped || fail "remap: daemon 1 still maps the ring after it exited"
	wait_gone 10 "$r1" || fail "remap: the first read still waits after daemon 1 unmapped"
	wait "$r1" 2>/dev/null
	disk_present "$m" || fail "remap: the disk went although the test holds it open"
	daemon_start blktap-test level --ring "$ring" --mode before-mmap --image "$PWD/image"
	# It logs "serving" once it has taken the disk over, just before it waits in epoll_wait.
	serving() { grep -q 'serving' "daemon.$m.log"; }
	wait_for 10 serving || fail "remap: daemon 2 did not start serving: $(cat "daemon.$m.log")"
	sleep 1
	reads_start 1
	reads_check "remap, daemon 2 waiting in epoll since before its mmap"
	seq_check "remap"
	exec 7<&-
	stuck_finish
}
wakeups() { sed -n 's/.*wakeups:\([0-9]*\).*/\1/p' "$(tap_sysfs "$m")/debug" | head -n 1; }

for mode in late-queued late-published oneshot nested; do
	run_case "$mode" epoll_case "$mode"
done
run_case remap remap_case
cases_check
