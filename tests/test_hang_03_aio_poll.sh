#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A daemon that waits for requests only with Linux AIO io_submit(IOCB_CMD_POLL) on the ring fd
# (blktap-test stuck --mode aio-poll): the kernel re-polls the fd from a worker thread with no
# address space, and that poll must send the queued requests, not swallow the wake-up. Direct
# I/O on the disk (writes, then reads compared) completes within 30 s. The daemon keeps
# req_event the Xen ring way, so it gets a poll level (issue 19, rule R5): with the V-XS edge,
# a wake-up racing with io_submit's own poll makes AIO poll again and drop the first answer,
# and the edge is lost (this test timed out once in three runs before issue 19).
# timeout: 120
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktap-test cmp
load_blktap
tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
blktap-test stuck --ring "/dev/blktap/blktap$m" --mode aio-poll > stuck.log 2>&1 3<&- 4<&- 5<&- &
pid=$!
atexit "kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null; free_tap $m"
wait_for 20 tap_mapped "$m" || fail "the daemon did not map tap $m: $(cat stuck.log)"
wait_for 20 test -b "$disk" || fail "no disk for tap $m"
dd if=/dev/urandom of=data.bin bs=64k count=32 status=none
timeout 30 dd if=data.bin of="$disk" bs=44k oflag=direct conv=notrunc status=none ||
	fail "O_DIRECT writes did not complete (rc=$?) with an AIO-polling daemon: $(cat stuck.log)"
timeout 30 dd if="$disk" of=back.bin bs=64k count=32 iflag=direct status=none ||
	fail "O_DIRECT reads did not complete (rc=$?) with an AIO-polling daemon"
cmp -s data.bin back.bin || fail "the data read back differs"
log "2 MiB written and read back through an AIO-polling daemon"
