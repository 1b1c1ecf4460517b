#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Kernel-driven pause and resume (V-OXT sysfs pause/resume, the ring message byte, ioctls 204 and
# 206) of OpenXT's legacy tapdisk2 while fio writes and verifies (crc32c, O_DIRECT, QD8) on its
# tapdev. Each pause returns once tapdisk2 answered (pause:paused, the message byte cleared, no
# writer waiting); while paused no request is sent (the "sent" count stands still for 2 s, fio's
# requests wait in the kernel); a second pause of a paused tap returns 0; resume returns once
# tapdisk2 answered and the count grows again. fio ends with no I/O error and every block
# verified, and the tap failed no request. Preconditions: resume of a tap that is not paused is
# EINVAL; message_timeout takes 1..3600 only (0 and 3601 are EINVAL).
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"
. "$(dirname "$0")/lib/oxt_pause.sh"

require_cmd fio
require_openxt

truncate -s 32M disk.img || fail "cannot create disk.img"
oxt_create -a "aio:$PWD/disk.img"
m=$TD_MINOR
attrs=$(tap_sysfs "$m")
log "tap $m ($TD_DEV) served by tapdisk2 $TD_PID"

expect_pause "$m" none "fresh tap"
[ "$(pause_field "$m" message_timeout)" = 30 ] || td_fail "message_timeout is not 30 s by default"
expect_write_err "$m" resume 1 "Invalid argument" "resume while running"
expect_write_err "$m" message_timeout 0 "Invalid argument" "message_timeout 0"
expect_write_err "$m" message_timeout 3601 "Invalid argument" "message_timeout 3601"
write_attr "$attrs/message_timeout" 20 || td_fail "message_timeout 20: $WRITE_ERR"
[ "$(cat "$attrs/message_timeout")" = 20 ] || td_fail "message_timeout reads $(cat "$attrs/message_timeout")"

oxt_fio_start pause "$TD_DEV" 12
flowing() { [ "$(sent "$m")" -gt 50 ]; }
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"

for round in 1 2; do
	kill -0 "$FIO_PID" 2>/dev/null || { log "round $round: fio already done"; break; }
	expect_write "$m" pause "round $round"
	expect_pause "$m" paused "round $round: after pause"
	expect_write "$m" pause "round $round: pause again"
	s1=$(sent "$m")
	held=$(sed -n 's/^begin pending:\([0-9]*\).*/\1/p' "$attrs/debug" | head -n 1)
	sleep 2
	s2=$(sent "$m")
	[ "$s1" = "$s2" ] || td_fail "round $round: requests were sent while paused ($s1 -> $s2)"
	# fio may have done its last I/O just before the pause and be exiting: only a fio with
	# requests held by the pause must still be there.
	if ! kill -0 "$FIO_PID" 2>/dev/null; then
		[ "${held:-0}" = 0 ] || td_fail "round $round: fio ended while $held of the tap's requests were held by the pause"
		log "round $round: fio had finished its I/O before the pause"
	fi
	log "round $round: paused, sent $s1 -> $s2 in 2 s, $held request(s) held"
	expect_write "$m" resume "round $round"
	expect_pause "$m" none "round $round: after resume"
	grown() { [ "$(sent "$m")" -gt "$s2" ]; }
	kill -0 "$FIO_PID" 2>/dev/null || [ "${held:-0}" != 0 ] || { log "round $round: resumed, fio done"; break; }
	wait_for 20 grown || td_fail "round $round: nothing was sent in 20 s after resume"
	log "round $round: resumed, sent $(sent "$m")"
	sleep 1
done

fio_done pause
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 requests failed on the tap"
oxt_destroy "$m"
