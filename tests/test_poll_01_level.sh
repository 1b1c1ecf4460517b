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
	for _p in $rpids; do
		wait_for "$BOUND" proc_gone "$_p" || {
			cat "$(tap_sysfs "$m")/debug"
			fail "$1: a read still waits $(since "$t0") s after it began: $(cat "daemon.$m.log" | tail -n 5)"
		}
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
# seq_check WHAT: 16 sequential O_DIRECT 4k reads (one dd) end within $BOUND s with the image's data.
seq_check() {
	t0=$(now)
	rc=0
	timeout "$BOUND" dd if="$disk" of=seq.bin bs=4k count=16 iflag=direct > seq.out 2>&1 || rc=$?
	[ "$rc" = 0 ] || { cat "$(tap_sysfs "$m")/debug"; fail "$1: 16 sequential reads did not complete (rc=$rc) within $BOUND s: $(tail -n 5 "daemon.$m.log")"; }
	dd if=image bs=4k count=16 status=none | cmp -s - seq.bin || fail "$1: the sequential reads returned other data than the image holds"
	log "$1: 16 sequential reads done in $(since "$t0") s"
}
finish() { stuck_finish; }

for mode in late-queued late-published oneshot nested; do
	tap_alloc_m
	rm -f "go.$m"
	daemon_start blktap-test level --ring "$ring" --mode "$mode" --image "$PWD/image" --go "$PWD/go.$m"
	case $mode in
	late-*)
		reads_start 4
		queued() { [ "$(tap_pending "$m")" -ge 4 ] 2>/dev/null; }
		wait_for 20 queued || { cat "$(tap_sysfs "$m")/debug"; fail "$mode: the 4 reads were not queued"; }
		touch "go.$m"
		;;
	*) reads_start 4 ;;
	esac
	reads_check "$mode"
	seq_check "$mode"
	finish
done

# (d) daemon_notified across a remap.
tap_alloc_m
daemon_start blktap-test stuck --ring "$ring" --mode never-poll --size-mib 4
d1=$pid
exec 7< "$disk" || fail "cannot open $disk"
atexit "exec 7<&-"
wakeups() { sed -n 's/.*wakeups:\([0-9]*\).*/\1/p' "$(tap_sysfs "$m")/debug" | head -n 1; }
w0=$(wakeups)
dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct > r1.out 2>&1 &
r1=$!
woken() { [ "$(wakeups)" -gt "$w0" ]; }
wait_for 20 woken || { cat "$(tap_sysfs "$m")/debug"; fail "remap: daemon 1 was not woken for the first read"; }
kill -TERM "$d1"
wait "$d1" 2>/dev/null
unmapped() { ! tap_mapped "$m"; }
wait_for 10 unmapped || fail "remap: daemon 1 still maps the ring after it exited"
wait_for 10 proc_gone "$r1" || fail "remap: the first read still waits after daemon 1 unmapped"
wait "$r1" 2>/dev/null
disk_present "$m" || fail "remap: the disk went although the test holds it open"
daemon_start blktap-test level --ring "$ring" --mode before-mmap --image "$PWD/image"
# The daemon logs once it has taken the disk over and waits in epoll_wait.
waiting() { grep -q 'serving' "daemon.$m.log"; }
wait_for 10 waiting || fail "remap: daemon 2 did not start serving: $(cat "daemon.$m.log")"
sleep 1
reads_start 1
reads_check "remap, daemon 2 waiting in epoll since before its mmap"
seq_check "remap"
exec 7<&-
finish
