#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Features across a daemon restart (issues 20, 22). blktapd --features all,large --recover 30
# (large requests too: held requests go to the new ring in its layout) serves an
# image under fio --verify with fsync every 4 writes and O_SYNC writes (flushes and FUA writes in
# flight); it is killed with -9 and:
#  - a blktapd WITHOUT --features (a V-XS daemon) on the same minor is refused: its
#    CREATE_DEVICE is EINVAL (it must never be sent flushes), it exits with an error, and the
#    tap keeps holding the requests;
#  - a blktapd with the same --features takes the disk over (EEXIST), gets the held requests,
#    flushes included, and fio ends with every block verified; the image equals the disk.
# timeout: 600
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd
load_blktap
daemons=
cleanup() { for p in $daemons; do kill -KILL "$p" 2>/dev/null; done; return 0; }
atexit cleanup
img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 64M "$img" || fail "cannot create $img"
flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt "$1" ]; }
debug_field() { sed -n "s/.*$2:\([0-9]*\).*/\1/p" "$(tap_sysfs "$1")/debug" | head -n 1; }

tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
atexit "free_tap $m"
serve_tap "$m" "file:$img" --features all,large --recover 30
daemons="$daemons $DAEMON_PID"
cat > restart.fio <<JOB
[global]
filename=$disk
ioengine=libaio
direct=1
verify=crc32c
do_verify=1
verify_fatal=1
randrepeat=1
[fsync]
bs=4k
rw=randwrite
iodepth=16
fsync=4
size=16m
[osync]
bs=16k
rw=randwrite
iodepth=4
sync=1
offset=32m
size=8m
JOB
fio --output-format=terse --terse-version=3 restart.fio > fio.out 2> fio.err &
fio_pid=$!
wait_for 60 flowing 300 || fail "fio did not get going on $disk"
f0=$(debug_field "$m" flushes)
kill_daemon "$DAEMON_PID"
log "blktapd (all features) killed after $f0 flushes; the tap holds $(debug_field "$m" holding) request(s)"

# A V-XS daemon on the featureful disk: refused.
rc=0
blktapd --minor "$m" --backend "file:$img" --foreground --log "$PWD/blktapd.vxs.log" \
	</dev/null >/dev/null 2>&1 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- || rc=$?
[ "$rc" != 0 ] || fail "a blktapd without --features served the disk made with all features"
grep -q "CREATE_DEVICE.*Invalid argument" blktapd.vxs.log || { tail -n 3 blktapd.vxs.log; fail "no EINVAL from CREATE_DEVICE for the V-XS daemon"; }
kill -0 "$fio_pid" 2>/dev/null || { cat fio.err; fail "fio ended while the tap held its requests"; }
log "a blktapd without --features is refused (CREATE_DEVICE EINVAL); fio still waits"

rm -f "blktapd.$m.log"
serve_tap "$m" "file:$img" --features all,large
daemons="$daemons $DAEMON_PID"
grep -q "exists already" "blktapd.$m.log" || fail "the new blktapd did not find the disk"
rc=0
wait "$fio_pid" || rc=$?
fio_check "fio with flushes across a restart" fio.out fio.err "$rc"
f1=$(debug_field "$m" flushes)
[ "$f1" -gt "$f0" ] || fail "no flush reached the new daemon ($f0 -> $f1)"
log "the new daemon took the disk over: flushes $f0 -> $f1, reissued $(debug_field "$m" reissued)"
drop_caches
cmp "$disk" "$img" || fail "$disk and $img differ"
kill_daemon "$DAEMON_PID" TERM
wait_for 10 disk_gone "$m" || fail "disk still there after the daemon stopped"
