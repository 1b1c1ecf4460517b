#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The MAKE and CLEAN commands of dkms.conf:
#
#   scripts/dkms-make.sh KDIR TARGET [KERNELRELEASE] [NAME=VALUE...]
#
# Runs the preflight checks (scripts/dkms-preflight.sh) for "modules", then
# `make -C KDIR M=<this tree> LLVM=<as the kernel> TARGET` through scripts/kmake.sh.
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
if [ "$target" = modules ]; then
	"$TOP/scripts/dkms-preflight.sh" "$kdir" ${release:+"$release"}
fi
KDIR=$kdir exec "$TOP/scripts/kmake.sh" "$target" "${args[@]}"
