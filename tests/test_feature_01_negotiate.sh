#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The feature negotiation (NEGOTIATE, issue 20) through blktap-test "negotiate" (KTAP passed
# through): every hostile value is EINVAL with a log line (sizes, version, unknown bits with the
# supported set written back, FUA without FLUSH, limits out of range or without their feature,
# reserved words, a negotiation after the session's disk exists); the agreement is the
# intersection with what the tap offers (its sysfs discard / write_zeroes); the disk's queue
# shows exactly what was agreed; a second daemon on that disk must ask for the same features; a
# live switch-off takes write-zeroes off the queue. Deep rings (FEAT_DEEP): ring_slots other
# than the mapping's, or absurd, is EINVAL with a log line; the agreed 128 give the disk 128
# tags; a daemon with V-XS's mapping cannot take that disk over. Then a blktapd with
# out-of-range limits on its command line is refused and makes no disk.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test blktapd blktap-ctl
load_blktap
mark=$(kmsg_mark)

rc=0
blktap-test negotiate 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "blktap-test negotiate failed (rc=$rc)"
kmsg_since "$mark" | grep -q 'NEGOTIATE refused: size 0' || fail "no log line for a refused size"
kmsg_since "$mark" | grep -q 'NEGOTIATE: unknown feature bits 0x400' ||
	fail "no log line for unknown feature bits"
kmsg_since "$mark" | grep -q 'NEGOTIATE refused: discard granularity' ||
	fail "no log line for a bad discard granularity"
kmsg_since "$mark" | grep -q 'NEGOTIATE refused: ring slots (pid' ||
	fail "no log line for absurd ring slots"
kmsg_since "$mark" | grep -q 'NEGOTIATE refused: max segments or ring slots other than the ring mapping' ||
	fail "no log line for ring slots other than the mapping's"

# blktapd passes absurd limits on: the driver refuses them, blktapd exits with an error, no disk.
tap_alloc
minor=$TAP_MINOR
atexit "free_tap $minor"
for bad in "--discard-granularity 3000" "--max-discard-sectors 0" "--max-write-zeroes-sectors 4294967295"; do
	rc=0
	# shellcheck disable=SC2086 # split the option and its value
	blktapd --minor "$minor" --backend mem:8M --features all $bad --foreground \
		--log "$PWD/blktapd.bad.log" </dev/null >/dev/null 2>&1 || rc=$?
	[ "$rc" != 0 ] || fail "blktapd with $bad succeeded"
	grep -q "NEGOTIATE.*Invalid argument" blktapd.bad.log || {
		tail -n 3 blktapd.bad.log
		fail "blktapd with $bad: no EINVAL from NEGOTIATE in its log"
	}
	disk_gone "$minor" || fail "blktapd with $bad left a disk"
	log "blktapd $bad: refused (EINVAL), no disk"
done
