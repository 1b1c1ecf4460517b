#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The MAKE and CLEAN commands of dkms.conf:
#
#   scripts/dkms-make.sh KDIR TARGET [KERNELRELEASE] [NAME=VALUE...]
#
# Runs the preflight checks (scripts/dkms-preflight.sh) for "modules", then
# `make -C KDIR M=<this tree> LLVM=<as the kernel> TARGET` through scripts/kmake.sh.
# When KDIR is a distribution's headers tree without Rust metadata (Debian's
# linux-headers-*), the metadata is prepared first (scripts/prepare-rust-metadata.sh: once per
# kernel and toolchain, from the installed linux-source, never downloading) and the module is
# built in that prepared tree, with the rustc and bindgen it records. `make KVER=RELEASE` runs
# this script too.
# DKMS appends CC=clang / LD=ld.lld when the kernel was built with clang or LLD; those would
# select the default clang instead of the one the kernel used, so they are dropped: kmake.sh
# passes the kernel's LLVM= setting, which selects the compiler and linker.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

kdir=${1:?usage: dkms-make.sh KDIR TARGET [KERNELRELEASE] [NAME=VALUE...]}
target=${2:?usage: dkms-make.sh KDIR TARGET [KERNELRELEASE] [NAME=VALUE...]}
shift 2
release=
if [ $# -gt 0 ] && [ "${1#*=}" = "$1" ]; then release=$1; shift; fi
args=()
for a in "$@"; do
	case "$a" in
	CC=* | LD=*) log "dkms-make: ignoring $a (LLVM= follows the kernel's compiler)" ;;
	*) args+=("$a") ;;
	esac
done
has_metadata() { [ -e "$1/rust/libkernel.rmeta" ] && [ -e "$1/scripts/target.json" ]; }
if [ "$target" = modules ]; then
	"$TOP/scripts/dkms-preflight.sh" "$kdir" ${release:+"$release"}
	if ! has_metadata "$kdir"; then
		kdir=$("$TOP/scripts/prepare-rust-metadata.sh" --headers "$kdir" ${KSOURCE:+--source "$KSOURCE"} "$release") ||
			die "the Rust metadata of $release could not be prepared (see above)"
		log "building in the prepared tree $kdir"
	fi
elif ! has_metadata "$kdir"; then
	# "clean" on a headers tree: kbuild cannot run there, and only our own products need to go.
	(cd "$TOP" && find drivers \( -name '*.o' -o -name '*.ko' -o -name '*.mod' -o -name '*.mod.c' \
		-o -name '.*.cmd' -o -name 'modules.order' \) -type f -delete; rm -f Module.symvers modules.order)
	exit 0
fi
# A prepared tree was built with a pinned rustc (and RUSTC_FORCE_RUSTC_VERSION): so is the module.
if [ -f "$kdir/.blktap-rust-env" ]; then
	# shellcheck disable=SC1091 # written by prepare-rust-metadata.sh
	. "$kdir/.blktap-rust-env"
	# On make's command line: kmake.sh puts ~/.cargo/bin (rustup's default rustc) first in PATH.
	args+=(RUSTC="$BLKTAP_RUST_PATH/rustc" HOSTRUSTC="$BLKTAP_RUST_PATH/rustc"
		RUSTDOC="$BLKTAP_RUST_PATH/rustdoc" BINDGEN="$BLKTAP_BINDGEN_PATH/bindgen")
	if [ -n "$BLKTAP_RUSTC_FORCE_RUSTC_VERSION" ]; then
		export RUSTC_FORCE_RUSTC_VERSION=$BLKTAP_RUSTC_FORCE_RUSTC_VERSION
	else
		# Set but empty, rustc would hash "" as its version into the module's symbol names.
		unset RUSTC_FORCE_RUSTC_VERSION
	fi
fi
KDIR=$kdir exec "$TOP/scripts/kmake.sh" "$target" "${args[@]}"
