#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Makes a kernel build tree that can build blktap.ko out of a distribution kernel's headers,
# which carry no Rust metadata, and prints its path. Never downloads anything: what it needs
# and does not find, it names (scripts/stock-kernel.sh deps installs it).
#
#   scripts/prepare-rust-metadata.sh [--check] [--headers DIR] [--source PATH] RELEASE
#
#   RELEASE        the kernel release (uname -r of the kernel that will load the module)
#   --headers DIR  its headers or build tree (default /lib/modules/RELEASE/build)
#   --source PATH  (or KSOURCE=PATH) the kernel source of the same package version: a tarball or
#                  an unpacked tree (default /usr/src/linux-source-X.Y.tar.*)
#   --check        only check that everything needed is there (exit 0) or say what is
#                  missing (exit 1); builds nothing
#
# A tree that already holds the metadata (a full build tree, Ubuntu's linux-lib-rust-*) is
# printed as it is. Otherwise the kernel's rust/ is rebuilt once from the matching source,
# with the headers' own .config, and cached in $CACHE_DIR/stock/kdir/RELEASE-KEY, KEY being a
# hash of the headers, the source version and the toolchain. For the module's Rust symbols to
# match the kernel's, that build needs:
#   - the source of the very package version the headers come from (Debian: linux-source-X.Y);
#   - the exact rustc version text of CONFIG_RUSTC_VERSION_TEXT: Rust symbol names carry a hash
#     of the crate name and of that text, so a different text means "Unknown symbol" on insmod.
#     Either a rustc that prints it, or the rustup toolchain of the same version and commit
#     plus RUSTC_FORCE_RUSTC_VERSION (the suffix distributions add, such as "(built from a
#     source tarball)", only enters through that variable);
#   - the bindgen of CONFIG_BINDGEN_VERSION_TEXT: other versions name some generated items
#     differently.
# The chosen toolchain is recorded in the tree's .blktap-rust-env, which scripts/dkms-make.sh
# reads before it builds the module there.
#
# Exit status: 0 (the tree on stdout), 1 something is missing or failed (said on stderr),
# 2 usage.
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() { sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

check_only=0
headers=
source_arg=${KSOURCE:-} # make KSOURCE=, or the environment (dkms-make.sh under DKMS)
release=
while [ $# -gt 0 ]; do
	case "$1" in
	--check) check_only=1; shift ;;
	--headers) headers=${2:?--headers needs a directory}; shift 2 ;;
	--source) source_arg=${2:?--source needs a path}; shift 2 ;;
	-h|--help) usage ;;
	-*) printf 'prepare-rust-metadata: unknown option %s\n' "$1" >&2; usage ;;
	*) [ -z "$release" ] || usage; release=$1; shift ;;
	esac
done
[ -n "$release" ] || usage
headers=${headers:-/lib/modules/$release/build}
STOCK_CACHE=${BLKTAP_STOCK_CACHE:-$CACHE_DIR/stock}
jobs=${BLKTAP_JOBS:-$(nproc)}

failed=0
say() { printf 'blktap prepare: %s\n' "$*" >&2; }
# problem WHAT FIX...: one unmet requirement; the FIX lines say what to install.
problem() {
	failed=1
	printf 'blktap prepare: error: %s\n' "$1" >&2
	shift
	local l
	for l in "$@"; do printf '    %s\n' "$l" >&2; done
}
# config NAME [FILE]: the value of CONFIG_NAME (quotes removed), empty if unset.
config() {
	sed -n "s/^CONFIG_$1=\"\{0,1\}\(.*\)\"\{0,1\}\$/\1/p" "${2:-$conf}" | sed 's/"$//' | head -n1
}
have_metadata() {
	local f
	for f in rust/libkernel.rmeta rust/libcore.rmeta rust/libmacros.so scripts/target.json; do
		[ -e "$1/$f" ] || return 1
	done
}

# --- the headers --------------------------------------------------------------------------------
if [ ! -d "$headers" ]; then
	problem "no headers for kernel $release ($headers does not exist)" \
		"Install them: apt-get install linux-headers-$release (or give --headers DIR / KHEADERS=DIR)."
	exit 1
fi
conf=$headers/include/config/auto.conf
[ -f "$conf" ] || conf=$headers/.config
if [ ! -f "$conf" ]; then
	problem "$headers has no kernel configuration (.config): not a headers or build tree" \
		"Install the headers package of $release: apt-get install linux-headers-$release."
	exit 1
fi
if [ "$(config RUST)" != y ]; then
	problem "kernel $release was built without Rust support (CONFIG_RUST is not set in $conf)" \
		"blktap is a Rust module: it cannot be built for this kernel. Use a kernel built with" \
		"CONFIG_RUST=y (Debian's linux-image-*-amd64 of 7.x have it)."
	exit 1
fi
if have_metadata "$headers"; then
	# A full build tree, or headers that ship the metadata: nothing to prepare.
	[ "$check_only" = 1 ] && { say "$headers holds the Rust metadata: nothing to prepare"; exit 0; }
	echo "$headers"
	exit 0
fi
for f in .config Module.symvers include/generated/rustc_cfg; do
	[ -e "$headers/$f" ] || problem "$headers lacks $f" \
		"Reinstall the headers package: apt-get install --reinstall linux-headers-$release."
done
[ "$failed" = 0 ] || exit 1

kver_num=${release%%[!0-9.]*}          # 7.3.4 of 7.3.4+deb13-amd64
kver_num=${kver_num%.}
series=$(cut -d. -f1-2 <<<"$kver_num") # 7.3

# The package version the headers come from: Debian writes it into package.h; otherwise ask dpkg.
headers_pkgver=$(sed -n 's/^#define LINUX_PACKAGE_ID " *Debian \([^ "]*\)".*/\1/p' \
	"$headers/include/generated/package.h" 2>/dev/null | head -n1)
if [ -z "$headers_pkgver" ] && command -v dpkg-query >/dev/null; then
	pkg=$(dpkg-query -S "$(realpath "$headers")/.config" 2>/dev/null | cut -d: -f1 | head -n1)
	[ -z "$pkg" ] || headers_pkgver=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null)
fi

# --- the source of the same version -------------------------------------------------------------
# source_version PATH: the Debian package version of a linux-source tarball (dpkg, else the
# changelog the package installs beside it, which also works in an unpacked .deb).
source_version() {
	local p=$1 pkg d cl
	if command -v dpkg-query >/dev/null; then
		pkg=$(dpkg-query -S "$(realpath "$p")" 2>/dev/null | cut -d: -f1 | head -n1)
		if [ -n "$pkg" ]; then dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null; return; fi
	fi
	if [ -d "$p" ]; then
		cat "$p/.blktap-package-version" 2>/dev/null
		return
	fi
	d=$(dirname "$p")
	cl=$d/../share/doc/linux-source-$series/changelog.Debian.gz
	[ -f "$cl" ] && zcat "$cl" | sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p'
}
src=$source_arg
if [ -z "$src" ]; then
	for f in /usr/src/linux-source-"$series".tar.xz /usr/src/linux-source-"$series".tar.zst \
		/usr/src/linux-source-"$series".tar.bz2 /usr/src/linux-source-"$series".tar.gz \
		/usr/src/linux-source-"$series"; do
		[ -e "$f" ] && { src=$f; break; }
	done
fi
want_src="apt-get install linux-source-$series${headers_pkgver:+=$headers_pkgver}"
if [ -z "$src" ] || [ ! -e "$src" ]; then
	problem "no kernel source for $release${src:+ ($src does not exist)}: its rust/ must be rebuilt from the source" \
		"of the same package version${headers_pkgver:+ ($headers_pkgver)}. Install it: $want_src" \
		"(Debian: from the suite the kernel came from, e.g. -t trixie-backports), or give --source / KSOURCE=."
	src_ver=
else
	src_ver=$(source_version "$src")
	if [ -n "$headers_pkgver" ] && [ -n "$src_ver" ] && [ "$src_ver" != "$headers_pkgver" ]; then
		problem "the kernel source $src is version $src_ver, the headers of $release are $headers_pkgver" \
			"The Rust metadata must come from the same source. Install the matching one: $want_src."
	elif [ -z "$src_ver" ]; then
		say "note: the package version of $src is unknown; checking the source's own version instead"
	fi
fi

# --- rustc ----------------------------------------------------------------------------------------
kernel_rustc=$(config RUSTC_VERSION_TEXT)
rustc_ver=$(awk '{print $2}' <<<"$kernel_rustc")
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
toolchain=$rustup_home/toolchains/$rustc_ver-x86_64-unknown-linux-gnu
rustc_bin=
force_version=
install_rustc="rustup toolchain install $rustc_ver --profile minimal -c rust-src (as the user who builds: root for DKMS)"
# Candidates, best first: rustc in PATH and the distribution's, when they print the exact text;
# then the rustup toolchain of that version, made to hash as the kernel's compiler.
for r in "$(command -v rustc 2>/dev/null)" /usr/bin/rustc "/usr/bin/rustc-${rustc_ver%.*}"; do
	if [ -z "$r" ] || [ ! -x "$r" ]; then continue; fi
	if [ "$("$r" --version 2>/dev/null)" = "$kernel_rustc" ]; then rustc_bin=$r; break; fi
done
if [ -z "$rustc_bin" ] && [ -x "$toolchain/bin/rustc" ]; then
	have=$("$toolchain/bin/rustc" --version 2>/dev/null)
	# "rustc 1.85.1 (4eb161250 2025-03-15)" must be the start of the kernel's text: same release
	# and commit; what follows (a distribution's note) is supplied by RUSTC_FORCE_RUSTC_VERSION.
	if [ -n "$have" ] && [ "${kernel_rustc#"$have"}" != "$kernel_rustc" ]; then
		rustc_bin=$toolchain/bin/rustc
		[ "$have" = "$kernel_rustc" ] || force_version=${kernel_rustc#rustc }
	else
		problem "rustup toolchain $rustc_ver is '$have', the kernel was built with '$kernel_rustc'" \
			"Not the same compiler (release or commit differ); reinstall: $install_rustc."
	fi
elif [ -z "$rustc_bin" ]; then
	problem "no rustc matching the kernel's '$kernel_rustc' (rustc in PATH: $(rustc --version 2>/dev/null || echo none))" \
		"Install that release: $install_rustc;" \
		"or put a rustc that prints exactly that text first in PATH."
fi
if [ -n "$rustc_bin" ]; then
	sysroot=$("$rustc_bin" --print sysroot 2>/dev/null)
	[ -f "$sysroot/lib/rustlib/src/rust/library/core/src/lib.rs" ] ||
		problem "rustc $rustc_ver ($rustc_bin) has no library sources (rust-src)" \
			"Install them: rustup component add rust-src --toolchain $rustc_ver (Debian's rustc: apt-get install rust-src)."
fi

# --- bindgen --------------------------------------------------------------------------------------
kernel_bindgen=$(config BINDGEN_VERSION_TEXT)
bindgen_ver=$(awk '{print $2}' <<<"$kernel_bindgen")
bindgen_root=${BLKTAP_TOOLCHAINS:-$CACHE_DIR/toolchains}/bindgen-$bindgen_ver
bindgen_bin=
for b in "$(command -v bindgen 2>/dev/null)" "$bindgen_root/bin/bindgen"; do
	if [ -z "$b" ] || [ ! -x "$b" ]; then continue; fi
	if [ "$("$b" --version 2>/dev/null | awk '{print $2}')" = "$bindgen_ver" ]; then bindgen_bin=$b; break; fi
done
if [ -z "$bindgen_ver" ]; then
	# Kernels before CONFIG_BINDGEN_VERSION_TEXT: any bindgen the kernel's checks accept.
	bindgen_bin=$(command -v bindgen 2>/dev/null)
	[ -n "$bindgen_bin" ] || problem "bindgen not found" "Install it: cargo install --locked bindgen-cli"
fi
[ -n "$bindgen_bin" ] ||
	problem "no bindgen $bindgen_ver (the kernel's CONFIG_BINDGEN_VERSION_TEXT: '$kernel_bindgen'; bindgen in PATH: $(bindgen --version 2>/dev/null || echo none))" \
		"Other versions name generated items differently. Install it:" \
		"cargo install --locked bindgen-cli@$bindgen_ver --root $bindgen_root"
if ! compgen -G "${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}/libclang*.so*" >/dev/null; then
	problem "no libclang in LIBCLANG_PATH=${LIBCLANG_PATH:-} (bindgen needs it)" \
		"Install it: apt-get install libclang-19-dev (or set LIBCLANG_PATH to a libclang >= 17)."
fi

# --- host tools the kernel's prepare step runs ----------------------------------------------------
for t in make gcc flex bison bc perl pahole; do
	command -v "$t" >/dev/null || problem "$t not found (the kernel's build needs it)" \
		"Install it: apt-get install build-essential flex bison bc perl dwarves libelf-dev libssl-dev."
done
[ "$failed" = 0 ] || exit 1
if [ "$check_only" = 1 ]; then
	say "kernel $release: source $src${src_ver:+ ($src_ver)}, rustc $rustc_bin${force_version:+ (as \"$force_version\")}, bindgen $bindgen_bin"
	exit 0
fi

# --- the cache ------------------------------------------------------------------------------------
# Bump FORMAT when a change here changes what a prepared tree holds (the trees are kept across
# edits that do not).
FORMAT=1
key=$( {
	echo "format $FORMAT"
	sha256sum "$headers/.config" "$headers/Module.symvers"
	echo "$src $src_ver"; stat -L -c '%s %Y' "$src"
	"$rustc_bin" -vV; echo "$force_version"
	# Trees made without a forced version before it was unset instead of empty are wrong.
	[ -n "$force_version" ] || echo "no forced version: unset"
	"$bindgen_bin" --version; gcc --version | head -n1
} 2>/dev/null | sha256sum | cut -c1-16)
out=$STOCK_CACHE/kdir/$release-$key
mkdir -p "$STOCK_CACHE/kdir"
exec 9>"$out.lock"
flock 9 # one preparation at a time (DKMS and a manual make may race)
if [ -f "$out/.blktap-prepared" ]; then
	echo "$out"
	exit 0
fi
# Rebuilding rust/ is a partial kernel build: it waits for any test kernel build of this
# project (scripts/build-kernel.sh holds the same lock), as two at once starve each other.
mkdir -p "$CACHE_DIR/build"
exec 8>"$CACHE_DIR/build/.lock"
flock 8
t0=$SECONDS
say "preparing the Rust metadata of $release in $out (once; about 2 minutes on 2 cores)"
rm -rf "$out"
mkdir -p "$out"
log=$out/.blktap-prepare.log

# The source: unpacked once per version, next to the trees made from it.
if [ -d "$src" ]; then
	srctree=$src
else
	srctree=$STOCK_CACHE/src/linux-source-$series-${src_ver:-$(sha256sum <<<"$src $(stat -L -c '%s %Y' "$src")" | cut -c1-12)}
	if [ ! -f "$srctree/.blktap-unpacked" ]; then
		say "unpacking $src"
		rm -rf "$srctree" "$srctree.tmp"
		mkdir -p "$srctree.tmp"
		tar -C "$srctree.tmp" -xf "$src" || { say "error: cannot unpack $src"; rm -rf "$srctree.tmp"; exit 1; }
		top=$(find "$srctree.tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)
		mv "$top" "$srctree" && rm -rf "$srctree.tmp"
		[ -z "$src_ver" ] || echo "$src_ver" > "$srctree/.blktap-package-version"
		touch "$srctree/.blktap-unpacked"
	fi
fi
[ -f "$srctree/Makefile" ] || { say "error: $srctree has no Makefile: not a kernel source tree"; exit 1; }
src_num=$(make -s --no-print-directory -C "$srctree" kernelversion 2>/dev/null)
if [ "$src_num" != "$kver_num" ]; then
	problem "the source $src is Linux $src_num, kernel $release is $kver_num" \
		"Install the source of the same version: $want_src."
	rm -rf "$out"
	exit 1
fi

# The pinned compilers come first in PATH (rustc, rustdoc and the host rustc alike).
rust_path=$(dirname "$rustc_bin")
bindgen_path=$(dirname "$bindgen_bin")
# RUSTC_FORCE_RUSTC_VERSION only when there is a version to force: rustc takes a variable that is
# set but empty as the version text "", and every crate's symbol hash changes with it (a
# distribution's rustc that prints the kernel's text, Debian trixie's, then built metadata
# whose symbols the kernel does not export: modpost "undefined!").
force_env=(-u RUSTC_FORCE_RUSTC_VERSION)
[ -z "$force_version" ] || force_env=("RUSTC_FORCE_RUSTC_VERSION=$force_version")
kmake() {
	env "${force_env[@]}" PATH="$rust_path:$bindgen_path:$PATH" \
		make -C "$srctree" O="$out" KERNELRELEASE="$release" RUSTC="$rustc_bin" \
		HOSTRUSTC="$rustc_bin" RUSTDOC="$rust_path/rustdoc" BINDGEN="$bindgen_bin" "$@"
}
cp "$headers/.config" "$out/.config"
if ! kmake olddefconfig >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	say "error: make olddefconfig failed for $release (log: $log)"
	exit 1
fi
if ! grep -q '^CONFIG_RUST=y' "$out/.config"; then
	kmake rustavailable >>"$log" 2>&1
	tail -n 20 "$log" >&2
	problem "CONFIG_RUST was dropped when configuring with this machine's tools (see above)" \
		"Kconfig removes it silently when the toolchain fails its checks: install what" \
		"'make rustavailable' asks for."
	exit 1
fi
# What this host's tools changed in the configuration (compiler-dependent options), for the record.
diff <(grep '^CONFIG_' "$headers/.config" | sort) <(grep '^CONFIG_' "$out/.config" | sort) |
	grep '^[<>]' > "$out/.blktap-config-diff" || true
say "configured ($(grep -c '^<' "$out/.blktap-config-diff") settings differ from the kernel's, listed in $out/.blktap-config-diff)"
if ! kmake -j"$jobs" modules_prepare >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	say "error: make modules_prepare failed for $release (log: $log)"
	exit 1
fi
# The kernel's own export list (with its Rust symbols) and its BTF base for the module's BTF.
cp "$headers/Module.symvers" "$out/Module.symvers"
[ ! -f "$headers/vmlinux" ] || cp "$headers/vmlinux" "$out/vmlinux"
if ! have_metadata "$out"; then
	say "error: modules_prepare produced no Rust metadata in $out/rust (log: $log)"
	exit 1
fi
{
	printf 'BLKTAP_RUST_PATH=%q\n' "$rust_path"
	printf 'BLKTAP_BINDGEN_PATH=%q\n' "$bindgen_path"
	printf 'BLKTAP_RUSTC_FORCE_RUSTC_VERSION=%q\n' "$force_version"
	printf 'BLKTAP_HEADERS=%q\n' "$headers"
} > "$out/.blktap-rust-env"
touch "$out/.blktap-prepared"
say "prepared $release in $((SECONDS - t0)) s"
# Older trees of this release (another toolchain or headers) are not used any more.
for d in "$STOCK_CACHE/kdir/$release"-*; do
	case "$d" in "$out"|"$out.lock"|*.lock) continue ;; esac
	[ -d "$d" ] && rm -rf "$d" "$d.lock"
done
echo "$out"
