#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Deep rings (issue 22, FEAT_DEEP): blktapd --features deep --ring-slots 128 maps a ring of 128
# entries (4 ring pages, then the data pages) and negotiates ring_slots 128. The disk then has
# 128 tags (mq/0/nr_tags), and with the daemon stopped (SIGSTOP) a QD128 fio job gets all 128
# requests into the driver at once (the disk's inflight); once the daemon runs again it is
# sent the 128 at once (the tap's ring peak) and every read succeeds. fio verify at QD128
# passes at 4 KiB, 44 KiB, 128 KiB and 1 MiB with deep rings alone (on both of blktapd's I/O
# paths) and with every other feature (large requests and the low-latency mode included),
# with the image equal to the disk; a 1024-entry ring (with 32 data pages per request, the
# most that fits 128 MiB) passes too. A restart (--recover 30) with 128 writes held: all 128
# are held, a daemon with a 64-entry ring is refused, one with 128 gets all of them again and
# fio verifies them. A disk without --features stays at V-XS's 32: 64 requests leave 32
# waiting outside the driver.
# timeout: 600
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd cmp
load_blktap

img=/tmp/$TEST_NAME.img
atexit "rm -f $img"

debug() { cat "$(tap_sysfs "$TAP_MINOR")/debug"; }
field() { debug | sed -n "s/.*$1:\([0-9]*\).*/\1/p" | head -n1; }
nr_tags() { cat "/sys/block/$TAP_DISK/mq/0/nr_tags"; }
inflight() { awk '{ print $1 + $2 }' "/sys/block/$TAP_DISK/inflight"; }
inflight_is() { [ "$(inflight)" = "$1" ]; }
daemon_pid() { debug | sed -n 's/.* task:\([0-9]*\).*/\1/p'; }
fresh_image() {
	rm -f "$img"
	truncate -s 64M "$img" || fail "cannot create $img"
}
# stopped_daemon_depth DEPTH: stops the daemon, starts random 4 KiB reads at DEPTH, and waits
# until the driver holds as many requests as the disk has tags; then lets the daemon go on and
# checks that every read succeeds. Sets HELD to the requests the driver held at once.
stopped_daemon_depth() {
	pid=$(daemon_pid)
	[ -n "$pid" ] && [ "$pid" != 0 ] || fail "no daemon pid in the tap's debug attribute"
	# One request per read: adjacent random reads must not merge.
	echo 2 > "/sys/block/$TAP_DISK/queue/nomerges" || fail "cannot switch merges off"
	kill -STOP "$pid" || fail "cannot stop the daemon"
	fio --name=qd$1 --filename="$TAP_DEV" --ioengine=libaio --direct=1 --rw=randread --bs=4k \
		--size=4m --iodepth="$1" --iodepth_batch_submit="$1" --number_ios=$(($1 * 4)) \
		--output-format=terse --terse-version=3 > fio.out 2> fio.err &
	fio_pid=$!
	tags=$(nr_tags)
	wait_for 30 inflight_is "$tags" ||
		{ kill -CONT "$pid"; fail "the driver holds $(inflight) requests with the daemon stopped, not $tags"; }
	# Nothing beyond the tags gets in.
	sleep 1
	HELD=$(inflight)
	kill -CONT "$pid" || fail "cannot resume the daemon"
	rc=0
	wait "$fio_pid" || rc=$?
	[ "$rc" = 0 ] || fail "reads at depth $1 failed (rc $rc): $(cat fio.err)"
	awk -F';' '$1 == 3 && $5 != 0 { bad = 1 } END { exit bad }' fio.out ||
		fail "reads at depth $1 failed: $(cat fio.out)"
	echo 0 > "/sys/block/$TAP_DISK/queue/nomerges" || fail "cannot switch merges on"
}

# 128 entries, 11 data pages per request (V-XS's requests), both I/O paths.
for io in sync uring; do
	fresh_image
	tap_create --backend "file:$img" --features deep --ring-slots 128 --io "$io"
	log "tap $TAP_MINOR ($io): $(nr_tags) tags, $(debug | grep entries:)"
	[ "$(nr_tags)" = 128 ] || fail "the disk has $(nr_tags) tags, not 128"
	[ "$(field entries)" = 128 ] || fail "the ring has $(field entries) entries, not 128: $(debug)"
	debug | grep -q 'features:0x200 ' || fail "debug does not show features 0x200: $(debug)"
	[ "$(cat "/sys/block/$TAP_DISK/queue/max_hw_sectors_kb")" = 44 ] || fail "max_hw_sectors_kb is not 44 without large requests"
	stopped_daemon_depth 128
	peak=$(field 'ring peak')
	log "deep ($io): the driver held $HELD requests with the daemon stopped; ring peak $peak"
	[ "$HELD" = 128 ] || fail "the driver held $HELD requests, not 128"
	[ "$peak" = 128 ] || fail "the daemon was sent at most $peak requests at once, not 128"
	fio_verify_sizes "deep-$io" 128
	disk_same_as_image "$img" "deep, $io"
	tap_destroy "$TAP_MINOR"
done

# Every feature together (the low-latency mode too): 128 entries of 256 data pages (128 MiB),
# 1 MiB requests.
fresh_image
tap_create --backend "file:$img" --features all,large,deep,low-latency --ring-slots 128
debug | grep -q 'features:0x3ec ' || fail "debug does not show features 0x3ec: $(debug)"
[ "$(nr_tags)" = 128 ] || fail "the disk has $(nr_tags) tags, not 128"
[ "$(cat "/sys/block/$TAP_DISK/queue/max_hw_sectors_kb")" = 1024 ] || fail "max_hw_sectors_kb is not 1024 with large requests"
fio_verify_sizes "all" 128 "fsync=7
sync=1"
disk_same_as_image "$img" "all features"
tap_destroy "$TAP_MINOR"

# The deepest ring: 1024 entries, so 32 data pages per request.
fresh_image
tap_create --backend "file:$img" --features deep,large --ring-slots 1024
[ "$(nr_tags)" = 1024 ] || fail "the disk has $(nr_tags) tags, not 1024"
[ "$(cat "/sys/block/$TAP_DISK/queue/max_hw_sectors_kb")" = 128 ] || fail "max_hw_sectors_kb is not 128 with 32 data pages per request"
fio_verify_sizes "deepest" 256
disk_same_as_image "$img" "1024 entries"
tap_destroy "$TAP_MINOR"

# A restart with 128 requests held (recovery): blktapd --recover 30 is stopped under 128
# writes, then killed; the tap holds all 128 (room for every tag, not V-XS's 32); a daemon
# mapping a 64-entry ring is refused; one with the same 128 takes the disk over, is sent all
# 128 again, and fio then verifies every block.
fresh_image
tap_alloc
m=$TAP_MINOR
atexit "free_tap $m"
TAP_DISK=$(disk_name "$m") TAP_DEV=/dev/$(disk_name "$m")
serve_tap "$m" "file:$img" --features deep --ring-slots 128 --recover 30
atexit "kill -KILL $DAEMON_PID 2>/dev/null; true"
echo 2 > "/sys/block/$TAP_DISK/queue/nomerges" || fail "cannot switch merges off"
fio_verify_job held.fio "$TAP_DEV"
cat >> held.fio <<JOB
[held]
bs=4k
rw=randwrite
size=4m
iodepth=128
iodepth_batch_submit=128
JOB
kill -STOP "$DAEMON_PID" || fail "cannot stop the daemon"
fio --output-format=terse --terse-version=3 held.fio > fio.out 2> fio.err &
fio_pid=$!
wait_for 30 inflight_is 128 ||
	{ kill -KILL "$DAEMON_PID"; kill "$fio_pid"; fail "the driver holds $(inflight) writes with the daemon stopped, not 128"; }
kill_daemon "$DAEMON_PID"
held_now() { [ "$(field holding)" = 128 ]; }
wait_for 10 held_now || fail "the tap holds $(field holding) requests after the daemon died, not 128: $(debug)"
rc=0
blktapd --minor "$m" --backend "file:$img" --features deep --ring-slots 64 --foreground \
	--log "$PWD/blktapd.64.log" </dev/null >/dev/null 2>&1 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- || rc=$?
[ "$rc" != 0 ] || fail "a blktapd with a 64-entry ring served the 128-tag disk"
kill -0 "$fio_pid" 2>/dev/null || { cat fio.err; fail "fio ended while the tap held its requests"; }
rm -f "blktapd.$m.log"
serve_tap "$m" "file:$img" --features deep --ring-slots 128
atexit "kill -KILL $DAEMON_PID 2>/dev/null; true"
grep -q "exists already" "blktapd.$m.log" || fail "the new blktapd did not find the disk"
rc=0
wait "$fio_pid" || rc=$?
fio_check "128 writes held across a restart" fio.out fio.err "$rc"
log "restart: $(field reissued) request(s) sent again to the new daemon"
[ "$(field reissued)" -ge 128 ] || fail "only $(field reissued) requests were sent again, not 128"
echo 0 > "/sys/block/$TAP_DISK/queue/nomerges"
kill_daemon "$DAEMON_PID" TERM

# V-XS: 32 tags; 64 requests leave 32 outside the driver.
fresh_image
tap_create --backend "file:$img"
[ "$(nr_tags)" = 32 ] || fail "a V-XS disk has $(nr_tags) tags, not 32"
stopped_daemon_depth 64
log "V-XS: the driver held $HELD requests with the daemon stopped"
[ "$HELD" = 32 ] || fail "a V-XS disk held $HELD requests, not 32"
[ "$(field 'ring peak')" -le 32 ] || fail "a V-XS daemon was sent more than 32 requests at once"
