#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) a test kernel of the given flavour ("debug", "perf" or "xen") and print its build
# tree. A flavour is scripts/kconfig/base.config plus <flavour>.config; a flavour fragment whose
# first lines hold "# Extends: <other>" is merged after that other flavour's fragment, and its
# settings win (xen.config is debug.config minus KASAN).
# The tree lives in the cache, keyed by kernel version, config fragments and toolchain versions, so
# a rebuild happens only when one of those changes. Only one kernel build runs at a time (flock).
set -euo pipefail
. "$(dirname "$0")/common.sh"

flavour=${1:-debug}
frag_dir="$TOP/scripts/kconfig"
[ -f "$frag_dir/$flavour.config" ] || die "unknown kernel flavour '$flavour' (debug, perf or xen)"

# The fragments of a flavour, in merge order.
fragments=("$frag_dir/$flavour.config")
while parent=$(sed -n 's/^# Extends: \([a-z0-9]*\)$/\1/p' "${fragments[0]}") && [ -n "$parent" ]; do
	[ -f "$frag_dir/$parent.config" ] || die "${fragments[0]} extends unknown flavour '$parent'"
	[ ${#fragments[@]} -lt 8 ] || die "kernel flavour '$flavour' extends itself"
	fragments=("$frag_dir/$parent.config" "${fragments[@]}")
done
fragments=("$frag_dir/base.config" "${fragments[@]}")

ksrc=$("$TOP/scripts/fetch-kernel.sh")
kver=$(make -s --no-print-directory -C "$ksrc" kernelversion 2>/dev/null)
toolchain=$(rustc --version; bindgen --version 2>&1 | head -n1; "clang$LLVM_SUFFIX" --version | head -n1)
key=$( { echo "$kver"; cat "${fragments[@]}"; echo "$toolchain"; echo "LLVM=$LLVM_SUFFIX"; } \
	| sha256sum | cut -c1-16)
out="$CACHE_DIR/build/$flavour-$kver-$key"
if [ -f "$out/.blktap-built" ]; then echo "$out"; exit 0; fi

mkdir -p "$CACHE_DIR/build"
exec 9>"$CACHE_DIR/build/.lock"
log "waiting for the kernel build lock" ; flock 9
if [ -f "$out/.blktap-built" ]; then echo "$out"; exit 0; fi

mk=(make -C "$ksrc" O="$out" ARCH=x86_64 LLVM="$LLVM_SUFFIX")
log "configuring $flavour kernel $kver in $out"
mkdir -p "$out"
"${mk[@]}" -s tinyconfig >/dev/null
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}" >/dev/null
"${mk[@]}" -s olddefconfig >/dev/null
if ! grep -q '^CONFIG_RUST=y' "$out/.config"; then
	"${mk[@]}" rustavailable || true
	die "CONFIG_RUST was dropped by Kconfig: the Rust toolchain check above says why."
fi
# Every option of the fragments must survive olddefconfig; a silent drop (KASAN without clang,
# KASAN with SLUB_TINY, ...) would leave us testing less than we think. Of an option set by
# several fragments, the last setting counts (as in merge_config.sh).
missing=$(grep -hE '^(CONFIG_[A-Z0-9_]+=.*|# CONFIG_[A-Z0-9_]+ is not set)$' "${fragments[@]}" |
	awk '{ opt = ($1 == "#") ? $2 : substr($0, 1, index($0, "=") - 1); if (!(opt in last)) order[n++] = opt; last[opt] = $0 }
	     END { for (i = 0; i < n; i++) print last[order[i]] }' | while read -r line; do
		case "$line" in
		"# "*) opt=${line#\# }; opt=${opt%% *}
		       ! grep -qE "^$opt=[ym]" "$out/.config" || echo "  $line" ;;
		*)     grep -qxF -- "$line" "$out/.config" || echo "  $line" ;;
		esac; done)
[ -z "$missing" ] || die "config options dropped by Kconfig:
$missing"

log "building $flavour kernel (about 10-12 minutes on 2 cores)"
start=$(date +%s)
"${mk[@]}" -j"$(nproc)" bzImage modules > "$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; die "kernel build failed (log: $out/build.log)"; }
log "kernel built in $(( $(date +%s) - start )) s"
touch "$out/.blktap-built"
echo "$out"
