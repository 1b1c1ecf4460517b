#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks that a kernel build tree can build blktap.ko, and says what to install when it cannot.
# DKMS runs it first (PRE_BUILD in dkms.conf), scripts/dkms-make.sh runs it again before the
# build so that the reason also lands in DKMS's make.log; it is as useful on its own:
#
#   scripts/dkms-preflight.sh [--quiet] KDIR [KERNELRELEASE]
#
#   KDIR           the kernel build tree (DKMS: $kernel_source_dir, usually /lib/modules/REL/build)
#   KERNELRELEASE  the release DKMS builds for (-k); checked against the tree's own release
#   --quiet        print nothing when every check passes
#
# An out-of-tree Rust module needs what distribution header packages do not ship: the Rust
# metadata of the kernel crates (rust/*.rmeta, the proc-macro libraries rust/*.so) and the
# target description (scripts/target.json), and it must be compiled by exactly the rustc that
# compiled the kernel (CONFIG_RUSTC_VERSION_TEXT), with the kernel's C compiler family.
#
# Exit status: 0 all checks passed, 1 at least one failed (each failure is printed with the fix).
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh" # PATH with ~/.cargo/bin and LLVM_SUFFIX, as kmake.sh uses them

quiet=0
if [ "${1:-}" = --quiet ]; then quiet=1; shift; fi
kdir=${1:-}
want_release=${2:-}
if [ -z "$kdir" ] || [ "${kdir#-}" != "$kdir" ]; then
	sed -n '7,11p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi

failed=0
note() { [ "$quiet" = 1 ] || printf 'blktap preflight: %s\n' "$*"; }
# problem WHAT FIX...: one failed check; FIX lines say what to do about it.
problem() {
	failed=1
	printf 'blktap preflight: error: %s\n' "$1" >&2
	shift
	local l
	for l in "$@"; do printf '    %s\n' "$l" >&2; done
}
# config NAME: the value of CONFIG_NAME in the tree's configuration, quotes removed.
config() {
	sed -n "s/^CONFIG_$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$conf" | head -n1
}
# version_ge A B: A >= B for dotted version numbers.
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

# --- the tree ---------------------------------------------------------------------------------
if [ ! -f "$kdir/Makefile" ]; then
	problem "$kdir is not a kernel build tree (no Makefile)" \
		"Point DKMS at the directory the kernel was built in (--kernelsourcedir DIR), or make" \
		"/lib/modules/<release>/build a symbolic link to it."
	exit 1
fi
conf=$kdir/include/config/auto.conf
[ -f "$conf" ] || conf=$kdir/.config
if [ ! -f "$conf" ]; then
	problem "$kdir has no kernel configuration (.config, include/config/auto.conf)" \
		"The tree was never configured and built; build the kernel in it first."
	exit 1
fi
if [ "$(config RUST)" != y ]; then
	problem "the kernel in $kdir was built without Rust support (CONFIG_RUST is not set)" \
		"blktap is written in Rust: it needs a kernel built with CONFIG_RUST=y."
	exit 1
fi
[ "$(config MODULES)" = y ] ||
	problem "the kernel in $kdir does not support loadable modules (CONFIG_MODULES is not set)"

if [ -n "$want_release" ]; then
	release=$(make -s --no-print-directory -C "$kdir" kernelrelease 2>/dev/null || true)
	[ -z "$release" ] || [ "$release" = "$want_release" ] ||
		problem "$kdir is the build tree of kernel $release, not of $want_release" \
			"Give DKMS the build tree of $want_release: dkms build -k $want_release --kernelsourcedir DIR"
fi

# The O= build tree of a kernel includes the source tree's Makefile through its "source" link.
if [ -L "$kdir/source" ] && [ ! -f "$kdir/source/Makefile" ]; then
	problem "$kdir/source points to $(readlink "$kdir/source"), which is not a kernel source tree" \
		"The tree was built with O=; its source tree must stay where it was built from."
fi

# A prepared stock-kernel tree (scripts/prepare-rust-metadata.sh) records the compilers it was
# built with; the module must use the same ones.
prepared_env=$kdir/.blktap-rust-env
if [ -f "$prepared_env" ]; then
	# shellcheck disable=SC1090 # written by prepare-rust-metadata.sh
	. "$prepared_env"
	PATH="$BLKTAP_RUST_PATH:$BLKTAP_BINDGEN_PATH:$PATH"
fi

missing=()
for f in rust/libkernel.rmeta rust/libcore.rmeta rust/libmacros.so scripts/target.json \
	include/generated/rustc_cfg Module.symvers; do
	[ -e "$kdir/$f" ] || missing+=("$f")
done
prepare=0
if [ ${#missing[@]} -gt 0 ]; then
	# A distribution's headers: the metadata can be rebuilt from the kernel's source, with its
	# rustc and bindgen. Check that all of that is there (the build itself comes later, in
	# dkms-make.sh); what is not, prepare-rust-metadata.sh names with the command to install it.
	note "$kdir lacks the kernel's Rust metadata (${missing[*]}): it will be rebuilt from the kernel's source"
	if [ -z "$want_release" ]; then
		problem "which kernel release? the tree has no Rust metadata, so the release is needed to prepare it" \
			"Run: scripts/dkms-preflight.sh $kdir RELEASE"
	elif prep=$("$TOP/scripts/prepare-rust-metadata.sh" --check --headers "$kdir" "$want_release" 2>&1); then
		prepare=1
		[ "$quiet" = 1 ] || printf '%s\n' "$prep"
	else
		printf '%s\n' "$prep" >&2
		problem "the Rust metadata of $want_release cannot be prepared (see above)" \
			"Install what is named above (scripts/stock-kernel.sh deps $want_release does it all), or" \
			"give DKMS the full build tree of the kernel: dkms build ... --kernelsourcedir DIR."
		prepare=1
	fi
fi

# --- the Rust compiler --------------------------------------------------------------------------
kernel_rustc=$(config RUSTC_VERSION_TEXT)
rustc_ver=$(awk '{print $2}' <<<"$kernel_rustc")
install_rustc="rustup toolchain install $rustc_ver && rustup default $rustc_ver (as the user DKMS runs as, usually root), or put that rustc first in PATH"
if [ "$prepare" = 1 ]; then
	: # prepare-rust-metadata.sh chose (and checked) the rustc and bindgen
elif ! command -v rustc >/dev/null 2>&1; then
	problem "rustc not found (PATH: $PATH)" \
		"The kernel was built with '$kernel_rustc'; install exactly that compiler:" \
		"$install_rustc."
else
	have_rustc=$(rustc --version 2>/dev/null || true)
	if [ -z "$kernel_rustc" ]; then
		problem "the configuration of $kdir records no CONFIG_RUSTC_VERSION_TEXT" \
			"blktap needs a Linux 7.3 build tree with CONFIG_RUST=y."
	elif [ "$have_rustc" != "$kernel_rustc" ]; then
		problem "rustc mismatch: the kernel was built with '$kernel_rustc', this rustc is '$have_rustc'" \
			"Rust metadata (.rmeta) only loads into the compiler that wrote it (error E0514" \
			"otherwise). Install that compiler: $install_rustc."
	else
		note "rustc: $have_rustc (as the kernel)"
	fi
fi

# --- the C compiler and linker (kmake.sh passes LLVM= to match the kernel) -----------------------
if [ "$(config CC_IS_CLANG)" = y ]; then
	clang_version=$(config CLANG_VERSION)
	clang_major=$(( ${clang_version:-0} / 10000 ))
	if command -v "clang-$clang_major" >/dev/null 2>&1; then
		cc="clang-$clang_major" ld="ld.lld-$clang_major"
	else
		cc=clang ld=ld.lld
	fi
	have_major=$("$cc" --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\)\..*/\1/p' | head -n1)
	if [ -z "$have_major" ]; then
		problem "clang not found: the kernel was built with $(config CC_VERSION_TEXT)" \
			"Install it: apt-get install clang-$clang_major lld-$clang_major (or LLVM $clang_major from apt.llvm.org)."
	elif [ "$have_major" != "$clang_major" ]; then
		problem "the kernel was built with clang $clang_major, but $cc is clang $have_major" \
			"Install clang $clang_major: apt-get install clang-$clang_major lld-$clang_major."
	else
		note "C compiler: $cc ($(config CC_VERSION_TEXT))"
	fi
	if [ "$(config LD_IS_LLD)" = y ] && ! command -v "$ld" >/dev/null 2>&1; then
		problem "$ld not found: the kernel was linked with LLD" \
			"Install it: apt-get install lld-$clang_major."
	fi
else
	# Compare versions, not texts: the text names the program ("x86_64-linux-gnu-gcc-14 (Debian
	# 14.2.0-19) 14.2.0"), which differs between equal compilers called by another name.
	gcc_text=$(config CC_VERSION_TEXT)
	gcc_num=$(config GCC_VERSION)
	kernel_gcc_major=$(( ${gcc_num:-0} / 10000 ))
	kernel_cc=$(awk '{print $1}' <<<"$gcc_text")
	cc=
	for c in "$kernel_cc" "gcc-$kernel_gcc_major" gcc; do
		if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
	done
	if [ -z "$cc" ]; then
		problem "gcc not found: the kernel was built with $gcc_text" \
			"Install it: apt-get install gcc-$kernel_gcc_major (or gcc)."
	else
		have_major=$("$cc" -dumpversion 2>/dev/null | cut -d. -f1)
		if [ "$have_major" = "$kernel_gcc_major" ]; then
			note "C compiler: $cc (gcc $have_major, as the kernel)"
		elif [ "$prepare" = 1 ]; then
			# The prepared tree is configured with this gcc, so tree and module agree.
			note "C compiler: $cc (gcc $have_major; the kernel's gcc $kernel_gcc_major is not installed: the prepared tree is configured for gcc $have_major)"
		else
			note "warning: the kernel was built with gcc $kernel_gcc_major, $cc is gcc $have_major (apt-get install gcc-$kernel_gcc_major to match)"
		fi
	fi
fi

# --- bindgen / libclang ----------------------------------------------------------------------
# Building an out-of-tree module runs no bindgen: the C bindings come precompiled in the tree
# (rust/libbindings.rmeta). They are only needed if the module generates its own bindings.
if grep -qs bindgen "$TOP/drivers/block/blktap/Kbuild"; then
	srctree=$kdir
	[ -f "$kdir/source/scripts/min-tool-version.sh" ] && srctree=$kdir/source
	min_bindgen=$("$srctree/scripts/min-tool-version.sh" bindgen 2>/dev/null || echo 0)
	min_llvm=$("$srctree/scripts/min-tool-version.sh" llvm 2>/dev/null || echo 0)
	have_bindgen=$(bindgen --version 2>/dev/null | awk '{print $2}')
	if [ -z "$have_bindgen" ] || ! version_ge "$have_bindgen" "$min_bindgen"; then
		problem "bindgen ${have_bindgen:-not found}; this kernel needs bindgen >= $min_bindgen" \
			"Install it: cargo install --locked bindgen-cli (and make it reachable in PATH)."
	fi
	libclang=$(find "${LIBCLANG_PATH:-/usr/lib}" -maxdepth 1 -name 'libclang*.so*' 2>/dev/null |
		sed -n 's/.*libclang-\([0-9.]*\)\.so.*/\1/p' | sort -V | tail -n1)
	if [ -n "$libclang" ] && ! version_ge "$libclang" "$min_llvm"; then
		problem "libclang $libclang is older than $min_llvm, the minimum for bindgen with this kernel" \
			"Install a newer one (apt-get install libclang-19-dev) and set LIBCLANG_PATH to its directory."
	fi
fi

if [ "$failed" = 0 ]; then
	note "$kdir can build blktap.ko"
	exit 0
fi
printf 'blktap preflight: %s cannot build blktap.ko (see above)\n' "$kdir" >&2
exit 1
