#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) static binaries of the real tapdisk 3.55.5 (xapi-project/blktap v3.55.5: the
# client this driver exists for) for the busybox test VM, and print the directory that holds
# them: tapdisk, tap-ctl, vhd-util.
#
#   scripts/build-tapdisk.sh [--openxt-name]
#
# --openxt-name builds the stand-in for OpenXT's current userspace instead: the same tree with
# only BLKTAP2_CONTROL_NAME set to "blktap-control" (OpenXT's one kernel-facing patch to it) and
# tapdisk's directory, compiled into tap-ctl, moved to /usr/libexec/blktap-oxt so that both
# builds fit in one VM. It is cached apart (SKIP-REASON in $CACHE_DIR/tapdisk-oxt/).
#
# The source is, in this order: $BLKTAP_TAPDISK_TARBALL; ../shared/vendor/blktap-3.55.5.tar.gz
# beside the project (checked against its .sha256); a git clone of the upstream tag (machines
# with internet access). Nothing of it is copied into this repository: it is unpacked and built
# in the cache, keyed by the tarball's checksum and this script.
#
# Exit status 0 with the directory on stdout, or 3 with the reason on stderr and in
# $CACHE_DIR/tapdisk/SKIP-REASON when no source could be had or the build failed: the tapdisk
# tests then report SKIP with that reason. Other errors exit 1.
set -euo pipefail
. "$(dirname "$0")/common.sh"

VERSION=3.55.5
UPSTREAM=https://github.com/xapi-project/blktap.git
UPSTREAM_COMMIT=8450aed5c7f720033d36ed09f7c09965ce10102a
variant=
control_name=
libexecdir=/usr/libexec
case "${1:-}" in
'') ;;
--openxt-name) variant=oxt; control_name=blktap-control; libexecdir=/usr/libexec/blktap-oxt ;;
*) die "usage: $0 [--openxt-name]" ;;
esac
cache=$CACHE_DIR/tapdisk${variant:+-$variant}
mkdir -p "$cache"
skip_file=$cache/SKIP-REASON

unavailable() {
	printf '%s\n' "$*" > "$skip_file"
	log "tapdisk unavailable: $*"
	exit 3
}

# --- the source tarball ---------------------------------------------------------------------
tarball=${BLKTAP_TAPDISK_TARBALL:-}
vendor=$TOP/../shared/vendor/blktap-$VERSION.tar.gz
if [ -z "$tarball" ] && [ -f "$vendor" ]; then
	tarball=$vendor
	if [ -f "$vendor.sha256" ]; then
		want=$(awk '{print $1}' "$vendor.sha256")
		have=$(sha256sum "$vendor" | awk '{print $1}')
		[ "$want" = "$have" ] || unavailable "$vendor does not match its checksum ($have, expected $want)"
	fi
fi
if [ -z "$tarball" ]; then
	tarball=$CACHE_DIR/tapdisk/blktap-$VERSION.tar.gz
	mkdir -p "$CACHE_DIR/tapdisk"
	if [ ! -f "$tarball" ]; then
		log "no $vendor: trying upstream $UPSTREAM tag v$VERSION"
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		if ! timeout 120 git clone -q --depth 1 -b "v$VERSION" "$UPSTREAM" "$tmp/blktap" 2>/dev/null; then
			unavailable "no ../shared/vendor/blktap-$VERSION.tar.gz and no network access to $UPSTREAM"
		fi
		commit=$(git -C "$tmp/blktap" rev-parse HEAD)
		[ "$commit" = "$UPSTREAM_COMMIT" ] || unavailable "upstream tag v$VERSION is $commit, expected $UPSTREAM_COMMIT"
		git -C "$tmp/blktap" archive --prefix="blktap-$VERSION/" HEAD | gzip -9 > "$tarball.tmp"
		mv "$tarball.tmp" "$tarball"
		rm -rf "$tmp"
		trap - EXIT
	fi
fi
[ -f "$tarball" ] || unavailable "no such file: $tarball"

# --- cached build ---------------------------------------------------------------------------
key=$( { sha256sum < "$tarball"; cat "$0"; gcc --version | head -n1; echo "$variant"; } |
	sha256sum | cut -c1-16)
out=$cache/$VERSION${variant:+-$variant}-$key
reuse_build "$out"

# Build dependencies (scripts/bootstrap.sh installs them too; checked here for KDIR users).
need_build_deps "libaio-dev libxen-dev uuid-dev zlib1g-dev libssl-dev" /usr/include/libaio.h \
	/usr/include/xenctrl.h /usr/include/uuid/uuid.h /usr/include/zlib.h /usr/include/openssl/evp.h
need_build_deps "build-essential autoconf automake libtool pkg-config" autoreconf libtoolize \
	pkg-config make gcc

rm -rf "$out"
mkdir -p "$out/bin"
log "building tapdisk $VERSION${variant:+ ($variant variant)} from $tarball into $out (about a minute)"
start=$(date +%s)
tar -C "$out" -xzf "$tarball"
src=$out/blktap-$VERSION
blog=$out/build.log
(
	cd "$src"
	# The release tree has no VERSION file, which version.m4 reads.
	[ -f VERSION ] || printf '%s' "$VERSION" > VERSION
	if [ -n "$control_name" ]; then
		# Both headers define it; nothing else changes.
		sed -i "s|^\(#define BLKTAP2_CONTROL_NAME[[:space:]]*\)\"blktap/control\"|\1\"$control_name\"|" \
			include/blktap2.h include/blktap.h
		[ "$(grep -c "^#define BLKTAP2_CONTROL_NAME.*\"$control_name\"" include/blktap2.h include/blktap.h |
			awk -F: '{n += $2} END {print n}')" = 2 ] || { echo "BLKTAP2_CONTROL_NAME not replaced"; exit 1; }
	fi
	autoreconf -fi
	# -Werror is hard-coded in every Makefile.am; gcc 12 trips -Wstringop-truncation.
	./configure --disable-shared --enable-static --prefix=/usr --libexecdir="$libexecdir" \
		CFLAGS='-O2 -g -Wno-error'
	# Only these subdirectories make the three binaries, in this order.
	for d in lvm vhd control drivers; do make -C "$d" -j"$(nproc)"; done
	# Relink fully static for the busybox VM (no glibc there). libtool passes -all-static on.
	for p in vhd/vhd-util control/tap-ctl; do
		rm -f "$p"
		make -C "$(dirname "$p")" "$(basename "$p")" LDFLAGS=-all-static
	done
	rm -f drivers/tapdisk
	make -C drivers tapdisk LDFLAGS=-all-static LIBS='-lxentoollog -lxentoolcore'
) > "$blog" 2>&1 || { tail -n 30 "$blog" >&2; unavailable "tapdisk build failed (log: $blog)"; }
finish_build "$out" "$src" "$blog" tapdisk "$start" drivers/tapdisk control/tap-ctl vhd/vhd-util
