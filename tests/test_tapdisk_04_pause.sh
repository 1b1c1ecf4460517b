#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# tap-ctl pause/unpause of the real tapdisk 3.55.5 while fio writes and verifies (crc32c,
# O_DIRECT, QD16) on its tapdev. In tapdisk 3.x pausing is tapdisk's own business: its requests
# are drained (tap-ctl pause returns once tapdisk has quiesced), later ones wait in the
# driver, and the driver must simply hold them. While paused, tap-ctl list shows the paused
# state and no request completes (the tap's "sent" count stops growing once the ring holds what
# it can); after unpause the count grows again, fio ends with no I/O error and every block
# verified, and no task was in D state longer than the hung-task bound.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio blktap-test
tapdisk_env
dstate_watch_start 30

td_verify_under_fio
m=$TD_MINOR

for round in 1 2; do
	if ! kill -0 "$FIO_PID" 2>/dev/null; then
		[ "$round" -gt 1 ] || td_fail "fio ended before the first pause"
		log "round $round: fio already done"
		break
	fi
	td_pause "$round"
	sleep 1
	s1=$(td_sent)
	sleep 3
	s2=$(td_sent)
	log "round $round: paused, sent $s1 -> $s2 over 3 s"
	[ "$s1" = "$s2" ] || td_fail "round $round: requests were still sent while tapdisk was paused ($s1 -> $s2)"
	kill -0 "$FIO_PID" 2>/dev/null || td_fail "round $round: fio ended while tapdisk was paused"
	td_unpause "$round" "$s2"
	sleep 2
done
td_verify_done "pause/unpause under fio"
dstate_watch_check
td_destroy "$m"
