#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The ABI checks of blktap-test (KTAP output passed through): "ioctl-errors" (error codes of the
# control and ring ioctls, open and mmap), "names" (taps 0, 25 and 26 get the disks tda, tdz and
# tdaa) and "zeroed-pages" (a fresh ring mapping: zeroed data pages, initial ring header, exact
# mapping size). Fails if any of them fails; skips only if all of them skipped.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
unload_blktap # "names" needs minors 0, 25 and 26: start with no tap
load_blktap

failed='' passed=0
for check in ioctl-errors names zeroed-pages; do
	log "--- blktap-test $check"
	rc=0
	blktap-test "$check" 2>&1 || rc=$?
	case $rc in
	0) passed=$((passed + 1)) ;;
	4) log "blktap-test $check: skipped" ;;
	*) failed="$failed $check(rc=$rc)" ;;
	esac
done
[ -z "$failed" ] || fail "blktap-test failed:$failed"
[ "$passed" -gt 0 ] || skip "blktap-test skipped every check"
left=$(blktap-ctl list 2>/dev/null | sed 1d)
[ -z "$left" ] || fail "blktap-test left taps behind: $left"
