#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs kbuild for the out-of-tree module: make -C $KDIR M=<top> LLVM=<as the kernel> "$@".
# KDIR defaults to the cached debug test kernel (built on first use).
set -euo pipefail
. "$(dirname "$0")/common.sh"

kdir=${KDIR:-$("$TOP/scripts/build-kernel.sh" "${FLAVOUR:-debug}")}
[ -f "$kdir/Makefile" ] || die "KDIR=$kdir is not a kernel build tree"
for f in rust/libkernel.rmeta rust/libmacros.so scripts/target.json Module.symvers; do
	[ -e "$kdir/$f" ] || die "KDIR=$kdir lacks $f: it needs a full CONFIG_RUST=y kernel build (distro headers carry no Rust metadata)"
done
# Modules must be built with the compiler the kernel was built with.
llvm=()
if grep -q '^CONFIG_CC_IS_CLANG=y' "$kdir/include/config/auto.conf"; then
	ver=$(sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9]\{4\}$/\1/p' "$kdir/include/config/auto.conf")
	if command -v "clang-$ver" >/dev/null; then llvm=(LLVM="-$ver"); else llvm=(LLVM=1); fi
fi
exec make -C "$kdir" M="$TOP" "${llvm[@]}" "$@"
