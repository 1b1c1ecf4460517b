#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# OpenXT's legacy `tap-ctl list`, which joins three sources: the minors it finds by globbing
# /sys/class/blktap2/blktap* and parsing "blktap%d" (the driver's V-OXT spelling of the class
# device, beside V-XS's blktap!blktap<N>), the tapdisk2 control sockets and each tapdisk2's VBDs.
# Two served taps (raw and VHD) are listed once each as "pid=P minor=M state=0 args=TYPE:PATH",
# P being the process that holds M's ring open; the -m, -p, -t and -f filters select them. A
# minor allocated with `tap-ctl allocate` and served by nobody is listed as a bare "minor=M"
# (only the sysfs name can show it), and `tap-ctl free` takes it away. `tap-ctl destroy -m M`
# without -p finds the tapdisk2 through the list. Afterwards nothing is listed.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_openxt

# list_out NAME [list ARGS...]: OpenXT's tap-ctl list into NAME.out (not a tty: one key=value
# line per entry).
list_out() {
	_lo=$1
	shift
	td_run "$_lo" "$OXT_TAPCTL" list "$@" || { cat "$_lo.err"; td_fail "tap-ctl list $* failed"; }
}
# expect_lines NAME LINE...: NAME.out holds exactly these lines, in any order.
expect_lines() {
	_el=$1
	shift
	printf '%s\n' "$@" | sort > "$_el.want"
	sort "$_el.out" > "$_el.got"
	cmp -s "$_el.want" "$_el.got" || {
		log "--- expected ---"; cat "$_el.want"; log "--- tap-ctl list printed ---"; cat "$_el.got"
		td_fail "tap-ctl list ($_el) does not show what is expected"
	}
}

truncate -s 16M raw.img || fail "cannot create raw.img"
"$OXT_VHDUTIL" create -n "$PWD/disk.vhd" -s 16 > vhd.log 2>&1 || { cat vhd.log; fail "vhd-util create failed"; }
oxt_create -a "aio:$PWD/raw.img"
m1=$TD_MINOR p1=$TD_PID
oxt_create -a "vhd:$PWD/disk.vhd"
m2=$TD_MINOR p2=$TD_PID
[ "$m1" != "$m2" ] && [ "$p1" != "$p2" ] || td_fail "two taps share minor $m1/$m2 or tapdisk2 $p1/$p2"
for m in "$m1" "$m2"; do
	[ -d "$BLKTAP_CLASS/blktap$m" ] || td_fail "no $BLKTAP_CLASS/blktap$m for tap $m"
done
[ "$(oxt_pid_of_ring "$m1")" = "$p1" ] || td_fail "tap-ctl lists pid $p1 for minor $m1, its ring is held by '$(oxt_pid_of_ring "$m1")'"
[ "$(oxt_pid_of_ring "$m2")" = "$p2" ] || td_fail "tap-ctl lists pid $p2 for minor $m2, its ring is held by '$(oxt_pid_of_ring "$m2")'"
l1="pid=$p1 minor=$m1 state=0 args=aio:$PWD/raw.img"
l2="pid=$p2 minor=$m2 state=0 args=vhd:$PWD/disk.vhd"
list_out all
expect_lines all "$l1" "$l2"
list_out by-minor -m "$m2"
expect_lines by-minor "$l2"
list_out by-pid -p "$p1"
expect_lines by-pid "$l1"
list_out by-type -t vhd
expect_lines by-type "$l2"
list_out by-file -f "$PWD/raw.img"
expect_lines by-file "$l1"
log "served: '$l1' and '$l2'; -m, -p, -t, -f select them"

# A minor no tapdisk2 serves: only the sysfs glob can find it.
td_run alloc "$OXT_TAPCTL" allocate || { cat alloc.err; td_fail "tap-ctl allocate failed"; }
m3=$(tail -n 1 alloc.out)
m3=${m3##*tapdev}
case "$m3" in '' | *[!0-9]*) td_fail "tap-ctl allocate printed '$(cat alloc.out)'" ;; esac
TD_MINORS="$TD_MINORS $m3" # cleanup frees it if the test fails
list_out orphan
expect_lines orphan "$l1" "$l2" "minor=$m3"
td_run free "$OXT_TAPCTL" free -m "$m3" || { cat free.err; td_fail "tap-ctl free -m $m3 failed"; }
wait_for 5 test ! -e "$BLKTAP_CLASS/blktap$m3" || td_fail "$BLKTAP_CLASS/blktap$m3 still there after free"
TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$m3" | tr '\n' ' ')
list_out freed
expect_lines freed "$l1" "$l2"
log "unserved: 'minor=$m3' until tap-ctl free"

# destroy without -p: the pid comes from the list.
td_run destroy "$OXT_TAPCTL" destroy -m "$m1" || { cat destroy.err; td_fail "tap-ctl destroy -m $m1 (no -p) failed"; }
wait_for 10 td_gone "$m1" "$p1" || td_fail "tap $m1 or its tapdisk2 $p1 still there after destroy -m"
TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$m1" | tr '\n' ' ')
[ ! -e "$BLKTAP_CLASS/blktap$m1" ] || td_fail "$BLKTAP_CLASS/blktap$m1 still there after destroy"
list_out one-left
expect_lines one-left "$l2"
oxt_destroy "$m2"
list_out none
[ ! -s none.out ] || { cat none.out; td_fail "tap-ctl list shows entries after every tap was destroyed"; }
log "destroy -m found the tapdisk2 through the list; nothing listed at the end"
