#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Flush and FUA (issue 20) through blktapd's file backend: a disk negotiated with flush,fua shows
# write_cache "write back" and fua 1; every fsync on it (raw device and ext4 on it) reaches the
# daemon as a flush (the tap's sysfs debug counters and blktapd's own count); O_DIRECT|O_SYNC
# writes arrive as FUA writes; fio verify with fsync and O_SYNC jobs mixed in passes, and the
# image equals the disk. A disk negotiated with flush only has no FUA: the block layer follows
# each FUA write with a flush instead. A disk without --features stays write through and its
# daemon sees no flush at all (V-XS).
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd mkfs.ext4
load_blktap

img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 64M "$img" || fail "cannot create $img"

# debug_counter MINOR NAME: the value of "NAME:<n>" in the tap's debug attribute.
debug_counter() {
	sed -n "s/.*$2:\([0-9]*\).*/\1/p" "$(tap_sysfs "$1")/debug" | head -n1
}
queue() { cat "/sys/block/$TAP_DISK/queue/$1"; }
# osync_writes N: N O_DIRECT|O_SYNC 4 KiB writes on $TAP_DEV (REQ_FUA writes; busybox dd has
# no oflag=sync).
osync_writes() {
	fio --name=osync --filename="$TAP_DEV" --ioengine=psync --direct=1 --sync=1 --bs=4k \
		--rw=write --size=$(($1 * 4))k --output=/dev/null || fail "fio O_SYNC writes failed"
}

tap_create --backend "file:$img" --features flush,fua
log "tap $TAP_MINOR: $TAP_DEV, file:$img, features flush,fua"
[ "$(queue write_cache)" = "write back" ] || fail "write_cache is '$(queue write_cache)', not 'write back'"
[ "$(queue fua)" = 1 ] || fail "fua is '$(queue fua)', not 1"
[ "$(queue discard_max_bytes)" = 0 ] || fail "discard_max_bytes is $(queue discard_max_bytes) without discard"
grep -q 'features:0x24 ' "$(tap_sysfs "$TAP_MINOR")/debug" || fail "debug does not show features 0x24"

f0=$(debug_counter "$TAP_MINOR" flushes)
dd if=/dev/urandom of="$TAP_DEV" bs=4096 count=16 conv=fsync status=none || fail "dd conv=fsync failed"
f1=$(debug_counter "$TAP_MINOR" flushes)
[ "$f1" -gt "$f0" ] || fail "an fsync on $TAP_DEV sent no flush (flushes $f0 -> $f1)"
log "dd conv=fsync: flushes $f0 -> $f1"

osync_writes 8
fua=$(sed -n 's/.*fua writes:\([0-9]*\).*/\1/p' "$(tap_sysfs "$TAP_MINOR")/debug")
[ "${fua:-0}" -ge 8 ] || fail "O_DIRECT|O_SYNC writes sent $fua FUA writes, expected at least 8"
log "O_DIRECT|O_SYNC writes: $fua FUA writes"

# fio verify with flushes (fsync every 4 writes) and FUA writes (sync=1) mixed in.
fio_verify_job flush.fio "$TAP_DEV"
cat >> flush.fio <<JOB
[fsync-every-4]
bs=4k
rw=randwrite
iodepth=8
fsync=4
offset=0
size=4m
[osync-fua]
stonewall
bs=16k
rw=write
iodepth=4
sync=1
offset=8m
size=4m
[mixed-sizes]
stonewall
bsrange=512-64k
rw=randwrite
iodepth=16
fsync=7
offset=16m
size=8m
JOB
f0=$(debug_counter "$TAP_MINOR" flushes)
fio_run_check "verify with flush and fua" flush.fio
f1=$(debug_counter "$TAP_MINOR" flushes)
[ "$f1" -gt $((f0 + 200)) ] || fail "fio's fsyncs sent only $((f1 - f0)) flushes"
log "fio: $((f1 - f0)) flushes"

# ext4: an fsync of a file is a flush (journal commit with preflush/FUA).
mkfs.ext4 -q -F -E nodiscard "$TAP_DEV" || fail "mkfs.ext4 failed"
mkdir -p mnt
mount -t ext4 "$TAP_DEV" mnt || fail "cannot mount ext4 on $TAP_DEV"
atexit "umount $PWD/mnt 2>/dev/null || true"
f0=$(debug_counter "$TAP_MINOR" flushes)
dd if=/dev/urandom of=mnt/file bs=65536 count=4 conv=fsync status=none || fail "fsync on ext4 failed"
f1=$(debug_counter "$TAP_MINOR" flushes)
[ "$f1" -gt "$f0" ] || fail "an fsync on ext4 sent no flush"
log "ext4 fsync: flushes $f0 -> $f1"
umount mnt || fail "umount failed"
drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and $img differ"
tap_destroy "$TAP_MINOR" || fail "destroy failed"


# Flush without FUA: write back, no fua; FUA writes become write + flush in the block layer.
tap_create --backend "file:$img" --features flush
[ "$(queue write_cache)" = "write back" ] || fail "flush only: write_cache is '$(queue write_cache)'"
[ "$(queue fua)" = 0 ] || fail "flush only: fua is '$(queue fua)'"
f0=$(debug_counter "$TAP_MINOR" flushes)
osync_writes 8
f1=$(debug_counter "$TAP_MINOR" flushes)
fua=$(sed -n 's/.*fua writes:\([0-9]*\).*/\1/p' "$(tap_sysfs "$TAP_MINOR")/debug")
[ "$fua" = 0 ] || fail "flush only: $fua FUA writes reached the daemon"
[ "$f1" -ge $((f0 + 8)) ] || fail "flush only: 8 O_SYNC writes sent $((f1 - f0)) flushes, expected 8"
log "flush only: 8 O_SYNC writes -> $((f1 - f0)) flushes, no FUA"
tap_destroy "$TAP_MINOR" || fail "destroy failed"

# No --features: V-XS, write through, nothing new reaches the daemon.
tap_create --backend "file:$img"
[ "$(queue write_cache)" = "write through" ] || fail "V-XS disk: write_cache is '$(queue write_cache)'"
[ "$(queue discard_max_bytes)" = 0 ] || fail "V-XS disk: discard_max_bytes is $(queue discard_max_bytes)"
[ "$(queue write_zeroes_max_bytes)" = 0 ] || fail "V-XS disk: write_zeroes_max_bytes is $(queue write_zeroes_max_bytes)"
dd if=/dev/urandom of="$TAP_DEV" bs=4096 count=8 conv=fsync status=none || fail "dd failed"
osync_writes 8
grep -q 'features:0x0 allowed:0x0 flushes:0 fua writes:0 discards:0 write-zeroes:0' "$(tap_sysfs "$TAP_MINOR")/debug" ||
	{ grep features "$(tap_sysfs "$TAP_MINOR")/debug"; fail "a V-XS disk sent new operations"; }
log "V-XS disk: write through, no flush, FUA, discard or write-zeroes sent"
