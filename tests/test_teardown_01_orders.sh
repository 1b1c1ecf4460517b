#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Every teardown order, with I/O in flight (blktap-test teardown, an in-process daemon):
# munmap with a read pending and the disk open (EIO within 5 s, ring ioctls EACCES, the disk
# survives the ring's release while open and goes after its last close); munmap and mmap again
# (the disk survived: CREATE_DEVICE EEXIST, I/O served again); close keeping the mapping (the
# tap stays busy, requests stall until munmap fails them); REMOVE_DEVICE with the disk open
# (EBUSY, I/O keeps flowing; succeeds after the last close); FREE_TAP in every busy state
# (EBUSY); the disk opened again and again while REMOVE_DEVICE is retried and while the daemon
# dies; a new daemon serving the disk the old one left; 40 reads against a full ring failed by
# munmap; poll before mmap and after munmap; map/serve/unmap cycles racing RESPOND,
# REMOVE_DEVICE and poll from other threads and reads of the disk; FREE_TAP at once after the
# last close of an orphaned disk, while the removal work deletes it (it waits, never EBUSY; 10
# rounds). No task stays in D state for more than 10 s.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
dstate_watch_start 10
rounds=$(scaled 1 20)
i=0
while [ "$i" -lt "$rounds" ]; do
	ktap_run "teardown-$i" blktap-test teardown
	i=$((i + 1))
done
dstate_watch_check
stat_report teardown "$rounds" 0 0
