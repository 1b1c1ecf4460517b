#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Large requests (issue 22, FEAT_LARGE): blktapd --features large maps the ring with 256 data
# pages per request (8193 pages) and negotiates max_segments 256. The disk then takes 1 MiB
# requests (max_hw_sectors_kb 1024, max_segments 256), a 1 MiB O_DIRECT read is one ring
# request (the tap's "sent" counter), and fio verify passes at 4 KiB, 44 KiB, 128 KiB and
# 1 MiB, on both of blktapd's I/O paths (sync and io_uring), with the image equal to the disk.
# With --max-segments 64 and every other feature too: 256 KiB requests, a 1 MiB read is 4 of
# them, and fio verify with flushes and FUA writes mixed in passes. A disk without
# --features stays V-XS: 44 KiB requests, 24 of them for 1 MiB.
# timeout: 400
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd cmp
load_blktap

img=/tmp/$TEST_NAME.img
atexit "rm -f $img"

sent() { sed -n 's/.*sent:\([0-9]*\).*/\1/p' "$(tap_sysfs "$TAP_MINOR")/debug" | head -n1; }
queue() { cat "/sys/block/$TAP_DISK/queue/$1"; }
# requests_for_1m: ring requests sent for one 1 MiB O_DIRECT read at offset 0.
requests_for_1m() {
	_s0=$(sent)
	dd if="$TAP_DEV" of=/dev/null bs=1M count=1 iflag=direct status=none || fail "1 MiB direct read failed"
	echo $(($(sent) - _s0))
}
for io in sync uring; do
	rm -f "$img"
	truncate -s 64M "$img" || fail "cannot create $img"
	tap_create --backend "file:$img" --features large --io "$io"
	log "tap $TAP_MINOR ($io): $(queue max_hw_sectors_kb) KiB, $(queue max_segments) segments"
	[ "$(queue max_hw_sectors_kb)" = 1024 ] || fail "max_hw_sectors_kb is $(queue max_hw_sectors_kb), not 1024"
	[ "$(queue max_segments)" = 256 ] || fail "max_segments is $(queue max_segments), not 256"
	grep -q 'features:0x80 ' "$(tap_sysfs "$TAP_MINOR")/debug" || fail "debug does not show features 0x80"
	echo 1024 > "/sys/block/$TAP_DISK/queue/max_sectors_kb" || fail "cannot set max_sectors_kb to 1024"
	n=$(requests_for_1m)
	log "one 1 MiB O_DIRECT read: $n ring request(s)"
	[ "$n" -le 2 ] || fail "a 1 MiB direct read took $n ring requests (at most 2 expected)"
	fio_verify_sizes "large-$io" 8
	disk_same_as_image "$img" "large, $io"
	tap_destroy "$TAP_MINOR"
done

# Every feature, with 64 pages per request.
rm -f "$img"
truncate -s 64M "$img" || fail "cannot create $img"
tap_create --backend "file:$img" --features all,large --max-segments 64
[ "$(queue max_hw_sectors_kb)" = 256 ] || fail "max_hw_sectors_kb is $(queue max_hw_sectors_kb) with 64 segments, not 256"
grep -q 'features:0xec ' "$(tap_sysfs "$TAP_MINOR")/debug" || fail "debug does not show features 0xec: $(cat "$(tap_sysfs "$TAP_MINOR")/debug")"
n=$(requests_for_1m)
log "all features, 64 pages: one 1 MiB O_DIRECT read: $n ring requests"
[ "$n" = 4 ] || fail "a 1 MiB direct read took $n ring requests with 256 KiB requests (4 expected)"
fio_verify_sizes "all" 8 "fsync=3
sync=1"
disk_same_as_image "$img" "all features"
tap_destroy "$TAP_MINOR"

# No features: V-XS's 11 pages.
rm -f "$img"
truncate -s 64M "$img" || fail "cannot create $img"
tap_create --backend "file:$img"
[ "$(queue max_hw_sectors_kb)" = 44 ] || fail "max_hw_sectors_kb is $(queue max_hw_sectors_kb) for V-XS, not 44"
n=$(requests_for_1m)
log "V-XS: one 1 MiB O_DIRECT read: $n ring requests"
[ "$n" -ge 24 ] || fail "a 1 MiB direct read took $n V-XS ring requests (at least 24 expected)"
