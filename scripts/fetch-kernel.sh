#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Download and unpack Debian's linux-source-$KVER_SERIES into the cache, without touching the
# system's apt sources: a private apt configuration with its own lists directory is used.
# Prints the unpacked source directory on stdout. Idempotent: a second run only prints the path.
set -euo pipefail
. "$(dirname "$0")/common.sh"

if [ -n "${KSRC:-}" ]; then
	[ -f "$KSRC/Makefile" ] || die "KSRC=$KSRC has no Makefile"
	echo "$KSRC"; exit 0
fi

dest="$CACHE_DIR/src"
stamp="$dest/.unpacked-$KVER_SERIES"
if [ -f "$stamp" ]; then cat "$stamp"; exit 0; fi

apt_root="$CACHE_DIR/apt"
mkdir -p "$apt_root/lists/partial" "$apt_root/archives/partial" "$apt_root/etc" "$dest"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
pkg="linux-source-$KVER_SERIES"
found=""
# Debian moves a kernel series between suites over its life; try them in turn.
for suite in ${KSUITES:-trixie-backports forky sid trixie}; do
	cat > "$apt_root/etc/sources.list" <<EOS
deb [signed-by=$keyring] http://deb.debian.org/debian $suite main
EOS
	aptopts=(-o "Dir::Etc::sourcelist=$apt_root/etc/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$apt_root/lists" -o "Dir::Cache::archives=$apt_root/archives"
		-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Get::List-Cleanup=0"
		-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
	log "looking for $pkg in Debian $suite"
	apt-get "${aptopts[@]}" -qq update >/dev/null 2>&1 || { log "apt update for $suite failed"; continue; }
	if apt-cache "${aptopts[@]}" show "$pkg" >/dev/null 2>&1; then
		(cd "$apt_root/archives" && rm -f ./*.deb && apt-get "${aptopts[@]}" -qq download "$pkg") \
			|| { log "download from $suite failed"; continue; }
		found=$suite; break
	fi
done
[ -n "$found" ] || die "Debian has no $pkg in any suite tried (${KSUITES:-trixie-backports forky sid trixie}).
  Build against your own tree instead: make KSRC=/path/to/linux-$KVER_SERIES (source) or KDIR=/path/to/build."

deb=$(ls "$apt_root"/archives/"$pkg"_*.deb | head -n1)
log "unpacking $(basename "$deb") from $found"
tmp=$(mktemp -d "$dest/.unpack.XXXXXX")
dpkg-deb -x "$deb" "$tmp"
tarball=$(ls "$tmp"/usr/src/linux-source-*.tar.* | head -n1)
tar -C "$dest" -xf "$tarball"
rm -rf "$tmp"
src=$(ls -d "$dest"/linux-source-"$KVER_SERIES"* | head -n1)
[ -f "$src/Makefile" ] || die "unpacked tree $src has no Makefile"
echo "$src" > "$stamp"
echo "$src"
