#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The real tapdisk 3.55.5 over raw (aio:) and VHD (vhd:) images, made and torn down with
# tap-ctl create/destroy.
# raw: data put into the backing file is read back bit-exact through the tapdev (O_DIRECT), and
# data written through the tapdev (O_DIRECT, and buffered then flushed) is found bit-exact in
# the backing file after drop_caches. The tapdev has the image's size.
# VHD (made by vhd-util): a fresh image reads as zeros; data written through the tapdev is read
# back through it, then, after destroy, from the VHD file itself with vhd-util read (tapdisk's
# own VHD code is the only writer of that format, so vhd-util is the independent reader) and
# through a new tapdisk; vhd-util check finds the image valid.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp blockdev
tapdisk_env

pattern a.bin 8
pattern b.bin 8
pattern c.bin 4
mib=$((1024 * 1024))

# --- raw ------------------------------------------------------------------------------------
truncate -s 64M raw.img || fail "cannot create raw.img"
dd if=a.bin of=raw.img bs=1M seek=4 conv=notrunc status=none || fail "cannot fill raw.img"
td_create -a "aio:$PWD/raw.img"
log "raw: tap $TD_MINOR ($TD_DEV, $TD_DISK) served by tapdisk $TD_PID"
size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
[ "$size" = $((64 * mib)) ] || td_fail "raw: $TD_DEV has $size bytes, the image 64 MiB"
region_equal "$TD_DEV" 4 8 a.bin || td_fail "raw: the tapdev does not read back what the image holds at 4 MiB"
write_region "$TD_DEV" 16 b.bin
# Buffered this time: the page cache of the tapdev, written back by sync.
dd if=c.bin of="$TD_DEV" bs=1M seek=40 conv=notrunc status=none || td_fail "raw: buffered write failed"
drop_caches
region_equal raw.img 16 8 b.bin || td_fail "raw: the O_DIRECT write at 16 MiB is not in the image"
region_equal raw.img 40 4 c.bin || td_fail "raw: the buffered write at 40 MiB is not in the image"
region_equal raw.img 4 8 a.bin || td_fail "raw: the data at 4 MiB changed"
region_equal "$TD_DEV" 16 8 b.bin || td_fail "raw: the tapdev does not read back its own write"
td_destroy "$TD_MINOR"
region_equal raw.img 16 8 b.bin || fail "raw: the image lost data at destroy"
log "raw: image -> tapdev and tapdev -> image bit-exact"

# --- VHD ------------------------------------------------------------------------------------
vhd-util create -n "$PWD/disk.vhd" -s 64 > vhd.log 2>&1 || { cat vhd.log; fail "vhd-util create failed"; }
td_create -a "vhd:$PWD/disk.vhd"
log "vhd: tap $TD_MINOR ($TD_DEV) served by tapdisk $TD_PID"
size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
[ "$size" = $((64 * mib)) ] || td_fail "vhd: $TD_DEV has $size bytes, the image 64 MiB"
dd if=/dev/zero of=zero.bin bs=1M count=8 status=none
region_equal "$TD_DEV" 16 8 zero.bin || td_fail "vhd: a new image does not read as zeros"
write_region "$TD_DEV" 16 b.bin
dd if=c.bin of=c2.bin bs=1M count=2 status=none
write_region "$TD_DEV" 62 c2.bin # the image's last block
region_equal "$TD_DEV" 62 2 c2.bin || td_fail "vhd: the last 2 MiB do not read back"
drop_caches
region_equal "$TD_DEV" 16 8 b.bin || td_fail "vhd: the tapdev does not read back its write at 16 MiB"
td_destroy "$TD_MINOR"
vhd-util check -n "$PWD/disk.vhd" > check.log 2>&1 || { cat check.log; fail "vhd: vhd-util check rejects the image"; }
vhd-util read -n "$PWD/disk.vhd" -R $((16 * mib)) -c $((8 * mib)) > vhd-read.bin 2> vhd-read.err ||
	{ cat vhd-read.err; fail "vhd-util read failed"; }
cmp -s vhd-read.bin b.bin || fail "vhd: vhd-util read finds other data at 16 MiB than was written"
td_create -a "vhd:$PWD/disk.vhd"
region_equal "$TD_DEV" 16 8 b.bin || td_fail "vhd: a new tapdisk does not read back the data at 16 MiB"
region_equal "$TD_DEV" 62 2 c2.bin || td_fail "vhd: a new tapdisk does not read back the last 2 MiB"
td_destroy "$TD_MINOR"
log "vhd: tapdev -> image (vhd-util read) and -> new tapdisk bit-exact; vhd-util check clean"
