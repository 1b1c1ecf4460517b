#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# ext4 on a tapdev of the real tapdisk 3.55.5 (raw image): mkfs.ext4, mount, copy a tree (the
# guest's /bin, /etc, /tests, /usr and generated files), umount, e2fsck -fn clean; mount again
# with the page cache dropped and compare every file's checksum with the source; then, after
# tap-ctl destroy, e2fsck the image file itself: clean. No "EXT4-fs error" in the kernel log.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd mkfs.ext4 e2fsck sha256sum
tapdisk_env
mark=$(kmsg_mark)
truncate -s 96M disk.img || fail "cannot create disk.img"
td_create -a "aio:$PWD/disk.img"

src=$PWD/src
mkdir -p "$src/gen" || fail "cannot create $src"
cp -a /bin /etc /tests /usr "$src/" || fail "cannot copy the source tree"
dd if=/dev/urandom of="$src/gen/big" bs=1M count=6 status=none || fail "cannot create gen/big"
i=0
while [ "$i" -lt 40 ]; do
	dd if=/dev/urandom of="$src/gen/f$i" bs=$((i * i * 31 + 7)) count=1 status=none || fail "cannot create gen/f$i"
	i=$((i + 1))
done
sums() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum); }
sums "$src" > src.sums || fail "cannot checksum the source tree"
log "source tree: $(wc -l < src.sums) files, $(du -sk "$src" | cut -f1) KiB"

mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$TD_DEV" > mkfs.log 2>&1 ||
	{ cat mkfs.log; td_fail "mkfs.ext4 $TD_DEV failed"; }
mkdir -p mnt
mount -t ext4 "$TD_DEV" mnt || td_fail "mount $TD_DEV failed"
atexit "umount $PWD/mnt 2>/dev/null"
cp -a "$src/." mnt/ || td_fail "copying the tree onto the tapdev failed"
umount mnt || td_fail "umount failed"
e2fsck -fn "$TD_DEV" > fsck1.log 2>&1 || { cat fsck1.log; td_fail "e2fsck -fn $TD_DEV: not clean"; }
drop_caches
mount -t ext4 -o ro "$TD_DEV" mnt || td_fail "second mount failed"
sums mnt > dst.sums || td_fail "cannot checksum the copy"
umount mnt || td_fail "second umount failed"
cmp -s src.sums dst.sums || { diff src.sums dst.sums | head -n 20; td_fail "the copy on the tapdev differs from the source"; }
td_destroy "$TD_MINOR"
e2fsck -fn "$PWD/disk.img" > fsck2.log 2>&1 || { cat fsck2.log; fail "e2fsck -fn of the image after destroy: not clean"; }
if kmsg_since "$mark" | grep -q 'EXT4-fs error'; then
	kmsg_since "$mark" | grep 'EXT4-fs' | head -n 10
	fail "ext4 reported errors"
fi
log "ext4: $(wc -l < dst.sums) files bit-exact, fsck clean on the tapdev and on the image"
