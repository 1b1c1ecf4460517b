#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The worst stuck daemon: a single-threaded daemon reads its own disk with O_DIRECT before it
# ever polls, so it sleeps in D state waiting for itself, where kill -9 alone cannot end it.
# With the default timeout (180 s, far longer than this test), kill -9 must still end it within
# 5 s: the driver notices its ring owner was killed (timer tick) and fails its requests, the
# daemon dies, its ring goes with it, the tap frees and the module unloads. No hung-task
# report (the hung-task bound is 20 s in the debug kernel).
# timeout: 120
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktap-test
unload_blktap
load_blktap
BOUND=5
tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
blktap-test stuck --ring "/dev/blktap/blktap$m" --mode self-io --disk "$disk" > stuck.log 2>&1 3<&- 4<&- 5<&- &
pid=$!
atexit "kill -KILL $pid 2>/dev/null"
wait_for 20 tap_mapped "$m" || fail "the daemon did not map tap $m: $(cat stuck.log)"
wait_for 20 test -b "$disk" || fail "no disk for tap $m"
sleep 3
state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat")
[ "$state" = D ] || fail "the self-I/O daemon is in state $state, expected D (waiting for itself)"
log "daemon $pid in state D, waiting for its own read"
t0=$(now)
kill -KILL "$pid"
gone() { ! [ -d "/proc/$pid" ] || grep -q ') Z' "/proc/$pid/stat" 2>/dev/null; }
wait_for "$BOUND" gone || fail "the killed daemon still runs $(since "$t0") s after kill -9"
wait "$pid" 2>/dev/null
log "daemon gone $(since "$t0") s after kill -9"
wait_for 5 disk_gone "$m" || fail "disk still there after its daemon died"
free_tap "$m" || fail "cannot free tap $m"
unload_blktap
