#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The module on Debian's stock kernel, end to end: build it through the DKMS path for the
# stock kernel's headers (which carry no Rust metadata), then boot the stock, signed vmlinuz
# in QEMU and run the selftests that need nothing the stock kernel lacks.
#
#   scripts/test-stock-kernel.sh [--release RELEASE|all] [--tests "LIST"] [--no-vm] [--keep]
#
#   --release R   the Debian kernel (default 7.3.4+deb13-amd64, from trixie-backports;
#                 7.2.13+deb14-amd64 is sid's); "all": each of those two in turn (the
#                 Debian rows of the supported-kernels table), as KTAP subtests
#   --tests LIST  VM selftests (default: module_01 abi_01 data_01 data_02 ro_01 teardown_01
#                 fault_01 fs_01 module_03: load/unload, ABI ioctls, fio verify on mem and
#                 file, read-only, teardown, daemon death, ext4 from the stock ext4.ko, an open
#                 control device pins the module)
#   --no-vm       stop after the build and the checks on the built module
#   --keep        keep the work directory (printed)
#
# Steps: Debian's packages of the kernel (image, modules, headers, kbuild, source) are fetched
# into the cache and unpacked into a private root (scripts/stock-kernel.sh fetch); the kernel's
# rustc (rustup) and bindgen (cargo) are installed into the cache if missing (the install
# step: DKMS itself downloads nothing). The preflight must accept the headers and reject, with
# the fix, a CONFIG_RUST=n kernel, a source of another version and a missing rustc. Then
# `dkms add/build/install` on private trees (no /usr/src, /var/lib/dkms, /lib/modules of the
# host touched), with the headers as the kernel source dir: dkms-make.sh prepares the Rust
# metadata from the linux-source tarball (cached) and builds blktap.ko there. The module must
# carry the stock vermagic and import only symbols the stock kernel exports. `dkms autoinstall`
# (what a kernel upgrade runs) rebuilds it. The VM boots the stock vmlinuz with the busybox
# initramfs, the module DKMS installed and the stock modules the tests need (decompressed
# from linux-modules), and runs the selftests; a kernel splat fails the test it happened in.
#
# Prints KTAP; the last line is "stock: N passed, N failed"; exit status 0 if nothing failed.
# Needs root (dkms, like scripts/test-dkms.sh).
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

release=7.3.4+deb13-amd64
tests="module_01 abi_01 data_01 data_02 ro_01 teardown_01 fault_01 fs_01 module_03"
vm=1
keep=0
while [ $# -gt 0 ]; do
	case "$1" in
	--release) release=${2:?}; shift 2 ;;
	--tests) tests=${2?}; shift 2 ;;
	--no-vm) vm=0; shift ;;
	--keep) keep=1; shift ;;
	*) sed -n '8,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done

if [ "$release" = all ]; then
	# One subtest per release: its KTAP indented, its line "stock: N passed, N failed" summed.
	args=(--tests "$tests")
	[ "$vm" = 1 ] || args+=(--no-vm)
	[ "$keep" = 0 ] || args+=(--keep)
	echo "TAP version 13"
	i=0 passed=0 failed=0 bad=0
	for r in 7.3.4+deb13-amd64 7.2.13+deb14-amd64; do
		i=$((i + 1))
		out=$(mktemp)
		"$0" --release "$r" "${args[@]}" | tee "$out" | sed -u 's/^/    /'
		rc=${PIPESTATUS[0]}
		read -r p f < <(sed -n 's/^stock: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out" | tail -n1)
		rm -f "$out"
		passed=$((passed + ${p:-0})) failed=$((failed + ${f:-1}))
		if [ "$rc" = 0 ]; then echo "ok $i $r"; else bad=$((bad + 1)); echo "not ok $i $r"; fi
	done
	echo "1..$i"
	echo "# all releases"
	echo "stock: $passed passed, $failed failed"
	[ "$bad" = 0 ]
	exit
fi

# shellcheck source=scripts/ktap.sh
. "$TOP/scripts/ktap.sh"
finish() { ktap_finish stock; }
bail() { ktap_bail stock "$@"; }
echo "# stock kernel $release"
t_start=$SECONDS
work=
[ "$(id -u)" = 0 ] || bail "needs root (dkms)"
command -v dkms >/dev/null || bail "dkms is not installed (apt-get install dkms)"
work=$(mktemp -d "${TMPDIR:-/tmp}/blktap-stock.XXXXXX")
mkdir -p "$work/log" "$work/src" "$work/dkms" "$work/lib/modules/$release"
trees=(--sourcetree "$work/src" --dkmstree "$work/dkms" --installtree "$work/lib/modules")
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
mod=(-m blktap -v "$version")
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	[ -n "${work:-}" ] || return 0
	if [ "$keep" = 1 ]; then echo "# kept $work (dkms trees in it)"; return 0; fi
	if dkms status "${trees[@]}" "${mod[@]}" 2>/dev/null | grep -q .; then
		dkms remove "${trees[@]}" "${mod[@]}" --all --no-depmod >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# --- the stock kernel's packages and toolchain ------------------------------------------------
t0=$SECONDS
root=$("$TOP/scripts/stock-kernel.sh" fetch "$release" 2> "$work/log/fetch") ||
	bail "fetch Debian's packages of $release" "$work/log/fetch"
ok "Debian's packages of $release in $root ($((SECONDS - t0)) s)"
headers=$root/usr/lib/modules/$release/build
series=$(sed -n 's/^VERSION = //p; s/^PATCHLEVEL = //p' "$root/usr/src/linux-headers-${release%-amd64}-common/Makefile" | paste -sd.)
tarball=$(find "$root/usr/src" -maxdepth 1 -name "linux-source-$series.tar.*" | head -n1)
vmlinuz=$root/usr/lib/modules/$release/vmlinuz
t0=$SECONDS
if "$TOP/scripts/stock-kernel.sh" tools "$release" > "$work/log/tools" 2>&1; then
	ok "the kernel's rustc and bindgen are installed ($((SECONDS - t0)) s)"
else
	not_ok "install the kernel's rustc and bindgen" "$work/log/tools"
fi
export KSOURCE=$tarball

# --- preflight: accepts the headers, rejects what cannot work with the fix ---------------------
if "$TOP/scripts/dkms-preflight.sh" "$headers" "$release" > "$work/log/preflight" 2>&1; then
	ok "preflight accepts the headers of $release (metadata to be prepared from $(basename "$tarball"))"
else
	not_ok "preflight accepts the headers of $release" "$work/log/preflight"
fi
# expect_reject NAME PATTERN COMMAND...: the command fails and its output matches PATTERN.
expect_reject() {
	local name=$1 pat=$2
	shift 2
	if ! "$@" > "$work/log/$name" 2>&1 && grep -qE -- "$pat" "$work/log/$name"; then
		ok "preflight rejects $name and says: $(grep -m1 -E -- "$pat" "$work/log/$name" | sed 's/^ *//' | cut -c1-110)"
	else
		not_ok "preflight rejects $name (expected /$pat/)" "$work/log/$name"
	fi
}
norust=$work/norust
mkdir -p "$norust"
sed 's/^CONFIG_RUST=y/# CONFIG_RUST is not set/' "$headers/.config" > "$norust/.config"
printf 'kernelrelease:\n\t@echo %s\n' "$release" > "$norust/Makefile"
expect_reject "a CONFIG_RUST=n kernel" 'built without Rust support' \
	"$TOP/scripts/dkms-preflight.sh" "$norust" "$release"
other=$work/other-source
mkdir -p "$other"
echo "0.0.0-1" > "$other/.blktap-package-version"
expect_reject "a source of another version" 'install linux-source-[0-9.]+=' \
	env KSOURCE="$other" "$TOP/scripts/dkms-preflight.sh" "$headers" "$release"
mkdir -p "$work/empty-home" "$work/bin"
expect_reject "a missing rustc" 'rustup toolchain install [0-9.]+ ' \
	env HOME="$work/empty-home" RUSTUP_HOME="$work/empty-home" PATH="$work/bin:/usr/bin:/bin" \
	"$TOP/scripts/dkms-preflight.sh" "$headers" "$release"
# A bindgen of another version first in PATH (another HOME: the scripts put ~/.cargo/bin first),
# and none in the toolchain cache.
mkdir -p "$work/oldbindgen"
printf '#!/bin/sh\necho "bindgen 0.1.0"\n' > "$work/oldbindgen/bindgen"
chmod +x "$work/oldbindgen/bindgen"
expect_reject "a mismatched bindgen" 'cargo install --locked bindgen-cli@[0-9.]+ ' \
	env HOME="$work/empty-home" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" BLKTAP_CACHE="$CACHE_DIR" \
	PATH="$work/oldbindgen:$PATH" BLKTAP_TOOLCHAINS="$work/no-toolchains" \
	"$TOP/scripts/dkms-preflight.sh" "$headers" "$release"
expect_reject "missing headers" "apt-get install linux-headers-" \
	"$TOP/scripts/prepare-rust-metadata.sh" --headers "$work/nothing" "$release"

# --- DKMS ---------------------------------------------------------------------------------------
"$TOP/scripts/install.sh" dkms-source "$work/src/blktap-$version" > /dev/null
kopt=(-k "$release" --kernelsourcedir "$headers")
# No signing here: with a sign-file in reach dkms would make a MOK key pair in /var/lib/dkms
# (the stock kernel loads unsigned modules, tainted, unless Secure Boot is on).
export sign_file=/nonexistent/blktap-test-sign-file
dkms_step add dkms add "${trees[@]}" "${mod[@]}"
dkms_step build dkms build "${trees[@]}" "${mod[@]}" "${kopt[@]}"
mlog=$(find "$work/dkms" -name make.log 2>/dev/null | head -n1)
if [ -n "$mlog" ]; then
	grep -aE 'blktap prepare: (prepared|preparing)|building in the prepared tree' "$mlog" | sed 's/^/# /'
fi
dkms_step install dkms install "${trees[@]}" "${mod[@]}" "${kopt[@]}" --no-depmod
installed=$(find "$work/lib/modules/$release" -name 'blktap.ko*' 2>/dev/null | head -n1)
ko=$work/blktap.ko
case "$installed" in
*.ko.xz) xz -dc "$installed" > "$ko" ;;
*.ko.zst) zstd -qdc "$installed" > "$ko" ;;
*.ko) cp "$installed" "$ko" ;;
*) bail "dkms installed no blktap.ko under $work/lib/modules/$release" ;;
esac

# --- the module fits the stock kernel -----------------------------------------------------------
loop_ko=$(find "$root/usr/lib/modules/$release/kernel/drivers/block" -name 'loop.ko*' | head -n1)
stock_magic=$(modinfo -F vermagic "$loop_ko" 2>/dev/null)
our_magic=$(modinfo -F vermagic "$ko" 2>/dev/null)
if [ -n "$stock_magic" ] && [ "$our_magic" = "$stock_magic" ]; then
	ok "vermagic '$our_magic' equals the stock loop.ko's"
else
	echo "# ours: '$our_magic', stock loop.ko: '$stock_magic'"
	not_ok "vermagic equals the stock modules'"
fi
# Every symbol the module imports must be exported by the stock kernel (vmlinux exports, by
# name: the kernel has no MODVERSIONS); a Rust crate-hash mismatch shows up here first.
nm -u "$ko" | awk '{print $2}' | sort -u > "$work/imports"
awk '{print $2}' "$headers/Module.symvers" | sort -u > "$work/exports"
comm -23 "$work/imports" "$work/exports" > "$work/unresolved"
if [ ! -s "$work/unresolved" ] && [ -s "$work/imports" ]; then
	ok "all $(wc -l < "$work/imports") imported symbols are exported by the stock kernel"
else
	not_ok "imported symbols not exported by the stock kernel: $(head -n3 "$work/unresolved" | paste -sd' ')"
fi

# Without DKMS: `make KVER=...` in a source tree goes the same way (preflight, the prepared
# metadata from the cache, the build).
rsync -a --exclude=/.git --exclude=/tools --exclude=/results --exclude='*.o' --exclude='*.ko' \
	--exclude='.*.cmd' "$TOP/" "$work/make-src/"
if make -C "$work/make-src" modules KVER="$release" KHEADERS="$headers" KSOURCE="$tarball" \
	> "$work/log/make-kver" 2>&1 &&
	[ "$(modinfo -F vermagic "$work/make-src/drivers/block/blktap/blktap.ko" 2>/dev/null)" = "$stock_magic" ]; then
	ok "make KVER=$release builds blktap.ko with the stock vermagic"
else
	not_ok "make KVER=$release builds blktap.ko with the stock vermagic" "$work/log/make-kver"
fi

# What a kernel upgrade runs: dkms autoinstall builds and installs every AUTOINSTALL module
# registered (added) but not yet built for the new kernel.
dkms remove "${trees[@]}" "${mod[@]}" -k "$release" --no-depmod > "$work/log/remove-k" 2>&1
dkms add "${trees[@]}" "${mod[@]}" >> "$work/log/remove-k" 2>&1
t0=$SECONDS
if dkms autoinstall "${trees[@]}" "${kopt[@]}" --no-depmod > "$work/log/autoinstall" 2>&1 &&
	[ -n "$(find "$work/lib/modules/$release" -name 'blktap.ko*')" ]; then
	ok "dkms autoinstall (a kernel upgrade) rebuilt and installed blktap.ko ($((SECONDS - t0)) s)"
else
	not_ok "dkms autoinstall (a kernel upgrade) rebuilt and installed blktap.ko" "$work/log/autoinstall"
fi

# --- the stock kernel in the VM -----------------------------------------------------------------
# stock_modules NAME...: the stock modules and their dependencies, in load order, decompressed
# into $work/mods; prints their names.
stock_modules() {
	local mroot=$work/modroot names=() m dep path
	if [ ! -f "$mroot/lib/modules/$release/modules.dep" ]; then
		mkdir -p "$mroot/lib/modules"
		ln -sfn "$root/usr/lib/modules/$release" "$mroot/lib/modules/$release"
		# depmod writes its index next to the modules: into a copy of the symlink's target dir.
		rm -f "$mroot/lib/modules/$release"
		mkdir -p "$mroot/lib/modules/$release"
		ln -s "$root/usr/lib/modules/$release/kernel" "$mroot/lib/modules/$release/kernel"
		depmod -b "$mroot" "$release" 2>/dev/null
	fi
	mkdir -p "$work/mods"
	for m in "$@"; do
		# modprobe's view of the dependencies, deepest first.
		while read -r _ path; do
			dep=$(basename "$path"); dep=${dep%%.ko*}
			case " ${names[*]} " in *" $dep "*) continue ;; esac
			case "$path" in
			*.xz) xz -dc "$path" > "$work/mods/$dep.ko" ;;
			*.zst) zstd -qdc "$path" > "$work/mods/$dep.ko" ;;
			*) cp "$path" "$work/mods/$dep.ko" ;;
			esac
			names+=("$dep")
		done < <(modprobe -d "$mroot" -S "$release" --show-depends "$m" 2>/dev/null | grep '^insmod ')
	done
	echo "${names[@]}"
}
if [ "$vm" = 0 ]; then
	skip "stock vmlinuz in QEMU" "--no-vm"
	finish
fi
# vm-run.sh boots KDIR/arch/x86/boot/bzImage: a tree holding only the stock vmlinuz.
mkdir -p "$work/kdir/arch/x86/boot"
ln -s "$vmlinuz" "$work/kdir/arch/x86/boot/bzImage"
# The stock modules the selected tests need: ext4 for those that make a file system.
need=()
for t in $tests; do
	if grep -qs mkfs.ext4 "$TOP"/tests/test_"$t"_*.sh; then need+=(ext4); break; fi
done
mods=$(stock_modules "${need[@]}")
vm_mods=(--module "$ko")
for m in $mods; do vm_mods+=(--module "$work/mods/$m.ko"); done
bin=$TOP/tools/target/x86_64-unknown-linux-gnu/release
if [ ! -x "$bin/blktap-test" ] || [ ! -x "$bin/blktapd" ] || [ ! -x "$bin/blktap-ctl" ]; then
	(cd "$TOP/tools" && cargo build --release --target x86_64-unknown-linux-gnu) > "$work/log/tools-build" 2>&1 ||
		bail "build the userspace (make tools)" "$work/log/tools-build"
fi
[ -z "$mods" ] || echo "# stock modules preloaded: $mods"
t0=$SECONDS
# The stock kernel prints its taint notes for an out-of-tree, unsigned module; nothing else may show.
"$TOP/scripts/vm-run.sh" --kdir "$work/kdir" "${vm_mods[@]}" \
	--bin "$bin/blktapd" --bin "$bin/blktap-ctl" --bin "$bin/blktap-test" \
	--tests "$tests" --timeout 1800 --results "$work/vm" --quiet \
	${mods:+--append "blktap.insmod=$(tr ' ' ',' <<<"$mods")"} > "$work/log/vm" 2>&1
vm_rc=$?
# The VM's own KTAP lines become test points here.
while IFS= read -r l; do
	case "$l" in
	"ok "*) ok "vm: ${l#ok [0-9]* }" ;;
	"not ok "*) not_ok "vm: ${l#not ok [0-9]* }" ;;
	"# "*) echo "$l" ;;
	esac
done < <(sed -n '/^TAP version/,$p' "$work/log/vm" | grep -E '^(ok|not ok) [0-9]+ |^# ')
grep -E '^vm: ' "$work/log/vm" | sed 's/^/# /'
if [ "$vm_rc" = 0 ]; then
	ok "stock vmlinuz $release ran the selftests with a clean kernel log ($((SECONDS - t0)) s)"
else
	not_ok "stock vmlinuz $release: the VM run failed (rc=$vm_rc)" "$work/log/vm"
	[ "$keep" = 1 ] || cp "$work/vm/console.log" "${TMPDIR:-/tmp}/blktap-stock-console.log" 2>/dev/null &&
		echo "# console log: ${TMPDIR:-/tmp}/blktap-stock-console.log"
fi

# --- dkms remove --------------------------------------------------------------------------------
if dkms remove "${trees[@]}" "${mod[@]}" --all --no-depmod > "$work/log/remove" 2>&1 &&
	[ -z "$(find "$work/lib/modules" -name 'blktap.ko*')" ]; then
	ok "dkms remove --all"
else
	not_ok "dkms remove --all" "$work/log/remove"
fi
echo "# total $((SECONDS - t_start)) s"
finish
