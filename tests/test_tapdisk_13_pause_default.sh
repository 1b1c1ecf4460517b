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

# fio gets 48 MiB of 4k writes and their verification, a minute or more under TCG: the pause
# comes early, so fio has most of its work still to do after it.
td_verify_under_fio
m=$TD_MINOR
t=$(cat "$(tap_sysfs "$m")/timeout")
[ "$t" = 0 ] || td_fail "a tap made by tap-ctl has timeout '$t', expected the module's default 0 (never, as in V-XS)"
td_pause 1
t0=$(now)
s1=$(td_sent)
sleep "$PAUSE"
s2=$(td_sent)
kill -0 "$FIO_PID" 2>/dev/null || { cat fio.err; td_fail "fio ended while tapdisk was paused"; }
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 request(s) failed while tapdisk was paused for $(since "$t0") s"
log "paused for $(since "$t0") s (sent $s1 -> $s2), no request failed"
td_unpause 1 "$s2"
td_verify_done "pause of ${PAUSE} s under fio --verify"
dstate_watch_check
stat_report pause 1 "$(td_sent)" 0
td_destroy "$m"
