#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Random patterns written with dd at different offsets and sizes, buffered (through the page
# cache, including a read-modify-write of partial blocks at an odd byte offset) and O_DIRECT
# (512-byte aligned, one full 44 KiB ring request, split 1 MiB requests, the last block of the
# disk), to a tap served from an image file. After sync and dropping the page cache, every
# range reads back bit-exact (buffered and O_DIRECT), the whole disk equals the expected image
# (untouched ranges still zero), and so does the backend image file itself: the data really
# went through the ring to the daemon's backend, and nothing landed at a wrong offset.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd cmp dd
load_blktap

size=$((16 * 1024 * 1024))
img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
truncate -s "$size" "$img" || fail "cannot create $img"
tap_create --backend "file:$img"
dev=$TAP_DEV
got=$(blockdev --getsize64 "$dev") || fail "blockdev --getsize64 $dev failed"
[ "$got" = "$size" ] || fail "$dev has $got bytes, expected $size (the image size)"

truncate -s "$size" expect || fail "cannot create the expected image"
n=0
ranges=
# put MODE OFFSET LENGTH BS: write LENGTH random bytes at byte OFFSET of the disk with dd
# (MODE buffered or direct, BS bytes per write), and the same into the expected image.
put() {
	n=$((n + 1))
	dd if=/dev/urandom of="pat$n" bs="$3" count=1 iflag=fullblock status=none ||
		fail "cannot make a $3-byte pattern"
	case $1 in
	direct) flag=oflag=seek_bytes,direct ;;
	*) flag=oflag=seek_bytes ;;
	esac
	dd if="pat$n" of="$dev" bs="$4" seek="$2" "$flag" conv=notrunc status=none ||
		fail "dd ($1, bs $4) of $3 bytes at offset $2 to $dev failed"
	dd if="pat$n" of=expect bs="$4" seek="$2" oflag=seek_bytes conv=notrunc status=none ||
		fail "cannot update the expected image"
	ranges="$ranges $n:$1:$2:$3"
	log "wrote $3 bytes at offset $2 ($1, bs $4)"
}

put buffered 0 1048576 65536                       # 1 MiB at the start, 64 KiB writes
put buffered $((5 * 1048576 + 7)) 12345 12345      # odd offset and length: partial blocks
put direct $((7 * 1048576)) 45056 45056            # one full ring request (11 pages)
put direct $((9 * 1048576 + 1536)) 16896 16896     # 33 sectors at a 512-byte aligned, not page aligned offset
put direct $((12 * 1048576)) 2097152 1048576       # 2 x 1 MiB, split into ring requests
put direct $((size - 4096)) 4096 4096              # the last block of the disk
put buffered $((3 * 1048576 + 4096 - 512)) 1024 1024 # straddles a page boundary
drop_caches

# Read every range back, buffered and (for the 512-byte aligned ones) with O_DIRECT.
# busybox dd quietly retries without O_DIRECT when a read fails with EINVAL, and it only
# page-aligns its buffer from 4 KiB up (smaller ones fail the disk's 512-byte DMA alignment): so
# O_DIRECT is used only with a 512-byte aligned offset and length of at least 4 KiB, where it
# really is O_DIRECT (the same holds for the writes above).
for r in $ranges; do
	i=${r%%:*} rest=${r#*:}
	mode=${rest%%:*} rest=${rest#*:}
	off=${rest%%:*} len=${rest#*:}
	dd if="$dev" of="back$i" bs="$len" count=1 skip="$off" iflag=skip_bytes,fullblock status=none ||
		fail "buffered read of $len bytes at offset $off failed"
	cmp "pat$i" "back$i" || fail "buffered read-back at offset $off ($len bytes, written $mode) differs"
	if [ $((off % 512)) = 0 ] && [ $((len % 512)) = 0 ] && [ "$len" -ge 4096 ]; then
		dd if="$dev" of="dback$i" bs="$len" count=1 skip="$off" iflag=skip_bytes,fullblock,direct status=none ||
			fail "O_DIRECT read of $len bytes at offset $off failed"
		cmp "pat$i" "dback$i" || fail "O_DIRECT read-back at offset $off ($len bytes, written $mode) differs"
	fi
	rm -f "back$i" "dback$i"
done
log "all $n ranges read back bit-exact"

drop_caches
cmp "$dev" expect || fail "$dev differs from the expected image (first difference above)"
log "the whole disk equals the expected image"
cmp "$img" expect || fail "the backend image $img differs from the expected image: data did not reach the backend as written"
log "the backend image file equals the expected image"
