#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# FLUSH and TRIM of V-OXT's device info (issue 21) through "blktapd --abi oxt" on an image file:
# the disk is write back without FUA, with discard of the granularity blktapd sent; fsync
# reaches the daemon as flushes (the tap's debug counters); blkdiscard of a range in the middle
# of the data arrives as TRIM: the image loses that many blocks, the range reads zeroes and the
# data on both sides stays; ext4's fstrim frees the blocks of a removed file; fio --verify with
# fsync passes and the image equals the disk. A daemon that sends no flags (plain blktapd) gets
# a write-through disk without discard, and none of its requests is a flush or a discard; nor
# does tapdisk 3.55.5 (when the VM has it).
# timeout: 300
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio blktap-ctl blktapd blkdiscard fstrim mkfs.ext4 stat
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
nonzero() {
	dd if="$1" bs=$MiB skip="$2" count="$3" iflag=direct status=none | tr -d '\000' | wc -c
}

tap_create --backend "file:$img" --abi oxt --discard-granularity 4096
log "tap $TAP_MINOR: $TAP_DEV, file:$img, blktapd --abi oxt"
[ "$(queue write_cache)" = "write back" ] || fail "write_cache is $(queue write_cache)"
[ "$(queue fua)" = 0 ] || fail "fua is $(queue fua): V-OXT has no FUA"
[ "$(queue discard_granularity)" = 4096 ] || fail "discard_granularity is $(queue discard_granularity)"
[ "$(queue discard_max_bytes)" != 0 ] || fail "no discard on the --abi oxt disk"
[ "$(queue write_zeroes_max_bytes)" = 0 ] || fail "write_zeroes_max_bytes is $(queue write_zeroes_max_bytes)"
grep -q 'features:0xc ' "$(tap_sysfs "$TAP_MINOR")/debug" ||
	fail "the tap's features are not FLUSH|DISCARD: $(cat "$(tap_sysfs "$TAP_MINOR")/debug")"

# fsync reaches the daemon as flushes.
f0=$(debug_counter "$TAP_MINOR" flushes)
dd if=/dev/urandom of="$TAP_DEV" bs=$MiB count=32 conv=fsync status=none || fail "cannot fill $TAP_DEV"
f1=$(debug_counter "$TAP_MINOR" flushes)
[ "$f1" -gt "$f0" ] || fail "fsync sent no flush (flushes $f0 -> $f1)"
log "dd conv=fsync: flushes $f0 -> $f1"

# blkdiscard 8 MiB at 8 MiB: TRIM of that range punches the image there only.
drop_caches
b0=$(blocks)
d0=$(debug_counter "$TAP_MINOR" discards)
blkdiscard -o $((8 * MiB)) -l $((8 * MiB)) "$TAP_DEV" || fail "blkdiscard failed"
d1=$(debug_counter "$TAP_MINOR" discards)
b1=$(blocks)
[ "$d1" -gt "$d0" ] || fail "blkdiscard sent no TRIM (discards $d0 -> $d1)"
[ "$b1" -le $((b0 - 8 * 2048)) ] && [ "$b1" -ge $((b0 - 8 * 2048 - 16)) ] ||
	fail "an 8 MiB TRIM took the image from $b0 to $b1 blocks"
[ "$(nonzero "$img" 8 8)" = 0 ] || fail "the image does not read zeroes in the trimmed range"
[ "$(nonzero "$img" 7 1)" -gt 0 ] || fail "the MiB before the trimmed range lost its data"
[ "$(nonzero "$img" 16 1)" -gt 0 ] || fail "the MiB after the trimmed range lost its data"
[ "$(nonzero "$TAP_DEV" 8 8)" = 0 ] || fail "the disk does not read zeroes in the trimmed range"
log "blkdiscard 8 MiB at 8 MiB: discards $d0 -> $d1, image blocks $b0 -> $b1, only that range is zero"

# fio verify with fsync (flushes between the writes).
fio_verify_job oxt.fio "$TAP_DEV"
cat >> oxt.fio <<JOB
[randwrite-fsync]
bsrange=512-64k
rw=randwrite
iodepth=8
fsync=4
offset=32m
size=8m
JOB
f0=$(debug_counter "$TAP_MINOR" flushes)
fio_run_check "verify on the --abi oxt disk" oxt.fio
f1=$(debug_counter "$TAP_MINOR" flushes)
[ "$f1" -gt "$f0" ] || fail "fio's fsyncs sent no flush"
log "fio fsync=4: flushes $f0 -> $f1"

# ext4 and fstrim.
mkfs.ext4 -q -F -E nodiscard "$TAP_DEV" || fail "mkfs.ext4 failed"
mkdir -p mnt
mount -t ext4 "$TAP_DEV" mnt || fail "cannot mount ext4 on $TAP_DEV"
atexit "umount $PWD/mnt 2>/dev/null || true"
dd if=/dev/urandom of=mnt/big bs=$MiB count=16 conv=fsync status=none || fail "cannot write mnt/big"
rm mnt/big && sync || fail "rm failed"
b2=$(blocks)
d0=$(debug_counter "$TAP_MINOR" discards)
out=$(fstrim -v mnt 2>&1) || fail "fstrim failed: $out"
d1=$(debug_counter "$TAP_MINOR" discards)
b3=$(blocks)
[ "$d1" -gt "$d0" ] || fail "fstrim sent no TRIM"
[ "$b3" -le $((b2 - 12 * 2048)) ] || fail "fstrim after rm of 16 MiB: image blocks $b2 -> $b3"
log "fstrim: $out; discards $d0 -> $d1, image blocks $b2 -> $b3"
umount mnt || fail "umount failed"
drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and $img differ"
tap_destroy "$TAP_MINOR" || fail "destroy failed"

# A daemon that sends no flags: V-XS queue, no flush or discard ever reaches it.
tap_create --backend "file:$img"
[ "$(queue write_cache)" = "write through" ] || fail "plain blktapd: write_cache is $(queue write_cache)"
[ "$(queue discard_max_bytes)" = 0 ] || fail "plain blktapd: discard_max_bytes is $(queue discard_max_bytes)"
dd if=/dev/urandom of="$TAP_DEV" bs=$MiB count=4 conv=fsync status=none || fail "cannot write the plain disk"
blkdiscard -o 0 -l "$MiB" "$TAP_DEV" 2>/dev/null && fail "blkdiscard succeeded on a disk without discard"
[ "$(debug_counter "$TAP_MINOR" flushes)" = 0 ] || fail "a flush reached the plain daemon"
[ "$(debug_counter "$TAP_MINOR" discards)" = 0 ] || fail "a discard reached the plain daemon"
log "plain blktapd: write through, no discard, flushes 0, discards 0"
tap_destroy "$TAP_MINOR" || fail "destroy failed"

# tapdisk 3.55.5 (V-XS, never sends flags): the same.
if [ -x /usr/libexec/tapdisk ] && command -v tap-ctl >/dev/null 2>&1; then
	td_runtime_env
	td_create -a "aio:$img"
	TAP_DISK=$TD_DISK
	[ "$(queue write_cache)" = "write through" ] || td_fail "tapdisk: write_cache is $(queue write_cache)"
	[ "$(queue discard_max_bytes)" = 0 ] || td_fail "tapdisk: discard_max_bytes is $(queue discard_max_bytes)"
	dd if=/dev/urandom of="$TD_DEV" bs=$MiB count=4 conv=fsync status=none || td_fail "cannot write the tapdisk disk"
	blkdiscard -o 0 -l "$MiB" "$TD_DEV" 2>/dev/null && td_fail "blkdiscard succeeded on tapdisk's disk"
	[ "$(debug_counter "$TD_MINOR" flushes)" = 0 ] || td_fail "a flush reached tapdisk"
	[ "$(debug_counter "$TD_MINOR" discards)" = 0 ] || td_fail "a discard reached tapdisk"
	td_destroy "$TD_MINOR"
	log "tapdisk 3.55.5: write through, no discard, flushes 0, discards 0"
else
	log "tapdisk 3.55.5 not in the VM: its part is not run"
fi
