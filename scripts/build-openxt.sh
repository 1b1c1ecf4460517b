#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) static binaries of OpenXT's legacy blktap userspace (OpenXT/blktap a0f94d7,
# what OpenXT shipped until 2016: the client of the V-OXT driver line) for the busybox test VM,
# and print the directory that holds them: tapdisk2, tap-ctl, vhd-util.
#
# The source is $BLKTAP_OPENXT_TARBALL, else ../shared/vendor/openxt-blktap-a0f94d7.tar.gz beside
# the project (checked against its .sha256), with the bookworm build patch that lies beside it
# (openxt-blktap-a0f94d7-bookworm.patch, or $BLKTAP_OPENXT_PATCH). There is no network fallback:
# the repository is deprecated upstream and this exact tree is what the tests were written for.
# Nothing of it is copied into this repository: it is unpacked, patched and built in the cache,
# keyed by this script, the tarball and the patch. The recipe is the one recorded, verified, in
# ../shared/vendor/README.md (targets, warning flags, the ICBINN stand-in, static links).
#
# Exit status 0 with the directory on stdout, or 3 with the reason on stderr and in
# $CACHE_DIR/openxt/SKIP-REASON when the source is missing or the build failed: the openxt tests
# then report SKIP with that reason. Other errors exit 1.
set -euo pipefail
. "$(dirname "$0")/common.sh"

VERSION=a0f94d7
NAME=openxt-blktap-$VERSION
cache=$CACHE_DIR/openxt
mkdir -p "$cache"
skip_file=$cache/SKIP-REASON

unavailable() {
	printf '%s\n' "$*" > "$skip_file"
	log "OpenXT userspace unavailable: $*"
	exit 3
}

# --- the sources ----------------------------------------------------------------------------
vendor_dir=$TOP/../shared/vendor
tarball=${BLKTAP_OPENXT_TARBALL:-$vendor_dir/$NAME.tar.gz}
patch=${BLKTAP_OPENXT_PATCH:-$(dirname "$tarball")/$NAME-bookworm.patch}
[ -f "$tarball" ] || unavailable "no $tarball (OpenXT's legacy blktap userspace is only taken from ../shared/vendor)"
[ -f "$patch" ] || unavailable "no $patch (the build patch for Debian bookworm)"
if [ -f "$tarball.sha256" ]; then
	want=$(awk '{print $1}' "$tarball.sha256")
	have=$(sha256sum "$tarball" | awk '{print $1}')
	[ "$want" = "$have" ] || unavailable "$tarball does not match its checksum ($have, expected $want)"
elif [ -z "${BLKTAP_OPENXT_TARBALL:-}" ]; then
	unavailable "no $tarball.sha256 to check $tarball against"
fi

# --- cached build ---------------------------------------------------------------------------
key=$( { sha256sum < "$tarball"; sha256sum < "$patch"; cat "$0"; gcc --version | head -n1; } |
	sha256sum | cut -c1-16)
out=$cache/$VERSION-$key
reuse_build "$out"

# Build dependencies (scripts/bootstrap.sh installs them too; checked here for KDIR users). Xen
# is used for its headers only; nothing links a Xen library.
need_build_deps "libaio-dev libxen-dev uuid-dev libssl-dev" /usr/include/libaio.h \
	/usr/include/xenctrl.h /usr/include/xen/io/blkif.h /usr/include/uuid/uuid.h \
	/usr/include/openssl/evp.h
need_build_deps "build-essential patch" make gcc ar patch strip

rm -rf "$out"
mkdir -p "$out/bin"
log "building OpenXT's legacy blktap userspace ($VERSION) from $tarball into $out (about 15 s)"
start=$(date +%s)
tar -C "$out" -xzf "$tarball"
src=$out/$NAME
blog=$out/build.log
# The recipe stops at its first failure: set -e holds in the subshell only when its status is
# not tested (`( ... ) || handler` would switch it off inside).
set +e
(
	set -e
	cd "$src"
	patch -p1 --quiet < "$patch"
	icbinn=$src/compat/icbinn
	# The link lines take CFLAGS, not LDFLAGS, and the Makefiles extend CFLAGS from the
	# environment (a command-line CFLAGS would replace their own). lvm/, vhd/ and vhd/lib/
	# put -Werror after it, so only the per-warning -Wno-error= forms hold. glibc >= 2.28
	# no longer has major()/minor() without sys/sysmacros.h.
	CFLAGS="-O2 -include sys/sysmacros.h -I$icbinn -L$icbinn"
	for w in format format-truncation stringop-truncation unused-but-set-variable maybe-uninitialized; do
		CFLAGS+=" -Wno-error=$w"
	done
	export CFLAGS
	# The always-failing ICBINN stand-in of the patch, as the library the link lines name.
	gcc $CFLAGS -c -o "$icbinn/icbinn_stub.o" "$icbinn/icbinn_stub.c"
	ar rc "$icbinn/libicbinn_resolved.a" "$icbinn/icbinn_stub.o"
	mk=(make USE_SYSTEM_LIBRARIES=y)
	# Only these targets, in this order (the top-level make also builds libvhdio, which does
	# not compile on x86-64).
	"${mk[@]}" -C lvm
	"${mk[@]}" -C vhd/lib libvhd.a
	"${mk[@]}" -C vhd vhd-util VHD_STATIC=y
	# libxts-aes.a must come before -lcrypto: AIOLIBS is the tail of tapdisk2's link line.
	CFLAGS="$CFLAGS -static" "${mk[@]}" -C drivers tapdisk2 AIOLIBS='-laio -lcrypto -lpthread -ldl'
	"${mk[@]}" -C control tap-ctl.o libblktapctl.a
	# tap-ctl's own rule links the shared libblktapctl by relative path: link it by hand.
	gcc -static -o control/tap-ctl control/tap-ctl.o control/libblktapctl.a
) > "$blog" 2>&1
rc=$?
set -e
[ "$rc" = 0 ] || { tail -n 30 "$blog" >&2; unavailable "OpenXT userspace build failed (log: $blog)"; }
finish_build "$out" "$src" "$blog" "OpenXT userspace" "$start" drivers/tapdisk2 control/tap-ctl vhd/vhd-util
