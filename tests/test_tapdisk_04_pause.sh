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

truncate -s 64M disk.img || fail "cannot create disk.img"
td_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID

sent() { tap_counts "$m" | cut -d' ' -f1; }
flowing() { [ "$(sent)" -gt 300 ]; }
fio --name=pause --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
	--bs=4k --size=48M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
	--output-format=terse --terse-version=3 > fio.out 2> fio.err &
fio_pid=$!
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"

for round in 1 2; do
	if ! kill -0 "$fio_pid" 2>/dev/null; then
		[ "$round" -gt 1 ] || td_fail "fio ended before the first pause"
		log "round $round: fio already done"
		break
	fi
	td_run "pause$round" tap-ctl pause -p "$pid" -m "$m" || { cat "pause$round.err"; td_fail "tap-ctl pause failed"; }
	state=$(td_list_field "$m" state)
	# TD_VBD_PAUSED is 0x20 in tapdisk's VBD state bits.
	[ $((state & 0x20)) = 32 ] || td_fail "round $round: tap-ctl list shows state $state while paused"
	sleep 1
	s1=$(sent)
	sleep 3
	s2=$(sent)
	log "round $round: paused (state $state), sent $s1 -> $s2 over 3 s"
	[ "$s1" = "$s2" ] || td_fail "round $round: requests were still sent while tapdisk was paused ($s1 -> $s2)"
	kill -0 "$fio_pid" 2>/dev/null || td_fail "round $round: fio ended while tapdisk was paused"
	td_run "unpause$round" tap-ctl unpause -p "$pid" -m "$m" || { cat "unpause$round.err"; td_fail "tap-ctl unpause failed"; }
	[ "$(td_list_field "$m" state)" = 0 ] || td_fail "round $round: state $(td_list_field "$m" state) after unpause"
	grown() { [ "$(sent)" -gt "$s2" ]; }
	wait_for 20 grown || td_fail "round $round: no request was sent in 20 s after unpause"
	log "round $round: unpaused, I/O resumed (sent $(sent))"
	sleep 2
done

rc=0
wait "$fio_pid" || rc=$?
fio_check "pause/unpause under fio" fio.out fio.err "$rc"
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 requests failed on the tap"
dstate_watch_check
td_destroy "$m"
