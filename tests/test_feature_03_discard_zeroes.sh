#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Discard and write-zeroes (issue 20) through blktapd: a disk negotiated with all features shows
# the daemon's limits in its queue (discard_max_bytes, discard_granularity,
# write_zeroes_max_bytes); blkdiscard punches holes in blktapd's image file (its block count
# drops) and the range reads back as zeroes; BLKZEROOUT (write-zeroes) reads back as zeroes and
# leaves the data around it alone; ext4 mounted with -o discard gives space back on rm, and
# fstrim works; fio verify with flushes mixed in passes on that disk and the image equals the
# disk. The tap's sysfs discard=0 takes discard off the live disk (blkdiscard then fails, nothing
# reaches the daemon). The mem backend answers discard and write-zeroes with zeroes too.
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test blkdiscard fstrim mkfs.ext4 stat
load_blktap

img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 64M "$img" || fail "cannot create $img"
MiB=1048576

debug_counter() {
	sed -n "s/.*$2:\([0-9]*\).*/\1/p" "$(tap_sysfs "$1")/debug" | head -n1
}
queue() { cat "/sys/block/$TAP_DISK/queue/$1"; }
blocks() { stat -c %b "$img"; }
# nonzero DEV OFFSET_MIB LEN_MIB: the number of non-zero bytes in that range (O_DIRECT read).
nonzero() {
	dd if="$1" bs=$MiB skip="$2" count="$3" iflag=direct status=none | tr -d '\000' | wc -c
}

tap_create --backend "file:$img" --features all --discard-granularity 4096
log "tap $TAP_MINOR: $TAP_DEV, file:$img, all features"
[ "$(queue discard_granularity)" = 4096 ] || fail "discard_granularity is $(queue discard_granularity)"
max=$(((0x7fffff & ~7) * 512))
[ "$(queue discard_max_hw_bytes)" = "$max" ] || fail "discard_max_hw_bytes is $(queue discard_max_hw_bytes), expected $max"
[ "$(queue discard_max_bytes)" = "$max" ] || fail "discard_max_bytes is $(queue discard_max_bytes), expected $max"
[ "$(queue write_zeroes_max_bytes)" = "$max" ] || fail "write_zeroes_max_bytes is $(queue write_zeroes_max_bytes), expected $max"
[ "$(queue write_cache)" = "write back" ] || fail "write_cache is $(queue write_cache)"

dd if=/dev/urandom of="$TAP_DEV" bs=$MiB count=32 oflag=direct conv=fsync status=none || fail "cannot fill $TAP_DEV"
b0=$(blocks)
[ "$b0" -ge $((32 * 2048)) ] || fail "the image has $b0 blocks after 32 MiB were written"

# Discard 16 MiB: the image loses about 32768 512-byte blocks, and the range reads zeroes.
d0=$(debug_counter "$TAP_MINOR" discards)
blkdiscard -o 0 -l $((16 * MiB)) "$TAP_DEV" || fail "blkdiscard failed"
d1=$(debug_counter "$TAP_MINOR" discards)
b1=$(blocks)
[ "$d1" -gt "$d0" ] || fail "blkdiscard sent no discard (discards $d0 -> $d1)"
[ "$b1" -le $((b0 - 16 * 2048)) ] || fail "the image went from $b0 to $b1 blocks after a 16 MiB discard"
[ "$(nonzero "$TAP_DEV" 0 16)" = 0 ] || fail "the discarded range does not read back as zeroes"
[ "$(nonzero "$TAP_DEV" 16 16)" -gt 0 ] || fail "the data after the discarded range is gone"
log "blkdiscard 16 MiB: discards $d0 -> $d1, image blocks $b0 -> $b1, range reads zeroes"

# Write-zeroes 1 MiB in the middle of the remaining data.
z0=$(debug_counter "$TAP_MINOR" write-zeroes)
blktap-test zeroout "$TAP_DEV" $((20 * MiB)) "$MiB" || fail "BLKZEROOUT failed"
z1=$(debug_counter "$TAP_MINOR" write-zeroes)
[ "$z1" -gt "$z0" ] || fail "BLKZEROOUT sent no write-zeroes (write-zeroes $z0 -> $z1)"
[ "$(nonzero "$TAP_DEV" 20 1)" = 0 ] || fail "the zeroed range does not read back as zeroes"
[ "$(nonzero "$TAP_DEV" 19 1)" -gt 0 ] || fail "the MiB before the zeroed range lost its data"
[ "$(nonzero "$TAP_DEV" 21 1)" -gt 0 ] || fail "the MiB after the zeroed range lost its data"
drop_caches
[ "$(nonzero "$img" 20 1)" = 0 ] || fail "the image does not hold zeroes where they were written"
log "write-zeroes 1 MiB: write-zeroes $z0 -> $z1, reads zeroes, neighbours intact"

# fio verify with flushes on the all-features disk.
fio_verify_job all.fio "$TAP_DEV"
cat >> all.fio <<JOB
[randwrite-fsync]
bsrange=512-128k
rw=randwrite
iodepth=16
fsync=5
offset=32m
size=16m
[osync]
stonewall
bs=8k
rw=randwrite
iodepth=4
sync=1
offset=48m
size=2m
JOB
fio_run_check "verify on the all-features disk" all.fio

# ext4 with online discard, and fstrim.
mkfs.ext4 -q -F "$TAP_DEV" || fail "mkfs.ext4 failed"
mkdir -p mnt
mount -t ext4 -o discard "$TAP_DEV" mnt || fail "cannot mount ext4 -o discard on $TAP_DEV"
atexit "umount $PWD/mnt 2>/dev/null || true"
dd if=/dev/urandom of=mnt/big bs=$MiB count=24 conv=fsync status=none || fail "cannot write mnt/big"
sync
b2=$(blocks)
d0=$(debug_counter "$TAP_MINOR" discards)
rm mnt/big && sync || fail "rm failed"
# Online discard happens at the journal commit: wait for it.
wait_for 20 sh -c "[ \$(stat -c %b $img) -le $((b2 - 20 * 2048)) ]" ||
	fail "rm of 24 MiB on ext4 -o discard: image blocks $b2 -> $(blocks)"
d1=$(debug_counter "$TAP_MINOR" discards)
log "ext4 -o discard, rm 24 MiB: image blocks $b2 -> $(blocks), discards $d0 -> $d1"
out=$(fstrim -v mnt 2>&1) || fail "fstrim failed: $out"
log "fstrim: $out"
umount mnt || fail "umount failed"
drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and $img differ"

# The administrator switches discard off on the live disk.
echo 0 > "$(tap_sysfs "$TAP_MINOR")/discard" || fail "cannot write the tap's discard attribute"
[ "$(queue discard_max_bytes)" = 0 ] || fail "discard_max_bytes is $(queue discard_max_bytes) after discard=0"
d0=$(debug_counter "$TAP_MINOR" discards)
blkdiscard -o 0 -l "$MiB" "$TAP_DEV" 2>/dev/null && fail "blkdiscard succeeded on a disk with discard switched off"
[ "$(debug_counter "$TAP_MINOR" discards)" = "$d0" ] || fail "a discard reached the daemon after discard=0"
echo 1 > "$(tap_sysfs "$TAP_MINOR")/discard" || fail "cannot switch discard on again"
log "sysfs discard=0: queue discard_max_bytes 0, blkdiscard refused"
tap_destroy "$TAP_MINOR" || fail "destroy failed"

# The mem backend: discard and write-zeroes read back zeroes.
tap_create --backend mem:16M --features discard,write-zeroes
dd if=/dev/urandom of="$TAP_DEV" bs=$MiB count=16 oflag=direct status=none || fail "cannot fill the mem disk"
blkdiscard -o 0 -l $((4 * MiB)) "$TAP_DEV" || fail "blkdiscard on the mem disk failed"
blktap-test zeroout "$TAP_DEV" $((8 * MiB)) $((2 * MiB)) || fail "BLKZEROOUT on the mem disk failed"
[ "$(nonzero "$TAP_DEV" 0 4)" = 0 ] || fail "mem: discarded range not zero"
[ "$(nonzero "$TAP_DEV" 8 2)" = 0 ] || fail "mem: zeroed range not zero"
[ "$(nonzero "$TAP_DEV" 4 4)" -gt 0 ] || fail "mem: data between the ranges lost"
[ "$(nonzero "$TAP_DEV" 10 6)" -gt 0 ] || fail "mem: data after the ranges lost"
log "mem backend: discard and write-zeroes read back zeroes"
