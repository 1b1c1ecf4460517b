#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The worst stuck daemon: a single-threaded daemon reads its own disk with O_DIRECT before it
# ever polls, so it sleeps in D state waiting for itself, where kill -9 alone cannot end it.
# With the default timeout (none, as in V-XS), kill -9 must still end it within 5 s: the
# driver notices its ring owner was killed (timer tick) and fails its requests, the daemon
# dies, its ring goes with it, the tap frees and the module unloads. No hung-task report (the
# hung-task bound is 20 s in the debug kernel). test_hang_06 has the multi-threaded and AIO
# variants.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stuck.sh"

require_cmd blktap-ctl blktap-test
unload_blktap
load_blktap
stuck_env
stuck_tap self-io
sleep 3
state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$pid/stat")
[ "$state" = D ] || fail "the self-I/O daemon is in state $state, expected D (waiting for itself)"
log "daemon $pid in state D, waiting for its own read"
kill_gone "$pid" 5 "self-I/O daemon"
wait_for 5 disk_gone "$m" || fail "disk still there after its daemon died"
free_tap "$m" || fail "cannot free tap $m"
unload_blktap
