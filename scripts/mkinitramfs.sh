#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the initramfs for the blktap-rs QEMU selftests.
#
#   scripts/mkinitramfs.sh OUT.cpio.gz [--module PATH.ko]... [--bin PATH]... [--tests DIR]
#                          [--file SRC:DEST]... [--init PATH] [--no-fio]
#                          [--tapdisk DIR | --tapdisk-skip REASON]
#                          [--openxt DIR | --openxt-skip REASON]
#                          [--tapdisk-oxt DIR | --tapdisk-oxt-skip REASON]
#
# The archive is two concatenated cpio archives (the kernel unpacks them in order):
#   1. a cached "base" with busybox-static, e2fsprogs and fio plus every shared library they
#      need. fio on bookworm drags in ~85 MB of libraries (ceph, gluster, ICU...), so packing it
#      on every run would cost seconds; the cache is keyed on the source files' size/mtime and
#      this script. The base is NOT compressed: under TCG with KASAN the guest needs ~4.4 s to
#      gunzip it but ~2.3 s to copy it raw. --no-fio leaves fio out (a ~1 MB base, boots faster).
#   2. a small gzip'ed per-run overlay: /init, the modules (/lib/modules/NAME.ko), extra
#      binaries (/usr/bin), the tests tree (/tests) and extra files.
#
# --tapdisk DIR puts the real tapdisk of scripts/build-tapdisk.sh (static binaries in DIR) where
# tap-ctl expects it: /usr/libexec/tapdisk (compiled into tap-ctl), /usr/sbin/tap-ctl and
# /usr/sbin/vhd-util. --tapdisk-skip REASON writes REASON to /etc/blktap-rs/tapdisk-skip
# instead, which the tapdisk tests report as their SKIP reason.
#
# --openxt DIR puts OpenXT's legacy userspace of scripts/build-openxt.sh (tapdisk2, tap-ctl,
# vhd-util) in /opt/openxt/bin, where its tap-ctl does not shadow tapdisk 3.55.5's (tap-ctl finds
# tapdisk2 by PATH or $TAPDISK2). --tapdisk-oxt DIR puts the tapdisk 3.55.5 built with OpenXT's
# control name (scripts/build-tapdisk.sh --openxt-name) in /usr/libexec/blktap-oxt, the directory
# compiled into its tap-ctl, which goes beside it. Their -skip forms write the reason to
# /etc/blktap-rs/openxt-skip and /etc/blktap-rs/tapdisk-oxt-skip.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() {
	sed -n '4,10p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

out=
modules=()
bins=()
files=()
tests_dir=
init_script="$TOP/scripts/vm-init.sh"
with_fio=1
tapdisk_dir=
tapdisk_skip=
openxt_dir=
openxt_skip=
tapdisk_oxt_dir=
tapdisk_oxt_skip=
while [ $# -gt 0 ]; do
	case "$1" in
	--module) modules+=("${2:?--module needs a path}"); shift 2 ;;
	--bin) bins+=("${2:?--bin needs a path}"); shift 2 ;;
	--tests) tests_dir=${2:?--tests needs a directory}; shift 2 ;;
	--file) files+=("${2:?--file needs SRC:DEST}"); shift 2 ;;
	--init) init_script=${2:?--init needs a path}; shift 2 ;;
	--no-fio) with_fio=0; shift ;;
	--tapdisk) tapdisk_dir=${2:?--tapdisk needs a directory}; shift 2 ;;
	--tapdisk-skip) tapdisk_skip=${2:?--tapdisk-skip needs a reason}; shift 2 ;;
	--openxt) openxt_dir=${2:?--openxt needs a directory}; shift 2 ;;
	--openxt-skip) openxt_skip=${2:?--openxt-skip needs a reason}; shift 2 ;;
	--tapdisk-oxt) tapdisk_oxt_dir=${2:?--tapdisk-oxt needs a directory}; shift 2 ;;
	--tapdisk-oxt-skip) tapdisk_oxt_skip=${2:?--tapdisk-oxt-skip needs a reason}; shift 2 ;;
	-h|--help) usage ;;
	-*) die "unknown option $1" ;;
	*) [ -z "$out" ] || die "more than one output file given"; out=$1; shift ;;
	esac
done
[ -n "$out" ] || usage
for f in "${modules[@]}" "${bins[@]}" "$init_script"; do
	[ -f "$f" ] || die "no such file: $f"
done
[ -z "$tests_dir" ] || [ -d "$tests_dir" ] || die "no such directory: $tests_dir"

# Shared libraries (and the dynamic loader) of an ELF file, as reported by ldd; nothing for a
# static binary or a script.
shlibs() {
	ldd "$1" 2>/dev/null | awk '/=> \//{print $3; next} /^[ \t]*\//{print $1}' || true
}

# Copy executable $1 to $root$2 with its libraries. The libraries are flattened into
# /lib/x86_64-linux-gnu, which is in the built-in search path of Debian's ld.so, so the guest
# needs no ld.so.cache; the loader goes where PT_INTERP points (/lib64/ld-linux-x86-64.so.2).
install_exe() {
	local root=$1 src=$2 dest=$3 lib
	mkdir -p "$root$(dirname "$dest")"
	cp -L "$src" "$root$dest"
	chmod 0755 "$root$dest"
	for lib in $(shlibs "$src"); do
		case "$lib" in
		*/ld-linux*) [ -e "$root/lib64/$(basename "$lib")" ] || cp -L "$lib" "$root/lib64/" ;;
		*) [ -e "$root/lib/x86_64-linux-gnu/$(basename "$lib")" ] ||
			cp -L "$lib" "$root/lib/x86_64-linux-gnu/" ;;
		esac
	done
}

cpio_of() { # cpio_of DIR: newc archive of DIR on stdout, every file owned by root
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
}

busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || die "busybox-static not found at $busybox (apt-get install busybox-static)"
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamically linked; install busybox-static"
fio=$(command -v fio || true)
[ "$with_fio" = 0 ] || [ -n "$fio" ] || die "fio not found (apt-get install fio) or pass --no-fio"
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
e2fsck=$(command -v e2fsck || echo /sbin/e2fsck)

# --- 1. the cached base archive -------------------------------------------------------------
base_src=("$busybox" "$mke2fs" "$e2fsck")
[ "$with_fio" = 0 ] || base_src+=("$fio")
key=$( {
	cat "$0"
	# shellcheck disable=SC2046 # one word per library path
	for f in "${base_src[@]}"; do stat -L -c '%n %s %Y' "$f" $(shlibs "$f"); done
} | sha256sum | cut -c1-16)
base="$CACHE_DIR/initramfs/base-$key.cpio"
if [ ! -f "$base" ]; then
	log "building the initramfs base (busybox, e2fsprogs, fio=$with_fio) into $base"
	mkdir -p "$CACHE_DIR/initramfs"
	broot=$(mktemp -d)
	trap 'rm -rf "$broot"' EXIT
	mkdir -p "$broot"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc,proc,sys,dev,tmp,run,root,mnt}
	chmod 1777 "$broot/tmp"
	cp "$busybox" "$broot/bin/busybox"
	install_exe "$broot" "$mke2fs" /usr/sbin/mke2fs
	install_exe "$broot" "$e2fsck" /usr/sbin/e2fsck
	for l in mkfs.ext4 mkfs.ext2 mkfs.ext3; do ln -s mke2fs "$broot/usr/sbin/$l"; done
	for l in fsck.ext4 fsck.ext2 fsck.ext3; do ln -s e2fsck "$broot/usr/sbin/$l"; done
	[ "$with_fio" = 0 ] || install_exe "$broot" "$fio" /usr/bin/fio
	[ ! -f /etc/mke2fs.conf ] || cp /etc/mke2fs.conf "$broot/etc/"
	# Applet symlinks, except where a real tool is installed (the busybox mke2fs, for one, does
	# not know ext4 features well enough to be a stand-in).
	for a in $("$broot/bin/busybox" --list); do
		[ -e "$broot/usr/sbin/$a" ] || [ -e "$broot/usr/bin/$a" ] || [ -e "$broot/bin/$a" ] ||
			ln -s busybox "$broot/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\n' > "$broot/etc/passwd"
	printf 'root:x:0:\n' > "$broot/etc/group"
	# The kernel opens /dev/console for init before /init can mount devtmpfs.
	mknod -m 600 "$broot/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod /dev/console (not root?)"
	cpio_of "$broot" > "$base.tmp.$$"
	mv -f "$base.tmp.$$" "$base"   # atomic: parallel runs never see a half-written base
	# Every edit of this script or package upgrade makes a new base; drop the stale ones.
	find "$CACHE_DIR/initramfs" -name 'base-*.cpio' -mtime +7 -delete 2>/dev/null || true
	rm -rf "$broot"
	trap - EXIT
fi

# --- 2. the per-run overlay -----------------------------------------------------------------
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{lib/modules,lib/x86_64-linux-gnu,lib64,usr/bin}
install -m 0755 "$init_script" "$root/init"
for m in "${modules[@]}"; do
	install -m 0644 "$m" "$root/lib/modules/$(basename "$m")"
done
for b in "${bins[@]}"; do
	# Rust tools may be static or link glibc: bring their libraries along either way.
	install_exe "$root" "$b" "/usr/bin/$(basename "$b")"
done
if [ -n "$tests_dir" ]; then
	mkdir -p "$root/tests"
	cp -a "$tests_dir/." "$root/tests/"
fi
# client OPTION DIR SKIP-REASON SKIP-FILE NAME:DEST...: install the prebuilt client userspace
# binaries DIR/NAME at DEST, or write SKIP-REASON (if any) to /etc/blktap-rs/SKIP-FILE.
client() {
	local opt=$1 dir=$2 reason=$3 skip_file=$4 spec
	shift 4
	if [ -n "$dir" ]; then
		for spec; do
			[ -x "$dir/${spec%%:*}" ] || die "$opt: no executable $dir/${spec%%:*}"
			install_exe "$root" "$dir/${spec%%:*}" "${spec#*:}"
		done
	elif [ -n "$reason" ]; then
		mkdir -p "$root/etc/blktap-rs"
		printf '%s\n' "$reason" > "$root/etc/blktap-rs/$skip_file"
	fi
}
client --tapdisk "$tapdisk_dir" "$tapdisk_skip" tapdisk-skip \
	tapdisk:/usr/libexec/tapdisk tap-ctl:/usr/sbin/tap-ctl vhd-util:/usr/sbin/vhd-util
client --openxt "$openxt_dir" "$openxt_skip" openxt-skip \
	tapdisk2:/opt/openxt/bin/tapdisk2 tap-ctl:/opt/openxt/bin/tap-ctl vhd-util:/opt/openxt/bin/vhd-util
client --tapdisk-oxt "$tapdisk_oxt_dir" "$tapdisk_oxt_skip" tapdisk-oxt-skip \
	tapdisk:/usr/libexec/blktap-oxt/tapdisk tap-ctl:/usr/libexec/blktap-oxt/tap-ctl
for spec in "${files[@]}"; do
	src=${spec%%:*} dest=${spec#*:}
	if [ "$src" = "$spec" ] || [ ! -f "$src" ]; then die "--file wants an existing SRC:DEST, got '$spec'"; fi
	mkdir -p "$root$(dirname "$dest")"
	cp -L "$src" "$root$dest"
done
cpio_of "$root" | gzip -1 > "$out.overlay.$$"
cat "$base" "$out.overlay.$$" > "$out"
rm -f "$out.overlay.$$"
