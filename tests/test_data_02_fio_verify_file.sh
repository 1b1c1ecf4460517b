#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# fio write-then-verify (crc32c, libaio, O_DIRECT) through a tap served by blktapd from an image
# file on tmpfs: every block size (512, 4k, 44k, 64k, 1M) with both rw modes (write, randwrite)
# and both iodepths (1, 32): the half of the bs x rw x iodepth cross product that test_data_01
# (mem backend) does not run, plus a 3584-byte job whose buffers straddle pages (see
# fio_verify_matrix in lib/common.sh).
# Then two checks that the verification really went through the backend:
#  - the disk and the image file have the same content (cmp, after dropping the page cache);
#  - a block corrupted in the image file is reported by a fio verify-only pass over the disk.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd
load_blktap

img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s 32M "$img" || fail "cannot create $img"
tap_create --backend "file:$img"
log "tap $TAP_MINOR: $TAP_DEV, file:$img (32 MiB)"
t0=$(now)
fio_verify_matrix "$TAP_DEV" 32 1
log "verify matrix: $(since "$t0") s"
t0=$(now)

drop_caches
cmp "$TAP_DEV" "$img" || fail "$TAP_DEV and the backend image $img differ after the fio runs"
log "disk and image are identical ($(since "$t0") s)"
t0=$(now)

# Negative control: write 4 MiB at 4 KiB (verify data), corrupt one block in the image behind
# the daemon's back, then a verify-only pass must find exactly that block.
fio_verify_job corrupt.fio "$TAP_DEV"
cat >> corrupt.fio <<JOB
[corrupt]
bs=4k
rw=randwrite
iodepth=8
offset=8m
size=4m
JOB
fio_run_check "corrupt-control write" corrupt.fio
bad=$((8 * 1024 * 1024 + 123 * 4096 + 100)) # inside block 123 of the job
printf 'CORRUPT' | dd of="$img" bs=1 seek="$bad" conv=notrunc status=none || fail "cannot corrupt $img"
drop_caches
rc=0
fio --output-format=terse --terse-version=3 --verify_only corrupt.fio > fio.out 2> fio.err || rc=$?
[ "$rc" != 0 ] || fail "fio --verify_only passed although the image was corrupted at byte $bad"
grep -q "verify failed at file $TAP_DEV offset $((8 * 1024 * 1024 + 123 * 4096))," fio.err ||
	{ head -n 20 fio.err; fail "fio did not report the corrupted block at offset $((8 * 1024 * 1024 + 123 * 4096))"; }
log "corrupted block found by the verify-only pass ($(since "$t0") s): $(grep -m1 'verify failed' fio.err)"
