#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Distribution ("stock") kernels: the install step of the stock-kernel path, and the Debian
# kernels the tests use.
#
#   scripts/stock-kernel.sh deps RELEASE   install on this system what building blktap.ko for
#                                          kernel RELEASE needs and its headers lack (root):
#                                          headers, the linux-source of the same version, the
#                                          kernel's rustc (rustup) and bindgen (cargo)
#   scripts/stock-kernel.sh fetch RELEASE  download Debian's packages of RELEASE (image,
#                                          modules, headers, kbuild, source) into the cache and
#                                          unpack them into a private root; prints that root
#   scripts/stock-kernel.sh tools RELEASE  only the rustc and bindgen of RELEASE (no root needed),
#                                          reading its configuration from the fetched root or
#                                          /lib/modules/RELEASE/build
#
# `deps` is what `make dkms-install` and the blktap-rs-dkms package's documentation run before
# DKMS: DKMS itself never downloads anything (scripts/prepare-rust-metadata.sh only looks).
# `fetch` uses a private apt configuration (its own sources and lists in the cache) and
# changes nothing on the system: the host need not run the kernel's distribution.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() { sed -n '7,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# = 2 ] || usage
cmd=$1
release=$2
STOCK_CACHE=${BLKTAP_STOCK_CACHE:-$CACHE_DIR/stock}
TOOLCHAINS=${BLKTAP_TOOLCHAINS:-$CACHE_DIR/toolchains}
kver_num=${release%%[!0-9.]*}
kver_num=${kver_num%.}
series=$(cut -d. -f1-2 <<<"$kver_num")

# --- a private apt for Debian's kernel packages ---------------------------------------------------
apt_root=$STOCK_CACHE/apt
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
aptopts=(-o "Dir::Etc::sourcelist=$apt_root/etc/sources.list" -o "Dir::Etc::sourceparts=-"
	-o "Dir::State::Lists=$apt_root/lists" -o "Dir::Cache::archives=$apt_root/archives"
	-o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Get::List-Cleanup=0"
	-o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
apt_update() {
	mkdir -p "$apt_root/lists/partial" "$apt_root/archives/partial" "$apt_root/etc"
	[ -f "$keyring" ] || die "no $keyring (apt-get install debian-archive-keyring)"
	# Debian's kernels: trixie-backports has 7.3 (+deb13), sid has 7.2 (+deb14) and later.
	local s
	for s in ${STOCK_SUITES:-trixie-backports sid trixie}; do
		echo "deb [signed-by=$keyring] http://deb.debian.org/debian $s main"
	done > "$apt_root/etc/sources.list.new"
	# Lists younger than a day are good enough (kernel package names carry their version).
	if ! cmp -s "$apt_root/etc/sources.list.new" "$apt_root/etc/sources.list" ||
		[ -z "$(find "$apt_root/lists" -maxdepth 1 -name '*InRelease' -mmin -1440)" ]; then
		mv "$apt_root/etc/sources.list.new" "$apt_root/etc/sources.list"
		log "apt update (private lists in $apt_root)"
		apt-get "${aptopts[@]}" -qq update >/dev/null ||
			die "apt-get update of Debian's ${STOCK_SUITES:-trixie-backports sid trixie} failed (network?)"
	fi
	rm -f "$apt_root/etc/sources.list.new"
}

fetch() {
	local root=$STOCK_CACHE/root-$release
	if [ -f "$root/.blktap-fetched" ]; then echo "$root"; return; fi
	apt_update
	local abi=${release%-amd64} ver pkgs=() p deb
	ver=$(apt-cache "${aptopts[@]}" show "linux-headers-$release" 2>/dev/null |
		sed -n 's/^Version: //p' | head -n1)
	[ -n "$ver" ] || die "Debian has no linux-headers-$release in ${STOCK_SUITES:-trixie-backports sid trixie}"
	# linux-binary-* holds the signed vmlinuz, linux-modules-* the modules (.ko.xz).
	pkgs=("linux-binary-$release=$ver" "linux-modules-$release=$ver" "linux-headers-$release=$ver"
		"linux-headers-$abi-common=$ver" "linux-kbuild-$abi=$ver" "linux-source-$series=$ver")
	log "downloading ${pkgs[*]}"
	(cd "$apt_root/archives" && apt-get "${aptopts[@]}" -qq download "${pkgs[@]}") ||
		die "downloading Debian's packages of $release failed"
	rm -rf "$root.tmp"
	mkdir -p "$root.tmp"
	for p in "${pkgs[@]}"; do
		deb=$(ls "$apt_root/archives/${p%%=*}_${ver//:/%3a}_"*.deb)
		dpkg-deb -x "$deb" "$root.tmp"
	done
	echo "$ver" > "$root.tmp/.blktap-package-version"
	touch "$root.tmp/.blktap-fetched"
	rm -rf "$root"
	mv "$root.tmp" "$root"
	echo "$root"
}

# The configuration of RELEASE: installed headers, else the fetched root.
kconfig_of() {
	local c
	for c in "/lib/modules/$release/build/.config" \
		"$STOCK_CACHE/root-$release/usr/src/linux-headers-$release/.config"; do
		[ -f "$c" ] && { echo "$c"; return; }
	done
	die "no configuration of $release: install linux-headers-$release (or run: $0 fetch $release)"
}
config() { sed -n "s/^CONFIG_$1=\"\(.*\)\"\$/\1/p" "$2" | head -n1; }

# The kernel's rustc (rustup toolchain of the same release, with rust-src) and bindgen.
tools() {
	local conf rustc_text rustc_ver bindgen_ver
	conf=$(kconfig_of)
	rustc_text=$(config RUSTC_VERSION_TEXT "$conf")
	[ -n "$rustc_text" ] || die "$conf has no CONFIG_RUSTC_VERSION_TEXT: kernel $release has no Rust support"
	rustc_ver=$(awk '{print $2}' <<<"$rustc_text")
	bindgen_ver=$(config BINDGEN_VERSION_TEXT "$conf" | awk '{print $2}')
	if [ "$(rustc --version 2>/dev/null)" = "$rustc_text" ] ||
		[ "$(/usr/bin/rustc --version 2>/dev/null)" = "$rustc_text" ]; then
		log "rustc: '$rustc_text' is there"
	else
		command -v rustup >/dev/null ||
			die "kernel $release needs '$rustc_text': install rustup (Debian: apt-get install rustup), or a rustc that prints exactly that"
		log "rustup toolchain install $rustc_ver (for '$rustc_text')"
		rustup toolchain install "$rustc_ver" --profile minimal -c rust-src --no-self-update >&2
	fi
	if [ -n "$bindgen_ver" ] && [ "$(bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_ver" ] &&
		[ ! -x "$TOOLCHAINS/bindgen-$bindgen_ver/bin/bindgen" ]; then
		command -v cargo >/dev/null || die "bindgen $bindgen_ver is built with cargo: install rustup or cargo first"
		log "cargo install bindgen-cli@$bindgen_ver into $TOOLCHAINS/bindgen-$bindgen_ver"
		cargo install --locked "bindgen-cli@$bindgen_ver" --root "$TOOLCHAINS/bindgen-$bindgen_ver" >&2
	fi
}

deps() {
	[ "$(id -u)" = 0 ] || die "deps installs packages: run it as root"
	local ver=
	if [ ! -f "/lib/modules/$release/build/.config" ]; then
		log "apt-get install linux-headers-$release"
		apt-get install -y "linux-headers-$release" >&2 ||
			die "cannot install linux-headers-$release: enable the suite that has kernel $release in apt's sources"
	fi
	ver=$(sed -n 's/^#define LINUX_PACKAGE_ID " *Debian \([^ "]*\)".*/\1/p' \
		"/lib/modules/$release/build/include/generated/package.h" 2>/dev/null || true)
	if [ -n "$ver" ] && [ ! -e "/lib/modules/$release/build/rust/libkernel.rmeta" ] &&
		[ "$(dpkg-query -W -f '${Version}' "linux-source-$series" 2>/dev/null)" != "$ver" ]; then
		log "apt-get install linux-source-$series=$ver"
		apt-get install -y "linux-source-$series=$ver" >&2 ||
			die "cannot install linux-source-$series=$ver (the version of linux-headers-$release): enable the suite it comes from"
	fi
	tools
	"$TOP/scripts/prepare-rust-metadata.sh" --check "$release"
}

case "$cmd" in
fetch) fetch ;;
tools) tools ;;
deps) deps ;;
*) usage ;;
esac
