#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# blktapd where io_uring is forbidden by policy (issue 22): with sysctl
# kernel.io_uring_disabled=2, io_uring_setup fails with EPERM for every process. blktapd with
# --io auto (its default; given explicitly, so that BLKTAPD_IO does not override it) then serves
# the file backend with the synchronous preadv/pwritev path and says so in its log, naming the
# reason; fio write-then-verify (4 KiB and 1 MiB, flushes
# mixed in) passes and the image equals the disk. --io uring refuses to start instead
# (blktap-ctl create fails, the log says why). The sysctl is restored at exit.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd
load_blktap

ctl=/proc/sys/kernel/io_uring_disabled
[ -w "$ctl" ] || skip "no $ctl (a kernel before 6.6 or without io_uring)"
old=$(cat "$ctl")
atexit "echo $old > $ctl"
echo 2 > "$ctl" || fail "cannot set kernel.io_uring_disabled=2"

img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 32M "$img" || fail "cannot create $img"

# --io uring: no daemon, a clear reason.
dlog=$PWD/blktapd.uring.log
rm -f "$dlog"
if blktap-ctl create --backend "file:$img" --io uring --log "$dlog" --timeout 20 > create.out 2>&1; then
	fail "blktapd --io uring started although io_uring is disabled: $(cat create.out)"
fi
grep -q -- '--io uring: io_uring is unavailable (Operation not permitted' "$dlog" ||
	{ cat "$dlog" create.out; fail "--io uring failed without saying io_uring is refused"; }
log "--io uring refused: $(grep -m1 -- '--io uring' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"

# Default (auto): the synchronous path, with the reason.
dlog=$PWD/blktapd.auto.log
rm -f "$dlog"
tap_create --backend "file:$img" --features flush --io auto --log "$dlog"
grep -q 'I/O path: synchronous preadv/pwritev: io_uring is unavailable (Operation not permitted' "$dlog" ||
	{ cat "$dlog"; fail "auto: the log does not say io_uring is refused and sync serves"; }
log "auto: $(grep -m1 'I/O path' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"
fio_verify_job off.fio "$TAP_DEV"
cat >> off.fio <<JOB
[randwrite-4k-qd16-fsync8]
bs=4k
rw=randwrite
iodepth=16
fsync=8
offset=0
size=2m
[write-1m-qd4]
stonewall
bs=1M
rw=write
iodepth=4
offset=8m
size=8m
JOB
fio_run_check "auto with io_uring disabled" off.fio
drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and $img differ"
tap_destroy "$TAP_MINOR" || fail "destroy failed"
! grep -q 'io_uring_enter for' "$dlog" || fail "auto: an io_uring report although io_uring was disabled"
log "auto with io_uring disabled: verified, image equals disk"
