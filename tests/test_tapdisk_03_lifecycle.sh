#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The step-by-step life cycle that tap-ctl create and destroy are made of, with the real tapdisk
# 3.55.5, checking the driver's state after each step:
#   allocate: the tap exists (sysfs, ring node), no disk, nothing maps the ring;
#   spawn:    a tapdisk runs, the tap is untouched;
#   attach:   tapdisk maps the ring (debug attribute), still no disk;
#   open:     the disk appears with the image's size and serves I/O (written, read back);
#   close:    the disk is gone, the ring still mapped;
#   detach:   the ring is unmapped and tapdisk exits (it serves nothing any more);
#   free:     the tap is gone (sysfs, /proc/misc still has the control device).
# Then the same minor is allocated again and served by tap-ctl create.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp blockdev
tapdisk_env
truncate -s 16M disk.img || fail "cannot create disk.img"
pattern data.bin 4

step() { # step NAME CMD...: run a tap-ctl step, fail with its output if it fails
	_s=$1
	shift
	_rc=0
	td_run "$_s" "$@" || _rc=$?
	[ "$_rc" = 0 ] || { cat "$_s.out" "$_s.err"; td_fail "$_s: '$*' failed (rc=$_rc)"; }
}
mapped() { tap_mapped "$m"; }
unmapped() { ! tap_mapped "$m"; }

step allocate tap-ctl allocate
dev=$(tail -n 1 allocate.out)
m=${dev##*tapdev}
case "$m" in '' | *[!0-9]*) td_fail "tap-ctl allocate printed '$dev'" ;; esac
TD_MINORS=$m # cleanup on failure
[ -d "$(tap_sysfs "$m")" ] || td_fail "allocate: no sysfs directory for tap $m"
[ -c "$TD_NODE_DIR/blktap$m" ] || td_fail "allocate: tap-ctl made no ring node $TD_NODE_DIR/blktap$m"
[ -b "$TD_NODE_DIR/tapdev$m" ] || td_fail "allocate: tap-ctl made no block node $TD_NODE_DIR/tapdev$m"
disk_gone "$m" || td_fail "allocate: tap $m has a disk before open"
unmapped || td_fail "allocate: tap $m is mapped before attach"
log "allocate: tap $m"

step spawn tap-ctl spawn
pid=$(tail -n 1 spawn.out)
pid=${pid##* }
proc_alive "$pid" || td_fail "spawn: no process $pid"
[ "$(cat "/proc/$pid/comm")" = tapdisk ] || td_fail "spawn: process $pid is $(cat "/proc/$pid/comm"), not tapdisk"
unmapped || td_fail "spawn: tap $m mapped before attach"
log "spawn: tapdisk $pid"

step attach tap-ctl attach -p "$pid" -m "$m"
wait_for 5 mapped || td_fail "attach: tapdisk $pid did not map the ring of tap $m"
disk_gone "$m" || td_fail "attach: tap $m has a disk before open"
log "attach: ring mapped"

step open tap-ctl open -p "$pid" -m "$m" -a "aio:$PWD/disk.img"
wait_for 5 disk_present "$m" || td_fail "open: no disk for tap $m"
[ "$(blockdev --getsize64 "$TD_NODE_DIR/tapdev$m")" = 16777216 ] || td_fail "open: the disk is not 16 MiB"
[ "$(td_list_field "$m" args)" = "aio:$PWD/disk.img" ] || td_fail "open: tap-ctl list does not show the image"
write_region "$TD_NODE_DIR/tapdev$m" 8 data.bin
drop_caches
region_equal disk.img 8 4 data.bin || td_fail "open: the write is not in the image"
region_equal "$TD_NODE_DIR/tapdev$m" 8 4 data.bin || td_fail "open: the write does not read back"
log "open: disk $(disk_name "$m") serves I/O"

step close tap-ctl close -p "$pid" -m "$m"
wait_for 5 disk_gone "$m" || td_fail "close: the disk of tap $m is still there"
mapped || td_fail "close: the ring is no longer mapped (detach has not run)"
proc_alive "$pid" || td_fail "close: tapdisk exited"
log "close: disk gone, ring still mapped"

step detach tap-ctl detach -p "$pid" -m "$m"
wait_for 5 unmapped || td_fail "detach: the ring of tap $m is still mapped"
td_gone_pid() { ! proc_alive "$pid"; }
wait_for 10 td_gone_pid || td_fail "detach: tapdisk $pid still runs with nothing to serve"
[ -d "$(tap_sysfs "$m")" ] || td_fail "detach: the tap went before free"
log "detach: ring unmapped, tapdisk exited"

step free tap-ctl free -m "$m"
wait_for 5 test ! -d "$(tap_sysfs "$m")" || td_fail "free: tap $m is still in sysfs"
grep -q ' blktap/control$' /proc/misc || td_fail "free: the control device left /proc/misc"
TD_MINORS=
log "free: tap gone"

region_equal disk.img 8 4 data.bin || fail "the image changed over close/detach/free"
td_create -a "aio:$PWD/disk.img"
[ "$TD_MINOR" = "$m" ] || td_fail "the freed minor $m was not reused (got $TD_MINOR)"
region_equal "$TD_DEV" 8 4 data.bin || td_fail "the served-again tap does not read the image"
td_destroy "$TD_MINOR"
