#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kill -9 of OpenXT's legacy tapdisk2 while fio runs on its tapdev at QD32 (randrw, 4k to 44k
# blocks, O_DIRECT). fio must exit with EIO within 10 s of the kill, no task may stay in D state
# longer than 10 s and the disk goes once fio has closed it. OpenXT's tap-ctl list then shows
# the minor with no tapdisk2 ("minor=M"), its tap-ctl free releases it, and a new tap-ctl create
# gets the same minor back, served by a new tapdisk2 with verified I/O.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd fio blktap-test cmp
require_openxt
dstate_watch_start 10
BOUND=10
truncate -s 32M disk.img || fail "cannot create disk.img"
pattern data.bin 4

flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt 300 ]; }
pid_gone() { ! proc_alive "$pid"; }
oxt_create -a "aio:$PWD/disk.img"
m=$TD_MINOR pid=$TD_PID
fio --name=kill --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=32 \
	--rw=randrw --bsrange=4k-44k --size=32M --time_based --runtime=300 > fio.out 2>&1 &
fio_pid=$!
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"
kill_daemon_under_fio "$pid" "$fio_pid" "$BOUND" "kill -9"
log "fio exited (rc=$FIO_RC) ${FIO_ELAPSED}s after kill -9 of tapdisk2 $pid"
awk -v e="$FIO_ELAPSED" -v b="$BOUND" 'BEGIN { exit !(e <= b) }' ||
	td_fail "fio took ${FIO_ELAPSED}s to fail, more than ${BOUND}s"
[ "$FIO_RC" != 0 ] || td_fail "fio succeeded although tapdisk2 was killed"
grep -q 'Input/output error' fio.out || { cat fio.out; td_fail "fio did not report EIO"; }
wait_for "$BOUND" disk_gone "$m" || td_fail "disk still there ${BOUND}s after fio closed it"
wait_for 5 pid_gone || td_fail "tapdisk2 $pid survived kill -9"

td_run list "$OXT_TAPCTL" list -m "$m" || { cat list.err; td_fail "tap-ctl list failed"; }
[ "$(cat list.out)" = "minor=$m" ] || { cat list.out; td_fail "tap-ctl list does not show minor $m unserved"; }
td_run free "$OXT_TAPCTL" free -m "$m" || { cat free.err; td_fail "tap-ctl free -m $m failed after tapdisk2 died"; }
wait_for 5 test ! -d "$(tap_sysfs "$m")" || td_fail "tap $m still in sysfs after free"
TD_MINORS=
oxt_create -a "aio:$PWD/disk.img"
[ "$TD_MINOR" = "$m" ] || td_fail "the freed minor $m was not reused (got $TD_MINOR)"
write_region "$TD_DEV" 8 data.bin
drop_caches
region_equal "$TD_DEV" 8 4 data.bin || td_fail "the re-served tap does not read back its write"
region_equal disk.img 8 4 data.bin || td_fail "the re-served tap's write is not in the image"
oxt_destroy "$TD_MINOR"
dstate_watch_check
log "minor $m freed and served again by tapdisk2 $TD_PID, data bit-exact"
