#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) static binaries of the real tapdisk 3.55.5 (xapi-project/blktap v3.55.5: the
# client this driver exists for) for the busybox test VM, and print the directory that holds
# them: tapdisk, tap-ctl, vhd-util.
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
cache=$CACHE_DIR/tapdisk
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
	tarball=$cache/blktap-$VERSION.tar.gz
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
key=$( { sha256sum < "$tarball"; cat "$0"; gcc --version | head -n1; } | sha256sum | cut -c1-16)
out=$cache/$VERSION-$key
bins=(tapdisk tap-ctl vhd-util)
if [ -f "$out/.built" ]; then rm -f "$skip_file"; echo "$out/bin"; exit 0; fi

exec 9>"$cache/.lock"
flock 9
if [ -f "$out/.built" ]; then rm -f "$skip_file"; echo "$out/bin"; exit 0; fi

# Build dependencies (scripts/bootstrap.sh installs them too; checked here for KDIR users).
for h in /usr/include/libaio.h /usr/include/xenctrl.h /usr/include/uuid/uuid.h \
	/usr/include/zlib.h /usr/include/openssl/evp.h; do
	[ -f "$h" ] || unavailable "build dependency missing ($h): apt-get install libaio-dev libxen-dev uuid-dev zlib1g-dev libssl-dev"
done
for c in autoreconf libtoolize pkg-config make gcc; do
	command -v "$c" >/dev/null || unavailable "build tool missing ($c): apt-get install build-essential autoconf automake libtool pkg-config"
done

rm -rf "$out"
mkdir -p "$out/bin"
log "building tapdisk $VERSION from $tarball into $out (about a minute)"
start=$(date +%s)
tar -C "$out" -xzf "$tarball"
src=$out/blktap-$VERSION
blog=$out/build.log
(
	cd "$src"
	# The release tree has no VERSION file, which version.m4 reads.
	[ -f VERSION ] || printf '%s' "$VERSION" > VERSION
	autoreconf -fi
	# -Werror is hard-coded in every Makefile.am; gcc 12 trips -Wstringop-truncation.
	./configure --disable-shared --enable-static --prefix=/usr --libexecdir=/usr/libexec \
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
cp "$src/drivers/tapdisk" "$src/control/tap-ctl" "$src/vhd/vhd-util" "$out/bin/"
strip "$out/bin/"*
for b in "${bins[@]}"; do
	# A dynamic binary would not run in the VM: say so now, not as a mystery there.
	if ldd "$out/bin/$b" >/dev/null 2>&1; then unavailable "$b is not static (see $blog)"; fi
done
# The tree itself is only needed to rebuild; keep the log and binaries.
rm -rf "$src"
log "tapdisk built in $(( $(date +%s) - start )) s"
touch "$out/.built"
rm -f "$skip_file"
echo "$out/bin"
