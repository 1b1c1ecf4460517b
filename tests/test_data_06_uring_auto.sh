#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# blktapd --io auto (the default; given explicitly against BLKTAPD_IO) picks io_uring only where it pays (issue 22): on an image on
# tmpfs, whose file system cannot start I/O without blocking (preadv2 RWF_NOWAIT: EOPNOTSUPP),
# io_uring would hand every request to a worker thread, so the log says the synchronous path
# serves it; on an image on ext4 (on a loop device), which can, io_uring serves it, and fio
# write-then-verify (4 KiB and 1 MiB, flushes mixed in) passes through it, the image equals the
# disk, and the exit report counts one io_uring_enter per batch. A tap with a recovery window is
# served synchronously even on ext4 (a killed daemon's io_uring writes in flight could land after
# their reissued copies), and --io uring refuses such a tap.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd losetup mkfs.ext4
load_blktap

# tmpfs: auto -> sync, with the reason.
img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 8M "$img" || fail "cannot create $img"
dlog=$PWD/blktapd.tmpfs.log
tap_create --backend "file:$img" --io auto --log "$dlog"
grep -q 'I/O path: synchronous preadv/pwritev: the image.s file system cannot start I/O without blocking' "$dlog" ||
	{ cat "$dlog"; fail "auto on tmpfs: the log does not say sync serves it and why"; }
log "tmpfs: $(grep -m1 'I/O path' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"
tap_destroy "$TAP_MINOR" || fail "destroy failed"

# ext4 on a loop device: auto -> io_uring.
back=/tmp/$TEST_NAME.ext4
rm -f "$back"
atexit "rm -f $back"
truncate -s 80M "$back" || fail "cannot create $back"
loopdev=$(losetup -f) || fail "no free loop device"
losetup "$loopdev" "$back" || fail "losetup $loopdev $back failed"
atexit "losetup -d $loopdev"
mkfs.ext4 -q -F "$loopdev" || fail "mkfs.ext4 on $loopdev failed"
mkdir -p mnt
mount -t ext4 "$loopdev" mnt || fail "cannot mount $loopdev"
atexit "umount $PWD/mnt"
img=$PWD/mnt/disk.img
dd if=/dev/zero of="$img" bs=1M count=32 status=none || fail "cannot write $img"
dlog=$PWD/blktapd.ext4.log
tap_create --backend "file:$img" --features flush --io auto --log "$dlog"
grep 'I/O path' "$dlog" | grep -q 'io_uring (' ||
	{ cat "$dlog"; fail "auto on ext4: io_uring does not serve the image"; }
! grep -q 'worker thread' "$dlog" || { cat "$dlog"; fail "auto on ext4: the image is said to block"; }
log "ext4: $(grep -m1 'I/O path' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"
fio_verify_job ext4.fio "$TAP_DEV"
cat >> ext4.fio <<JOB
[randwrite-4k-qd16-fsync8]
bs=4k
rw=randwrite
iodepth=16
fsync=8
offset=0
size=1m
[randwrite-1m-qd4]
stonewall
bs=1M
rw=randwrite
iodepth=4
offset=8m
size=8m
JOB
fio_run_check "auto on ext4" ext4.fio
drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and $img differ"
tap_destroy "$TAP_MINOR" || fail "destroy failed"
rep=$(grep 'io_uring_enter for' "$dlog") || { tail -n 5 "$dlog"; fail "no io_uring report at exit"; }
set -- $(echo "$rep" | sed 's/.*io_uring: \([0-9]*\) io_uring_enter for \([0-9]*\) batches.*/\1 \2/')
[ "$#" = 2 ] || fail "cannot parse '$rep'"
[ "$1" = "$2" ] && [ "$2" -gt 0 ] || fail "$1 io_uring_enter for $2 batches, expected one each and some"
log "ext4: $(echo "$rep" | sed 's/^blktapd\[[0-9]*\]: //')"

# A recovery window rules io_uring out: on a tap with one (blktap-ctl recover; blktapd
# --recover does the same), auto serves the same image synchronously and says why, and
# --io uring refuses to start.
m=$(blktap-ctl alloc) || fail "blktap-ctl alloc failed"
atexit "blktap-ctl free -m $m 2>/dev/null || :"
blktap-ctl recover -m "$m" -w 5 || fail "blktap-ctl recover -m $m -w 5 failed"
dlog=$PWD/blktapd.recover.log
blktapd --minor "$m" --backend "file:$img" --io auto --foreground --log "$dlog" 2>> "$dlog" &
pid=$!
atexit "kill $pid 2>/dev/null || :"
wait_for 30 test -e "/sys/block/$(disk_name "$m")" || { cat "$dlog"; fail "no disk for tap $m"; }
grep 'I/O path' "$dlog" | grep -q 'synchronous: the tap has a recovery window (5 s)' ||
	{ cat "$dlog"; fail "auto on ext4 with a recovery window: the log does not say the synchronous path serves it"; }
log "ext4, recovery window: $(grep -m1 'I/O path' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"
kill -TERM "$pid" || fail "cannot signal blktapd"
wait "$pid" || fail "blktapd exited with $? after SIGTERM"
rc=0
blktapd --minor "$m" --backend "file:$img" --io uring --foreground --log "$PWD/blktapd.refuse.log" 2>> blktapd.refuse.log || rc=$?
[ "$rc" != 0 ] || fail "blktapd --io uring served tap $m, which has a recovery window"
grep -q 'cannot serve a tap with a recovery window (5 s)' blktapd.refuse.log ||
	{ cat blktapd.refuse.log; fail "blktapd --io uring on a tap with a recovery window: no reason given"; }
[ ! -e "/sys/block/$(disk_name "$m")" ] || fail "a disk appeared for tap $m"
log "--io uring on a tap with a recovery window: refused (rc $rc)"
blktap-ctl free -m "$m" || fail "blktap-ctl free -m $m failed"
