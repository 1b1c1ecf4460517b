#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The real tapdisk 3.55.5 with a real block device as its image (a loop device): tapdisk opens
# it O_DIRECT and submits Linux AIO straight from the ring's data pages, so the loop driver's
# bios pin the pages the driver shares with tapdisk (get_user_pages on the ring mapping).
# fio verify (crc32c) at 4k QD32 and 44k QD32 through the tapdev; data written through the
# tapdev reads back bit-exact from the loop device (O_DIRECT) and from its backing file; then
# tap-ctl destroy while nothing is in flight, and the loop device detaches (no page stays pinned).
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio losetup cmp
tapdisk_env
truncate -s 64M backing.img || fail "cannot create backing.img"
loop=$(losetup -f) || fail "no free loop device"
losetup "$loop" "$PWD/backing.img" || fail "losetup $loop failed"
atexit "losetup -d $loop 2>/dev/null"
log "image: $loop on backing.img"

td_create -a "aio:$loop"
[ "$(blockdev --getsize64 "$TD_DEV")" = 67108864 ] || td_fail "the tapdev is not the loop device's 64 MiB"
rc=0
# Options before the first --name are global; each job's own follow its --name.
fio --filename="$TD_DEV" --ioengine=libaio --direct=1 --iodepth=32 --verify=crc32c \
	--do_verify=1 --verify_fatal=1 --output-format=terse --terse-version=3 \
	--name=verify-4k --bs=4k --rw=randwrite --size=8M \
	--name=verify-44k --stonewall --bs=44k --rw=write --offset=16m --size=16368k \
	> fio.out 2> fio.err || rc=$?
fio_check "verify through tapdisk on $loop" fio.out fio.err "$rc"
pattern data.bin 8
write_region "$TD_DEV" 40 data.bin
region_equal "$loop" 40 8 data.bin || td_fail "the loop device does not hold the tapdev's write"
td_destroy "$TD_MINOR"
losetup -d "$loop" || fail "losetup -d $loop failed after destroy"
region_equal backing.img 40 8 data.bin || fail "the backing file does not hold the tapdev's write"
