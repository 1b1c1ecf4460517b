#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# rmmod with taps present: refused (quickly, without hanging) while a tap is allocated, while a
# daemon serves one, and while a dead daemon's disk is still open; once every tap is freed it
# succeeds, the module's reference count is back to 0 first, and the module loads and unloads
# cleanly again.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd blktap-test
unload_blktap
load_blktap

refcnt() { cat "/sys/module/$BLKTAP_MOD/refcnt" 2>/dev/null; }
base=$(refcnt)
[ "$base" = 0 ] || fail "refcnt is $base right after insmod"
daemon=
minors=
cleanup() {
	[ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null
	exec 5<&-
	for m in $minors; do [ -d "$(tap_sysfs "$m")" ] && free_tap "$m"; done
	return 0
}
atexit cleanup

# rmmod_refused WHY: rmmod must fail quickly and leave the module loaded.
rmmod_refused() {
	if out=$(timeout 10 rmmod "$BLKTAP_MOD" 2>&1 5<&-); then
		fail "rmmod succeeded $1"
	fi
	rc=$?
	[ "$rc" -lt 124 ] || fail "rmmod hung $1"
	module_loaded || fail "the module is gone although rmmod failed ($1)"
	log "rmmod $1: refused ($out)"
}

tap_alloc
a=$TAP_MINOR
minors="$a"
rmmod_refused "with an idle tap allocated"
tap_alloc
b=$TAP_MINOR
minors="$minors $b"
serve_tap "$b" mem:8M
daemon=$DAEMON_PID
rmmod_refused "with a daemon serving a tap"
# The daemon dies while another task has the disk open.
exec 5<>"/dev/$(disk_name "$b")" || fail "cannot open the disk"
kill_daemon "$daemon"
daemon=
rmmod_refused "with a dead daemon's disk open"
exec 5<&-
wait_for 5 disk_gone "$b" || fail "the disk did not go after its last close"
free_tap "$a" || fail "cannot free tap $a"
rmmod_refused "with one tap still allocated"
free_tap "$b" || fail "cannot free tap $b"
minors=
[ "$(refcnt)" = 0 ] || fail "refcnt is $(refcnt) with every tap freed"
unload_blktap
load_blktap
tap_alloc
free_tap "$TAP_MINOR" || fail "cannot free a tap after reloading"
unload_blktap
load_blktap
stat_report teardown-rmmod 1 0 0
