#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Timed-out requests must not use up the ring (issue 19, point 2; rule R1). A daemon that polls
# (so requests are sent) but never answers (blktap-test stuck --mode never-respond), the tap's
# timeout at 2 s, and 40 O_DIRECT 4k reads, more than the ring's 32 slots, started 0.5 s apart
# (so that they time out one after the other, not all at once): every read must end with EIO
# within 10 s (the timeout, the 1 s timer tick and slack for a loaded TCG host) of its start.
# Before issue 19 every timed-out request kept its ring id until the daemon answered it, and
# once all 32 were gone new reads were handed back as busy for ever, in D state. Then the
# daemon is killed, the tap frees and the module unloads. `make stress` runs it 5 times with
# 100 reads.
# timeout: 900
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test
unload_blktap
load_blktap
stuck_env
TIMEOUT=2
BOUND=$((TIMEOUT + 8))
NREADS=$(scaled 40 100)

# now_cs: /proc/uptime in hundredths of a second (no fork: many reads are watched at once).
now_cs() {
	read -r _up _ < /proc/uptime
	echo $((${_up%.*} * 100 + 1${_up#*.} - 100))
}

# reap_reads N: look at reads 1..N; a finished one must have failed with EIO (recorded in
# done_I), one still running after $BOUND s fails the test. Sets running.
reap_reads() {
	running=0
	_now=$(now_cs)
	_j=0
	while [ "$_j" -lt "$1" ]; do
		_j=$((_j + 1))
		eval "_done=\${done_$_j:-} _p=\$rp_$_j _t=\$rt_$_j"
		[ -z "$_done" ] || continue
		_el=$((_now - _t))
		if ! proc_gone "$_p"; then
			[ "$_el" -le $((BOUND * 100)) ] || {
				cat "$(tap_sysfs "$m")/debug"
				fail "read $_j of $NREADS still waits $((_el / 100)).$((_el % 100 / 10)) s after it began (timeout ${TIMEOUT} s): the ring's ids are used up"
			}
			running=$((running + 1))
			continue
		fi
		_rc=0
		wait "$_p" || _rc=$?
		[ "$_rc" != 0 ] || fail "read $_j succeeded from a daemon that never answers"
		grep -q 'Input/output error' "read.$_j.out" || { cat "read.$_j.out"; fail "read $_j failed without EIO"; }
		eval "done_$_j=$_el"
		[ "$_el" -le "$max_cs" ] || max_cs=$_el
	done
	return 0
}

iters=$(scaled 1 5)
it=0 ios=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	stuck_tap never-respond
	write_attr "$(tap_sysfs "$m")/timeout" "$TIMEOUT" || fail "cannot set the timeout: $WRITE_ERR"
	i=0 max_cs=0
	while [ "$i" -lt "$NREADS" ]; do
		i=$((i + 1))
		unset "done_$i"
		dd if="$disk" of=/dev/null bs=4k skip="$i" count=1 iflag=direct > "read.$i.out" 2>&1 &
		eval "rp_$i=$! rt_$i=$(now_cs)"
		sleep 0.5
		reap_reads "$i"
	done
	while reap_reads "$NREADS" && [ "$running" -gt 0 ]; do
		sleep 0.2
	done
	log "round $it: all $NREADS reads failed with EIO, the slowest after $((max_cs / 100)).$((max_cs % 100 / 10)) s"
	grep -q 'timeouts:[1-9]' "$(tap_sysfs "$m")/debug" || { cat "$(tap_sysfs "$m")/debug"; fail "the tap counted no timeout"; }
	ios=$((ios + NREADS))
	stuck_finish
done
unload_blktap
stat_report exhaust "$iters" "$ios" "$ios"
