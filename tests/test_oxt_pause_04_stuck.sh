#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A daemon that does not answer the ring message never hangs the writer (V-OXT pause bound,
# message_timeout 3 s here), and the end of the session ends a pause:
#  - OpenXT's legacy tapdisk2 stopped (SIGSTOP) under fio: pause fails with ETIMEDOUT within the
#    bound, the pause is cancelled (pause:none, message byte 0); after SIGCONT fio completes with
#    every block verified and nothing failed;
#  - stopped while idle (PAUSE reaches the ring, nobody answers): ETIMEDOUT, cancelled; remove of
#    the stopped tapdisk2: ETIMEDOUT, the removal is cancelled and the tap works after SIGCONT;
#  - a pause writer killed by a signal: the write ends (EINTR) and the pause is cancelled;
#  - abort while paused: the pause ends, the queued write fails with EIO;
#  - tapdisk2 killed (SIGKILL) while paused with a write queued: the write fails with EIO, the
#    pause ends with the session.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"
. "$(dirname "$0")/lib/oxt_pause.sh"

require_cmd fio
require_openxt

truncate -s 32M disk.img || fail "cannot create disk.img"
oxt_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID
attrs=$(tap_sysfs "$m")
write_attr "$attrs/message_timeout" 3 || td_fail "message_timeout 3: $WRITE_ERR"
atexit "kill -CONT $pid 2>/dev/null || :"

# --- stopped under fio --------------------------------------------------------------------------
oxt_fio_start stuck "$TD_DEV" 8
flowing() { [ "$(sent "$m")" -gt 50 ]; }
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"
kill -STOP "$pid"
expect_write_err "$m" pause 1 "Connection timed out" "stopped under fio"
within "$ELAPSED" 2.5 10 || td_fail "stopped under fio: pause took $ELAPSED s, message_timeout is 3 s"
expect_pause "$m" none "stopped under fio: after the timeout"
kill -CONT "$pid"
fio_done stuck

# --- stopped while idle: pause, then remove -------------------------------------------------------
kill -STOP "$pid"
expect_write_err "$m" pause 1 "Connection timed out" "stopped while idle"
expect_pause "$m" none "stopped while idle: after the timeout"
expect_write_err "$m" remove 1 "Connection timed out" "remove of a stopped tapdisk2"
expect_pause "$m" none "remove of a stopped tapdisk2: after the timeout"
[ "$(pause_field "$m" removing)" = false ] || td_fail "the timed-out removal is still pending"
kill -CONT "$pid"
pattern p1.bin 1
write_region "$TD_DEV" 2 p1.bin
region_equal "$TD_DEV" 2 1 p1.bin || td_fail "I/O does not work after the cancelled pause and removal"

# --- a pause writer killed --------------------------------------------------------------------
write_attr "$attrs/message_timeout" 30 || td_fail "message_timeout 30: $WRITE_ERR"
kill -STOP "$pid"
sh -c "echo 1 > '$attrs/pause'" 2> /dev/null &
writer=$!
waiting() { [ "$(pause_field "$m" waiting)" = pause ]; }
wait_for 10 waiting || td_fail "the pause writer is not waiting"
start=$(now)
kill -TERM "$writer"
wait "$writer" 2> /dev/null
e=$(since "$start")
within "$e" 0 5 || td_fail "the killed pause writer took $e s to go"
expect_pause "$m" none "after the pause writer was killed"
kill -CONT "$pid"
log "a killed pause writer leaves in $e s; the pause is cancelled"

# --- abort while paused -------------------------------------------------------------------------
expect_write "$m" pause "abort while paused"
dd if=p1.bin of="$TD_DEV" bs=1M seek=4 oflag=direct conv=notrunc status=none 2> dd.err &
dd_pid=$!
sleep 1
kill -0 "$dd_pid" 2>/dev/null || td_fail "a write completed while paused"
write_attr "$attrs/abort" 1 || td_fail "abort: $WRITE_ERR"
rc=0
wait "$dd_pid" || rc=$?
[ "$rc" != 0 ] || td_fail "abort while paused: the queued write succeeded"
expect_pause "$m" none "after abort"
log "abort while paused: the pause ended, the queued write failed"

# The aborted session stays poisoned until tapdisk2 unmaps: start over with a new tap.
kill -KILL "$pid"
dead() { ! proc_alive "$pid"; }
wait_for 10 dead || td_fail "tapdisk2 $pid did not die"
td_cleanup
oxt_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID
attrs=$(tap_sysfs "$m")

# --- tapdisk2 killed while paused ---------------------------------------------------------------
expect_write "$m" pause "killed while paused"
dd if=p1.bin of="$TD_DEV" bs=1M seek=4 oflag=direct conv=notrunc status=none 2> dd.err &
dd_pid=$!
sleep 1
kill -0 "$dd_pid" 2>/dev/null || td_fail "a write completed while paused"
kill -KILL "$pid"
rc=0
wait "$dd_pid" || rc=$?
[ "$rc" != 0 ] || td_fail "killed while paused: the queued write succeeded"
grep -q "Input/output error" dd.err || { cat dd.err; td_fail "killed while paused: the write did not fail with EIO"; }
wait_for 10 dead || td_fail "tapdisk2 $pid did not die"
expect_pause "$m" none "killed while paused: after the daemon died"
log "killed while paused: the queued write failed with EIO"
