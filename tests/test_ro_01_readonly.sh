#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A read-only tap (blktap-ctl create -R, file backend with known random content): the disk is
# read-only (/sys/block/tdX/ro = 1, blockdev --getro = 1); writes fail with EPERM ("Operation
# not permitted", what the block layer returns for a read-only disk), buffered and O_DIRECT,
# and still after "blockdev --setrw" (the disk itself stays read-only); no write reaches the
# daemon; reads return the image content; the image is unchanged afterwards.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd blockdev cmp sha256sum
load_blktap

img=/tmp/$TEST_NAME.img
rm -f "$img"
atexit "rm -f $img"
dd if=/dev/urandom of="$img" bs=1048576 count=8 iflag=fullblock status=none || fail "cannot create $img"
sum=$(sha256sum < "$img")
tap_create -R --backend "file:$img" --log "$PWD/blktapd.log"
dev=$TAP_DEV
log "tap $TAP_MINOR: $dev, read-only, file:$img (8 MiB of random data)"

ro=$(cat "/sys/block/$TAP_DISK/ro") || fail "cannot read /sys/block/$TAP_DISK/ro"
[ "$ro" = 1 ] || fail "/sys/block/$TAP_DISK/ro is '$ro', expected 1 for a tap created with -R"
ro=$(blockdev --getro "$dev") || fail "blockdev --getro $dev failed"
[ "$ro" = 1 ] || fail "blockdev --getro $dev says '$ro', expected 1"

# try_write WHAT DD-ARGS...: a 4 KiB write with dd must fail with EPERM.
try_write() {
	_what=$1
	shift
	if out=$(dd if=/dev/zero of="$dev" bs=4096 count=1 conv=notrunc status=none "$@" 2>&1); then
		fail "$_what: writing to the read-only $dev succeeded"
	fi
	case "$out" in
	*"Operation not permitted"*) log "$_what: refused (EPERM)" ;;
	*) fail "$_what: write to the read-only $dev failed with '$out', expected EPERM (Operation not permitted)" ;;
	esac
}
try_write "buffered write at 0"
try_write "O_DIRECT write at 0" oflag=direct
try_write "O_DIRECT write at 1 MiB" oflag=direct seek=256
# BLKROSET 0 clears only the block device's own flag; the disk stays read-only.
blockdev --setrw "$dev" 2>/dev/null || log "blockdev --setrw refused (fine)"
try_write "buffered write after blockdev --setrw"
try_write "O_DIRECT write after blockdev --setrw" oflag=direct
ro=$(cat "/sys/block/$TAP_DISK/ro")
[ "$ro" = 1 ] || fail "/sys/block/$TAP_DISK/ro is '$ro' after blockdev --setrw, expected 1"

drop_caches
cmp "$dev" "$img" || fail "buffered read of the read-only $dev differs from its image"
dd if="$dev" of=direct.out bs=45056 iflag=direct status=none || fail "O_DIRECT read of $dev failed"
cmp direct.out "$img" || fail "O_DIRECT read of the read-only $dev differs from its image"
log "reads return the image content (buffered and O_DIRECT)"

# Stop the daemon: the image must be unchanged, and the daemon must have seen no write.
tap_destroy "$TAP_MINOR" || fail "blktap-ctl destroy -m $TAP_MINOR failed"
[ "$(sha256sum < "$img")" = "$sum" ] || fail "the image of the read-only tap changed"
stats=$(grep -o '[0-9]* reads, [0-9]* writes' blktapd.log | tail -n1)
log "daemon: ${stats:-no statistics line in its log}"
case "$stats" in
*" 0 writes") ;;
"") ;; # the daemon did not log its counters: nothing more to check
*) fail "the daemon of the read-only tap received writes ($stats): the kernel let them through" ;;
esac
