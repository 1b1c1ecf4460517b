#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# OpenXT's legacy userspace (tapdisk2 and tap-ctl of OpenXT/blktap a0f94d7: ioctl 202, the
# 272-byte params, the "blktap-control" misc name) over raw (aio:) and VHD (vhd:) images, made
# and torn down with its tap-ctl create/destroy.
# raw: data put into the image is read back bit-exact through the tapdev (O_DIRECT); data
# written through the tapdev is found bit-exact in the image after drop_caches and after
# destroy. The tapdev has the image's size.
# VHD (made by OpenXT's vhd-util): a fresh image reads as zeros; data written through the
# tapdev (also the image's last block) is read back through it, then, after destroy, through a
# new tap served by a new tapdisk2; vhd-util check finds the image valid.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd cmp blockdev
require_openxt

pattern a.bin 4
pattern b.bin 4
mib=$((1024 * 1024))

# --- raw ------------------------------------------------------------------------------------
truncate -s 32M raw.img || fail "cannot create raw.img"
dd if=a.bin of=raw.img bs=1M seek=4 conv=notrunc status=none || fail "cannot fill raw.img"
oxt_create -a "aio:$PWD/raw.img"
log "raw: tap $TD_MINOR ($TD_DEV, $TD_DISK) served by tapdisk2 $TD_PID"
size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
[ "$size" = $((32 * mib)) ] || td_fail "raw: $TD_DEV has $size bytes, the image 32 MiB"
region_equal "$TD_DEV" 4 4 a.bin || td_fail "raw: the tapdev does not read back what the image holds at 4 MiB"
write_region "$TD_DEV" 16 b.bin
drop_caches
region_equal raw.img 16 4 b.bin || td_fail "raw: the O_DIRECT write at 16 MiB is not in the image"
region_equal raw.img 4 4 a.bin || td_fail "raw: the data at 4 MiB changed"
region_equal "$TD_DEV" 16 4 b.bin || td_fail "raw: the tapdev does not read back its own write"
oxt_destroy "$TD_MINOR"
region_equal raw.img 16 4 b.bin || fail "raw: the image lost data at destroy"
log "raw: image -> tapdev and tapdev -> image bit-exact"

# --- VHD ------------------------------------------------------------------------------------
"$OXT_VHDUTIL" create -n "$PWD/disk.vhd" -s 32 > vhd.log 2>&1 || { cat vhd.log; fail "vhd-util create failed"; }
oxt_create -a "vhd:$PWD/disk.vhd"
log "vhd: tap $TD_MINOR ($TD_DEV) served by tapdisk2 $TD_PID"
size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
[ "$size" = $((32 * mib)) ] || td_fail "vhd: $TD_DEV has $size bytes, the image 32 MiB"
dd if=/dev/zero of=zero.bin bs=1M count=4 status=none
region_equal "$TD_DEV" 8 4 zero.bin || td_fail "vhd: a new image does not read as zeros"
write_region "$TD_DEV" 8 b.bin
dd if=a.bin of=a2.bin bs=1M count=2 status=none
write_region "$TD_DEV" 30 a2.bin # the image's last block
drop_caches
region_equal "$TD_DEV" 30 2 a2.bin || td_fail "vhd: the last 2 MiB do not read back"
region_equal "$TD_DEV" 8 4 b.bin || td_fail "vhd: the tapdev does not read back its write at 8 MiB"
old_pid=$TD_PID
oxt_destroy "$TD_MINOR"
"$OXT_VHDUTIL" check -n "$PWD/disk.vhd" > check.log 2>&1 || { cat check.log; fail "vhd: vhd-util check rejects the image"; }
oxt_create -a "vhd:$PWD/disk.vhd"
[ "$TD_PID" != "$old_pid" ] || td_fail "vhd: the new tap is served by the old tapdisk2 $old_pid"
region_equal "$TD_DEV" 8 4 b.bin || td_fail "vhd: a new tapdisk2 does not read back the data at 8 MiB"
region_equal "$TD_DEV" 30 2 a2.bin || td_fail "vhd: a new tapdisk2 does not read back the last 2 MiB"
region_equal "$TD_DEV" 16 4 zero.bin || td_fail "vhd: an unwritten region does not read as zeros"
oxt_destroy "$TD_MINOR"
log "vhd: tapdev -> image -> new tapdisk2 bit-exact; vhd-util check clean"
