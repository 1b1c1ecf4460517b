#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Tests the DKMS packaging with Debian's dkms, against the cached test kernel:
#
#   scripts/test-dkms.sh [--no-vm] [--keep]
#
#   --no-vm   do not boot the VM that loads the installed module
#   --keep    keep the work directory (printed) for inspection
#
# The preflight script accepts the test kernel tree and rejects a tree without Rust metadata
# and a mismatched rustc; then `dkms add`, `dkms build` and `dkms install` of the source tree
# that `scripts/install.sh dkms-source` makes, against the kernel build tree (KDIR, default:
# the newest finished debug tree in the cache; a kernel is never built from here); the
# installed blktap.ko is indexed by depmod and loads in the VM (tests/test_module_01);
# `dkms remove` takes everything away again.
#
# dkms runs on private trees in a temporary directory (--sourcetree, --dkmstree and
# --installtree instead of /usr/src, /var/lib/dkms and /lib/modules), so the test leaves
# nothing on the host and can run any number of times; `make dkms-install` does the same on
# the real paths.
#
# Prints KTAP; exit status 0 if every step passed, 1 otherwise.
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

vm=1
keep=0
for a in "$@"; do
	case "$a" in
	--no-vm) vm=0 ;;
	--keep) keep=1 ;;
	*) sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done

# shellcheck source=scripts/ktap.sh
. "$TOP/scripts/ktap.sh"
bail() { ktap_bail "# dkms" "$@"; }
command -v dkms >/dev/null || bail "dkms is not installed (apt-get install dkms)"
[ "$(id -u)" = 0 ] || bail "dkms needs root"

kdir=${KDIR:-}
if [ -z "$kdir" ]; then
	# shellcheck disable=SC2012 # cache paths are ours
	stamp=$(ls -1t "$CACHE_DIR"/build/debug-*/.blktap-built 2>/dev/null | head -n1 || true)
	[ -n "$stamp" ] || bail "no test kernel: set KDIR or run scripts/build-kernel.sh debug"
	kdir=$(dirname "$stamp")
fi
release=$(make -s --no-print-directory -C "$kdir" kernelrelease 2>/dev/null) || bail "cannot get the kernel release of $kdir"
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
echo "# kernel $release in $kdir; blktap $version"

work=$(mktemp -d "${TMPDIR:-/tmp}/blktap-dkms.XXXXXX")
mkdir -p "$work/src" "$work/dkms" "$work/lib/modules/$release" "$work/log"
trees=(--sourcetree "$work/src" --dkmstree "$work/dkms" --installtree "$work/lib/modules")
mod=(-m blktap -v "$version")
kopt=(-k "$release" --kernelsourcedir "$kdir")
# No module signing here: with a sign-file in reach, dkms would create a key pair in
# /var/lib/dkms (the test kernel does not check signatures anyway).
export sign_file=/nonexistent/blktap-test-sign-file
cleanup() {
	if dkms status "${trees[@]}" "${mod[@]}" 2>/dev/null | grep -q .; then
		dkms remove "${trees[@]}" "${mod[@]}" --all --no-depmod >/dev/null 2>&1 || true
	fi
	if [ "$keep" = 1 ]; then echo "# kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- preflight --------------------------------------------------------------------------------
if "$TOP/scripts/dkms-preflight.sh" --quiet "$kdir" "$release" > "$work/log/preflight" 2>&1; then
	ok "preflight accepts $kdir"
else
	not_ok "preflight accepts $kdir" "$work/log/preflight"
fi

# A tree as a distribution headers package has it: configured, Module.symvers, no rust/.
fake=$work/headers
mkdir -p "$fake/include/config" "$fake/scripts"
cp "$kdir/.config" "$kdir/Module.symvers" "$fake/"
cp "$kdir/include/config/auto.conf" "$fake/include/config/"
printf 'kernelrelease:\n\t@echo %s\n' "$release" > "$fake/Makefile"
if ! "$TOP/scripts/dkms-preflight.sh" "$fake" "$release" > "$work/log/headers" 2>&1 &&
	grep -q 'lacks .*rust/libkernel.rmeta' "$work/log/headers" &&
	grep -q 'linux-headers' "$work/log/headers"; then
	ok "preflight rejects a tree without Rust metadata, naming what is missing"
else
	not_ok "preflight rejects a tree without Rust metadata, naming what is missing" "$work/log/headers"
fi

# The real tree, but another rustc first in PATH (HOME moved so ~/.cargo/bin is not searched).
mkdir -p "$work/bin" "$work/home"
printf '#!/bin/sh\necho "rustc 1.80.0 (051478957 2024-07-21)"\n' > "$work/bin/rustc"
chmod +x "$work/bin/rustc"
if ! HOME=$work/home PATH="$work/bin:$PATH" "$TOP/scripts/dkms-preflight.sh" "$kdir" \
	> "$work/log/rustc" 2>&1 && grep -q 'rustc mismatch' "$work/log/rustc" &&
	grep -q 'rustup toolchain install' "$work/log/rustc"; then
	ok "preflight rejects a different rustc and says which one to install"
else
	not_ok "preflight rejects a different rustc and says which one to install" "$work/log/rustc"
fi

# --- dkms add, build, install -----------------------------------------------------------------
"$TOP/scripts/install.sh" dkms-source "$work/src/blktap-$version" > /dev/null
installed=$work/lib/modules/$release/updates/dkms/blktap.ko
if dkms_step add dkms add "${trees[@]}" "${mod[@]}"; then
	dkms_step build dkms build "${trees[@]}" "${mod[@]}" "${kopt[@]}"
else
	not_ok "dkms build # not attempted: add failed"
fi
if [ -f "$(find "$work/dkms" -path '*/module/blktap.ko' 2>/dev/null | head -n1)" ]; then
	dkms_step install dkms install "${trees[@]}" "${mod[@]}" "${kopt[@]}" --no-depmod
else
	not_ok "dkms install # not attempted: nothing was built"
fi

if [ -f "$installed" ] &&
	[ "$(modinfo -F name "$installed" 2>/dev/null)" = blktap ] &&
	modinfo -F vermagic "$installed" 2>/dev/null | grep -q "^$release "; then
	ok "installed $installed (vermagic $release)"
else
	{ ls -lR "$work/lib/modules" && modinfo "$installed"; } > "$work/log/modinfo" 2>&1
	not_ok "installed module in updates/dkms with the kernel's vermagic" "$work/log/modinfo"
fi

if depmod -b "$work" "$release" > "$work/log/depmod" 2>&1 &&
	modprobe -d "$work" -S "$release" --show-depends blktap 2>> "$work/log/depmod" |
	grep -q "updates/dkms/blktap.ko"; then
	ok "depmod indexes it (modprobe resolves blktap to updates/dkms/blktap.ko)"
else
	not_ok "depmod indexes it" "$work/log/depmod"
fi

# --- the installed module in the VM -------------------------------------------------------------
if [ "$vm" = 0 ]; then
	skip "installed blktap.ko loads in the VM" "--no-vm"
elif [ ! -f "$installed" ]; then
	not_ok "installed blktap.ko loads in the VM # nothing installed"
elif [ ! -f "$kdir/arch/x86/boot/bzImage" ]; then
	skip "installed blktap.ko loads in the VM" "no bzImage in $kdir"
else
	t0=$SECONDS
	if "$TOP/scripts/vm-run.sh" --kdir "$kdir" --module "$installed" --tests module_01 \
		--results "$work/vm" --quiet > "$work/log/vm" 2>&1 &&
		grep -qE '^ok [0-9]+ .*module_01' "$work/log/vm"; then
		ok "installed blktap.ko loads and unloads in the VM (module_01, $((SECONDS - t0)) s)"
	else
		not_ok "installed blktap.ko loads and unloads in the VM" "$work/log/vm"
	fi
fi

# --- dkms remove --------------------------------------------------------------------------------
if dkms remove "${trees[@]}" "${mod[@]}" --all --no-depmod > "$work/log/remove" 2>&1 &&
	[ ! -e "$installed" ] && ! dkms status "${trees[@]}" "${mod[@]}" 2>/dev/null | grep -q .; then
	ok "dkms remove --all (module and registration gone)"
else
	not_ok "dkms remove --all (module and registration gone)" "$work/log/remove"
fi

ktap_finish "# dkms"
