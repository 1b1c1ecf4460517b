#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The ring message byte answered by "blktapd --abi oxt" (issue 21): sysfs pause and resume,
# three times, under fio --verify with fsync (file backend): each pause returns with the tap
# paused and blktapd's image closed, each resume returns 0, fio verifies everything with no I/O
# error and nothing failed in the tap's counters. Then a resume that reopens another image: the
# image is copied while paused, the tap's name set to "aio:<copy>", and after the resume the
# disk reads the copy and writes land in it, not in the first image. Last, remove: blktapd gets
# CLOSE, unmaps and exits, and the tap and its disk are gone.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd cmp
load_blktap

img=/tmp/$TEST_NAME.img
img2=/tmp/$TEST_NAME-2.img
rm -f "$img" "$img2"
atexit "rm -f $img $img2"
truncate -s 32M "$img" || fail "cannot create $img"
MiB=1048576

tap_create --backend "file:$img" --abi oxt
sysd=$(tap_sysfs "$TAP_MINOR")
pid=$(cat "$sysd/task")
log "tap $TAP_MINOR: $TAP_DEV, file:$img, blktapd --abi oxt (pid $pid)"
state() { sed -n 's/.*pause:\([a-z]*\).*/\1/p' "$sysd/debug" | head -n1; }
counter() { sed -n "s/.*$1:\([0-9]*\).*/\1/p" "$sysd/debug" | head -n1; }
image_open() { ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$1"; }

fio_verify_job pause.fio "$TAP_DEV"
cat >> pause.fio <<JOB
[randwrite-verify]
bsrange=4k-64k
rw=randwrite
iodepth=8
fsync=8
size=24m
JOB
fio --output-format=terse --terse-version=3 pause.fio > fio.out 2> fio.err &
fio_pid=$!
atexit "kill $fio_pid 2>/dev/null || true"
for round in 1 2 3; do
	sleep 1
	t0=$(now)
	echo 1 > "$sysd/pause" || fail "round $round: pause failed"
	[ "$(state)" = paused ] || fail "round $round: after pause the state is $(state)"
	image_open "$img" && fail "round $round: blktapd still has $img open while paused"
	sleep 0.5
	echo 1 > "$sysd/resume" || fail "round $round: resume failed"
	[ "$(state)" = none ] || fail "round $round: after resume the state is $(state)"
	image_open "$img" || fail "round $round: blktapd did not reopen $img"
	log "round $round: paused and resumed in $(since "$t0") s"
done
rc=0
wait "$fio_pid" || rc=$?
fio_check "verify across three pauses" fio.out fio.err "$rc"
[ "$(counter failed)" = 0 ] || fail "requests failed: $(cat "$sysd/debug")"

# A resume that reopens another image.
echo 1 > "$sysd/pause" || fail "pause before the move failed"
cp "$img" "$img2" || fail "cannot copy $img"
echo "aio:$img2" > "$sysd/name" || fail "cannot set the tap's name"
echo 1 > "$sysd/resume" || fail "resume onto $img2 failed"
image_open "$img2" || fail "blktapd did not open $img2"
image_open "$img" && fail "blktapd still has $img open"
dd if=/dev/urandom of=new.bin bs=$MiB count=1 status=none
dd if=new.bin of="$TAP_DEV" bs=$MiB seek=30 oflag=direct conv=fsync status=none || fail "cannot write after the move"
drop_caches
dd if="$img2" of=got2.bin bs=$MiB skip=30 count=1 status=none
dd if="$img" of=got1.bin bs=$MiB skip=30 count=1 status=none
cmp -s new.bin got2.bin || fail "the write after the move is not in $img2"
cmp -s new.bin got1.bin && fail "the write after the move reached $img"
cmp -s "$TAP_DEV" "$img2" || fail "$TAP_DEV and $img2 differ"
log "resume onto aio:$img2: blktapd reopened it, writes land there"

# remove: CLOSE, blktapd exits, the tap goes.
echo 1 > "$sysd/remove" || fail "remove failed"
wait_for 5 sh -c "! grep -q '^State:.*[RSD]' /proc/$pid/status 2>/dev/null" ||
	fail "blktapd (pid $pid) still runs after remove"
[ -d "$sysd" ] && fail "the tap's sysfs directory remains after remove"
disk_gone "$TAP_MINOR" || fail "the disk remains after remove"
log "remove: blktapd exited, tap $TAP_MINOR and its disk are gone"
