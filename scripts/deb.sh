#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the Debian packages (make deb) with debhelper and dh_dkms from debian/:
#
#   scripts/deb.sh [OUTDIR]      default OUTDIR: results/deb
#
#   blktap-rs-dkms_VERSION_all.deb    module sources for DKMS in /usr/src/blktap-VERSION,
#                                     udev rules, docs; DKMS builds on install and on every
#                                     kernel upgrade
#   blktap-rs-tools_VERSION_amd64.deb blktapd, blktap-ctl and their man pages
#
# dpkg-buildpackage runs on a copy of the tree in the cache, so that neither debian/'s build
# products nor the packages land in the source tree (it writes its results to the parent
# directory). cargo builds offline from its cache, filled first by `cargo fetch`; its target
# directory is kept in the cache, so a second run only packs. Prints the package paths.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

out=${1:-$TOP/results/deb}
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
deb_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$TOP/debian/changelog")
[ "$version" = "$deb_version" ] ||
	die "debian/changelog is at $deb_version, dkms.conf at $version: add a changelog entry (dch -v $version)"

# The packaging tools (the install step of this target, as bootstrap.sh is for make deps).
apt_ensure dpkg-dev debhelper dh-dkms
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) to build blktap-rs-tools"

(cd "$TOP/tools" && cargo fetch --locked -q) || die "cargo fetch failed (crates.io unreachable?)"

build=$CACHE_DIR/deb/build
src=$build/blktap-rs-$version
rm -rf "$build"
mkdir -p "$src" "$out"
# The tree as git sees it (tracked and new files, not ignored ones: no build products).
if git -C "$TOP" rev-parse --git-dir >/dev/null 2>&1; then
	# (Deleted but still tracked files are left out.)
	(cd "$TOP" && while IFS= read -r -d '' f; do [ ! -e "$f" ] || printf '%s\0' "$f"; done \
		< <(git ls-files -co --exclude-standard -z) | tar --null -T - -cf -) | tar -C "$src" -xf -
else
	tar -C "$TOP" --exclude=./tools/target --exclude=./results --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
export CARGO_TARGET_DIR=$CACHE_DIR/deb/target
log "dpkg-buildpackage in $src"
# -d: cargo usually comes from rustup, which dpkg does not know about (checked above instead).
if ! (cd "$src" && dpkg-buildpackage -b -us -uc -d) > "$build/build.log" 2>&1; then
	tail -n 40 "$build/build.log" >&2
	die "dpkg-buildpackage failed (log: $build/build.log)"
fi
for p in blktap-rs-dkms_"${version}"_all.deb blktap-rs-tools_"${version}"_amd64.deb; do
	[ -f "$build/$p" ] || die "dpkg-buildpackage made no $p (log: $build/build.log)"
	mv -f "$build/$p" "$out/$p"
	echo "$out/$p"
done
