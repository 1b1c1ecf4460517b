#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The module's default keeps V-XS semantics for the real tapdisk 3.55.5 (issue 19, point 4;
# rule R3): tapdisk never times out a request it holds while paused (TD_VBD_REQUEST_TIMEOUT
# applies only to failed requests it retries), so the driver must not either. A tap made by
# tap-ctl create with the module's default timeout: its sysfs "timeout" reads 0 (never; it was
# 180 before issue 19). Then tap-ctl pause under fio --verify=crc32c (O_DIRECT, QD16) for
# $BLKTAP_PAUSE_SECS seconds (default 20 in `make check`, 200 in `make stress`, longer than the
# old 180 s default), tap-ctl unpause: fio ends with no I/O error and every block verified, the
# tap failed no request, and no task was in D state longer than 30 s.
# timeout: 900
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio blktap-test
tapdisk_env
PAUSE=${BLKTAP_PAUSE_SECS:-$(scaled 20 200)}
dstate_watch_start 30

truncate -s 64M disk.img || fail "cannot create disk.img"
td_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID
t=$(cat "$(tap_sysfs "$m")/timeout")
[ "$t" = 0 ] || td_fail "a tap made by tap-ctl has timeout '$t', expected the module's default 0 (never, as in V-XS)"

sent() { tap_counts "$m" | cut -d' ' -f1; }
flowing() { [ "$(sent)" -gt 300 ]; }
# 48 MiB of 4k writes and their verification take a minute or more under TCG: the pause comes
# early (after 300 requests), so fio has most of its work still to do after it.
fio --name=pause --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
	--bs=4k --size=48M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
	--output-format=terse --terse-version=3 > fio.out 2> fio.err &
fio_pid=$!
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"
td_run pause tap-ctl pause -p "$pid" -m "$m" || { cat pause.err; td_fail "tap-ctl pause failed"; }
state=$(td_list_field "$m" state)
[ $((state & 0x20)) = 32 ] || td_fail "tap-ctl list shows state $state while paused"
t0=$(now)
s1=$(sent)
sleep "$PAUSE"
s2=$(sent)
kill -0 "$fio_pid" 2>/dev/null || { cat fio.err; td_fail "fio ended while tapdisk was paused"; }
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 request(s) failed while tapdisk was paused for $(since "$t0") s"
log "paused for $(since "$t0") s (sent $s1 -> $s2), no request failed"
td_run unpause tap-ctl unpause -p "$pid" -m "$m" || { cat unpause.err; td_fail "tap-ctl unpause failed"; }
grown() { [ "$(sent)" -gt "$s2" ]; }
wait_for 20 grown || td_fail "no request was sent in 20 s after unpause"
log "unpaused, I/O resumed (sent $(sent))"

rc=0
wait "$fio_pid" || rc=$?
fio_check "pause of ${PAUSE} s under fio --verify" fio.out fio.err "$rc"
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 requests failed on the tap"
dstate_watch_check
stat_report pause 1 "$(sent)" 0
td_destroy "$m"
