#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# ext4 on a tap (mem backend): mkfs.ext4, mount, copy a tree (parts of the guest's own root:
# busybox and its ~400 symlinks, e2fsprogs, modules, tests, plus generated files of random
# content and size, an empty and a sparse file), sync, umount, e2fsck -fn must find the file
# system clean; then, with the page cache dropped, mount again and compare checksums, sizes,
# modes, mtimes and symlink targets of the whole tree with the source. No "EXT4-fs error" in
# the kernel log.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd mkfs.ext4 e2fsck sha256sum
load_blktap
mark=$(kmsg_mark)

tap_create --backend mem:96M
dev=$TAP_DEV
log "tap $TAP_MINOR: $dev, mem:96M"

# The source tree, in tmpfs.
t0=$(now)
src=$PWD/src
mkdir -p "$src/gen/small" "$src/lib" "$src/usr" || fail "cannot create $src"
cp -a /bin /etc /tests "$src/" || fail "cannot copy /bin /etc /tests"
cp -a /lib/modules "$src/lib/" || fail "cannot copy /lib/modules"
cp -a /usr/sbin "$src/usr/" || fail "cannot copy /usr/sbin"
dd if=/dev/urandom of="$src/gen/big" bs=1048576 count=8 status=none || fail "cannot create gen/big"
i=0
while [ "$i" -lt 60 ]; do
	# sizes 0 .. ~96 KiB, many not a multiple of 512
	dd if=/dev/urandom of="$src/gen/small/f$i" bs=$((i * i * 27 + i)) count=1 iflag=fullblock status=none 2>/dev/null ||
		: > "$src/gen/small/f$i"
	i=$((i + 1))
done
: > "$src/gen/empty"
dd if=/dev/urandom of="$src/gen/sparse" bs=4096 count=3 seek=1000 status=none || fail "cannot create gen/sparse"
ln -s small/f7 "$src/gen/link" || fail "cannot create a symlink"
chmod 0600 "$src/gen/small/f3"
chmod 0755 "$src/gen/small/f4"

# manifest DIR: checksums of the regular files; type, mode, size and mtime of the regular
# files; symlink targets; directory modes (not their size: it differs between tmpfs and ext4).
# One process per kind, not per file: forks are slow under TCG.
manifest() {
	(
		cd "$1" || exit 1
		find . -type f | LC_ALL=C sort | xargs sha256sum
		find . -type f -exec stat -c '%n %F %a %s %Y' {} + | LC_ALL=C sort
		find . -type l -exec stat -c '%N' {} + | LC_ALL=C sort
		find . -type d -exec stat -c '%n dir %a' {} + | LC_ALL=C sort
	)
}
manifest "$src" > src.manifest || fail "cannot list the source tree"
log "source tree: $(wc -l < src.manifest) entries, $(du -sk "$src" | cut -f1) KiB ($(since "$t0") s)"
t0=$(now)

mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev" > mkfs.log 2>&1 ||
	{ cat mkfs.log; fail "mkfs.ext4 $dev failed"; }
log "mkfs.ext4: $(since "$t0") s"
t0=$(now)
mkdir mnt
mount -t ext4 "$dev" mnt || fail "mount -t ext4 $dev failed after mkfs"
atexit "umount $PWD/mnt 2>/dev/null || :"
cp -a "$src" mnt/tree || fail "copying the tree to the ext4 file system on $dev failed"
sync
umount mnt || fail "umount after the copy failed"
log "mount, copy, sync, umount: $(since "$t0") s"
t0=$(now)

rc=0
e2fsck -fn "$dev" > fsck.log 2>&1 || rc=$?
[ "$rc" = 0 ] || { cat fsck.log; fail "e2fsck -fn $dev exited $rc: the file system is not clean"; }
log "e2fsck -fn: clean ($(tail -n1 fsck.log)) ($(since "$t0") s)"
t0=$(now)

drop_caches
mount -t ext4 -o ro "$dev" mnt || fail "second mount of $dev failed"
manifest mnt/tree > dst.manifest || fail "cannot list the copied tree"
umount mnt || fail "umount after the comparison failed"
if ! cmp -s src.manifest dst.manifest; then
	diff src.manifest dst.manifest | head -n 20
	fail "the tree read back from ext4 on $dev differs from the source (diff above)"
fi
log "tree read back from $dev after remount: $(wc -l < dst.manifest) entries, identical ($(since "$t0") s)"

errs=$(kmsg_since "$mark" | grep -c 'EXT4-fs error\|I/O error' || true)
[ "$errs" = 0 ] || { kmsg_since "$mark" | grep 'EXT4-fs error\|I/O error' | head; fail "$errs ext4/I/O errors in the kernel log"; }
