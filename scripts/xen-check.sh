#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make xen-check`: the Xen end-to-end suite. Boots Xen 4.17 (Debian's hypervisor package) under
# QEMU TCG with one of our kernels as PV dom0 and a debootstrap'd Debian bookworm with xl as its
# user space, and runs the cases of tests/xen/cases.sh there: PV and PVH guests (the same kernel,
# with xen-blkfront) on disks served through blktap.ko by blktapd and by the real tapdisk 3.55.5,
# handed to them by xen-blkback as phy:/dev/xen/blktap-2/tapdevN.
#
#   scripts/xen-check.sh [--flavour bookworm|trixie] [--cases "a b"] [--timeout SECS]
#                        [--results DIR] [--keep] [--setup-only] [--shell]
#
#   --flavour F      bookworm (default, `make xen-check`): as above; trixie (`make
#                    xen-check-trixie`): a Debian 13 host as its administrator builds it, see below
#   --cases LIST     cases of tests/xen/cases.sh to run (default: all)
#   --timeout SECS   limit for the whole QEMU run (default 2400)
#   --results DIR    where the logs go (default: $BLKTAP_RESULTS/xen, else results/xen)
#   --keep           keep the dom0 initramfs of the run in the results directory
#   --setup-only     build and fetch everything, boot nothing
#   --shell          boot to a root shell in dom0 on the console (Ctrl-A X quits QEMU)
#
# Kernel: $BLKTAP_XEN_KDIR (a build tree with the Xen dom0 options), else the "xen" test kernel
# flavour (scripts/kconfig/xen.config): the debug kernel's checkers (lockdep, atomic-sleep checks,
# Rust debug assertions, KFENCE) minus KASAN. A KASAN kernel cannot boot under Xen: the 7.3
# kernel's Xen PV and PVH entry code (arch/x86/xen, instrumented) touches KASAN shadow memory
# before it exists and the domain dies at once (#PF at a 0xfffffbff... address in
# xen_start_kernel / xen_pvh_init).
#
# The trixie flavour: Debian 13's Xen 4.20 (hypervisor and tools from its packages) with the
# stock signed 7.3.4+deb13-amd64 kernel of trixie-backports as dom0 and guest kernel, and
# blktap-rs installed in dom0 from the project's .deb packages (scripts/deb.sh) with apt:
# tests/xen/trixie-install.sh runs the admin guide's steps in the chroot that becomes dom0, so
# DKMS builds blktap.ko for the stock kernel there (trixie's rustc and bindgen are the kernel's
# own). Nothing loads blktap at boot: Xen's block-tap hotplug script does, with modprobe.
# Cached in ~/.cache/blktap-rs/xen/trixie/: the chroot after the base install (apt's archives
# and debootstrap's too), the DKMS cache of the chroot (the kernel's prepared Rust metadata),
# and dom0's image per set of .debs (trimmed of what only the build needs).
#
# Everything is cached in ~/.cache/blktap-rs/xen/: the hypervisor, the dom0 root file system
# (debootstrap, trimmed, packed as a cpio archive), the module built for the chosen kernel.
# Prints KTAP, every kernel report of dom0 with the case it happened in, and last
# "xen: N passed, N failed". Exit status 0 only if every case passed and dom0's kernel log has
# no report; 1 otherwise; 2 for setup errors.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

usage() { sed -n '10,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
fatal() { printf 'xen: error: %s\n' "$*" >&2; exit 2; }

flavour=bookworm
cases=all
timeout=2400
results=
keep=0
mode=run
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour) flavour=${2:?}; shift 2 ;;
	--cases) cases=${2?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--results) results=${2:?}; shift 2 ;;
	--keep) keep=1; shift ;;
	--setup-only) mode=setup; shift ;;
	--shell) mode=shell; shift ;;
	-h | --help) usage ;;
	*) printf 'xen: unknown argument %s\n' "$1" >&2; usage ;;
	esac
done
case "$timeout" in '' | *[!0-9]*) fatal "--timeout takes whole seconds" ;; esac
# The trixie flavour's cases: Xen's block-tap hotplug script, the way the admin guide sets
# guests up (tests/xen/cases.sh).
TRIXIE_CASES="dom0_boot blocktap_aio blocktap_vhd blktapd_phy blocktap_attach pv_pvh_ext4 debs_purge"

MIRROR=http://deb.debian.org/debian
case "$flavour" in
bookworm)
	XCACHE=$CACHE_DIR/xen
	SUITE=bookworm
	XEN_SERIES=4.17
	;;
trixie)
	XCACHE=$CACHE_DIR/xen/trixie
	SUITE=trixie
	XEN_SERIES=4.20
	# trixie-backports' stock kernel, the one Debian 13 kernel with CONFIG_RUST=y
	STOCK_RELEASE=7.3.4+deb13-amd64
	[ "$cases" != all ] || cases=$TRIXIE_CASES
	;;
*) fatal "--flavour is bookworm or trixie" ;;
esac
# The dom0 user space: xl and its libraries, the block hotplug script's tools, fsck and a loop
# mount for the checks, busybox for syslogd (tapdisk logs through syslog). For trixie, xl,
# the kernel and the rest come from tests/xen/trixie-install.sh.
DOM0_PACKAGES=(xenstore-utils busybox-static kmod iproute2 procps e2fsprogs util-linux mount)
[ "$flavour" != bookworm ] || DOM0_PACKAGES=("xen-utils-$XEN_SERIES" "${DOM0_PACKAGES[@]}")
# Memory: dom0 holds its root file system, the guests' initramfs (fio's is ~90 MB) and the disk
# images in RAM; two 256 MiB guests or one 512 MiB guest run beside it.
QEMU_MEM=3584
DOM0_MEM=1536M
# The trixie dom0's root file system is larger (~500 MB: xl's python, perl, DKMS, dpkg's records).
[ "$flavour" = bookworm ] || { QEMU_MEM=4096; DOM0_MEM=2048M; }
HOST_PACKAGES=(debootstrap qemu-system-x86 busybox-static fio cpio rsync e2fsprogs gzip xz-utils)

t_start=$(date +%s.%N)
mkdir -p "$XCACHE"
exec 8> "$XCACHE/.lock"
flock 8 # one setup at a time: debootstrap and the module build are not re-entrant

# --- host packages --------------------------------------------------------------------------
apt_ensure "${HOST_PACKAGES[@]}"
[ "$(id -u)" -eq 0 ] || fatal "debootstrap and the dom0 archive need root"

# --- the kernel and blktap.ko (bookworm: our xen flavour; trixie: from its dom0, below) -----
if [ "$flavour" = bookworm ]; then
	kasan_in() { grep -qx 'CONFIG_KASAN=y' "$@" 2>/dev/null; }
	if [ -n "${BLKTAP_XEN_KDIR:-}" ]; then
		kdir=$BLKTAP_XEN_KDIR
		kflavour=custom
	else
		kflavour=xen
		kdir=$("$TOP/scripts/build-kernel.sh" xen) || fatal "cannot build the xen kernel flavour"
	fi
	for opt in XEN_PV_DOM0=y XEN_PVH=y XEN_BLKDEV_BACKEND=m XEN_BLKDEV_FRONTEND=m XEN_GNTDEV=y \
		XEN_DEV_EVTCHN=y XENFS=y XEN_PRIVCMD=y HVC_XEN=y BLK_DEV_LOOP=y; do
		grep -qx "CONFIG_$opt" "$kdir/.config" || fatal "$kdir lacks CONFIG_$opt"
	done
	! kasan_in "$kdir/.config" || fatal "$kdir has KASAN: it cannot boot as a Xen PV or PVH domain"
	bzimage=$kdir/arch/x86/boot/bzImage
	blkback=$kdir/drivers/block/xen-blkback/xen-blkback.ko
	blkfront=$kdir/drivers/block/xen-blkfront.ko
	for f in "$bzimage" "$blkback" "$blkfront"; do [ -f "$f" ] || fatal "missing $f"; done
	log "xen: kernel ($kflavour) $kdir"

	# blktap.ko for it, built in a copy of the module's sources, so that the work tree's blktap.ko (built for the
	# debug kernel, used by `make check`) is left alone.
	modsrc=$XCACHE/module/$(basename "$kdir")
	mkdir -p "$modsrc/scripts"
	rsync -a --delete --exclude='*.o' --exclude='*.ko' --exclude='.*.cmd' --exclude='*.mod' \
		--exclude='*.mod.c' --exclude='modules.order' --exclude='.*.d' --exclude='Module.symvers' \
		"$TOP/Kbuild" "$TOP/Makefile" "$TOP/drivers" "$TOP/include" "$modsrc/"
	cp "$TOP/scripts/common.sh" "$TOP/scripts/kmake.sh" "$modsrc/scripts/"
	KDIR=$kdir "$modsrc/scripts/kmake.sh" modules > "$XCACHE/module-build.log" 2>&1 ||
		{ tail -n 30 "$XCACHE/module-build.log"; fatal "blktap.ko does not build for $kdir"; }
	blktap_ko=$modsrc/drivers/block/blktap/blktap.ko
fi

# --- the user space tools -------------------------------------------------------------------
# bookworm: blktapd and blktap-ctl from the work tree; trixie: the .deb packages of them.
if [ "$flavour" = bookworm ]; then
	(cd "$TOP/tools" && cargo build --release --target x86_64-unknown-linux-gnu) > "$XCACHE/tools-build.log" 2>&1 ||
		{ tail -n 30 "$XCACHE/tools-build.log"; fatal "the tools do not build"; }
	tools_bin=$TOP/tools/target/x86_64-unknown-linux-gnu/release
else
	debs=$XCACHE/debs
	"$TOP/scripts/deb.sh" "$debs" > "$XCACHE/deb-build.log" 2>&1 ||
		{ tail -n 30 "$XCACHE/deb-build.log"; fatal "make deb failed"; }
fi
tapdisk_dir=
tapdisk_skip=
if ! tapdisk_dir=$("$TOP/scripts/build-tapdisk.sh" 2> "$XCACHE/tapdisk-build.log"); then
	tapdisk_dir=
	tapdisk_skip=$(cat "$CACHE_DIR/tapdisk/SKIP-REASON" 2>/dev/null || tail -n 1 "$XCACHE/tapdisk-build.log")
	log "xen: no real tapdisk, its cases will fail: $tapdisk_skip"
fi

# --- the dom0 root file system --------------------------------------------------------------
# Keyed by the package list and the part of this script that makes it.
cpio_of() { # cpio_of DIR: newc archive of DIR on stdout, every file owned by root
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
}
# trim_rootfs ROOT: what a RAM-only dom0 that runs xl, its hotplug scripts and our cases does not
# need (bookworm: 317 MB -> about 105 MB).
trim_rootfs() {
	local root=$1
	rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,zoneinfo,bash-completion,perl5} \
		"$root"/usr/lib/python3* "$root"/usr/lib/x86_64-linux-gnu/perl-base \
		"$root"/usr/lib/udev/hwdb.d "$root"/etc/udev/hwdb.bin \
		"$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old
}
recipe_of() { sed -n "/^$1()/,/^}/p" "$0"; } # recipe_of FUNCTION: its text, for cache keys
rootfs_recipe() { printf '%s\n' "$SUITE" "${DOM0_PACKAGES[@]}"; recipe_of make_rootfs; recipe_of trim_rootfs; }
make_rootfs() { # make_rootfs DIR: debootstrap into DIR/rootfs, trim it, pack DIR/dom0.cpio
	local root=$1/rootfs
	debootstrap_to "$root" "$1/debootstrap.log"
	trim_rootfs "$root"
	cpio_of "$root" > "$1/dom0.cpio"
}
debootstrap_to() { # debootstrap_to ROOT LOG: minbase of $SUITE with DOM0_PACKAGES
	log "xen: debootstrap of the dom0 user space ($SUITE, about 2 minutes)"
	mkdir -p "$XCACHE/debootstrap-cache"
	debootstrap --variant=minbase --cache-dir="$XCACHE/debootstrap-cache" \
		--include="$(IFS=,; echo "${DOM0_PACKAGES[*]}")" "$SUITE" "$1" "$MIRROR" > "$2" 2>&1 ||
		{ tail -n 20 "$2"; fatal "debootstrap failed (log: $2)"; }
}

# The trixie dom0 is made in two steps, each cached: the base (debootstrap, then the admin
# guide's steps up to the project's packages: tests/xen/trixie-install.sh base), then, per set
# of .debs, a copy of it with the packages installed by apt (DKMS builds blktap.ko in there),
# trimmed of what only the build needs and packed.
unmount_under() { # unmount_under DIR: every mount at or below DIR, deepest first
	local m
	for m in $(awk -v d="$(realpath -m "$1")" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r); do
		umount "$m" 2> /dev/null || umount -l "$m"
	done
}
in_chroot() { # in_chroot ROOT CMD...: CMD in ROOT with /proc, apt's archives and the DKMS cache
	local root=$1 rc=0
	shift
	mkdir -p "$XCACHE/apt-archives/partial" "$XCACHE/chroot-cache" "$root/root/.cache/blktap-rs"
	mount -t proc proc "$root/proc"
	mount --bind "$XCACHE/apt-archives" "$root/var/cache/apt/archives"
	# The prepared Rust metadata of the kernel (scripts/prepare-rust-metadata.sh in DKMS's
	# build) survives new .debs, as it would on a real host.
	mount --bind "$XCACHE/chroot-cache" "$root/root/.cache/blktap-rs"
	chroot "$root" "$@" || rc=$?
	unmount_under "$root"
	return "$rc"
}
base_recipe() {
	printf '%s\n' "$SUITE" "$STOCK_RELEASE" "${DOM0_PACKAGES[@]}"
	recipe_of make_base
	sed -n '/^base)/,/;;/p' "$TOP/tests/xen/trixie-install.sh"
}
make_base() { # make_base DIR: DIR/rootfs, debootstrap'd and through trixie-install.sh base
	local root=$1/rootfs d
	debootstrap_to "$root" "$1/debootstrap.log"
	# No service starts in the chroot (xen-utils-common's init scripts would start xenstored).
	printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
	chmod 0755 "$root/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	# The stock kernel's packages that scripts/stock-kernel.sh fetched for the stock-kernel
	# tests: apt takes them from its archive instead of downloading them again.
	d=$("$TOP/scripts/stock-kernel.sh" fetch "$STOCK_RELEASE" 2> "$1/fetch.log") ||
		{ cat "$1/fetch.log"; fatal "cannot fetch Debian's packages of $STOCK_RELEASE"; }
	mkdir -p "$XCACHE/apt-archives"
	find "${BLKTAP_STOCK_CACHE:-$CACHE_DIR/stock}/apt/archives" -maxdepth 1 -name "*_$(cat "$d/.blktap-package-version" | sed 's/:/%3a/')_*.deb" \
		-exec cp -n -t "$XCACHE/apt-archives/" {} +
	install -D -m 0755 "$TOP/tests/xen/trixie-install.sh" "$root/tmp/trixie-install.sh"
	log "xen: trixie-backports' kernel, Xen 4.20, rustc, bindgen and DKMS in the dom0 chroot (apt)"
	in_chroot "$root" /tmp/trixie-install.sh base "$STOCK_RELEASE" > "$1/install.log" 2>&1 ||
		{ tail -n 30 "$1/install.log"; fatal "trixie-install.sh base failed (log: $1/install.log)"; }
	rm -f "$root/tmp/trixie-install.sh"
}
dom0_recipe() {
	echo "$1"
	cat "$debs"/*.deb | sha256sum
	recipe_of make_dom0
	recipe_of trim_rootfs
	sed -n '/^debs)/,/;;/p' "$TOP/tests/xen/trixie-install.sh"
}
make_dom0() { # make_dom0 BASE DIR: BASE's root with the .debs in DIR/rootfs, packed in DIR/dom0.cpio
	local root=$2/rootfs rel=$STOCK_RELEASE
	log "xen: a copy of the dom0 base with the project's .debs (apt; DKMS builds blktap.ko)"
	cp -a "$1/rootfs" "$root"
	mkdir -p "$root/tmp/debs"
	cp "$debs"/*.deb "$root/tmp/debs/"
	install -m 0755 "$TOP/tests/xen/trixie-install.sh" "$root/tmp/trixie-install.sh"
	in_chroot "$root" /tmp/trixie-install.sh debs "$rel" /tmp/debs > "$2/install.log" 2>&1 ||
		{ tail -n 40 "$2/install.log"; fatal "installing the .debs in dom0 failed (log: $2/install.log)"; }
	rm -rf "$root/tmp/debs" "$root/tmp/trixie-install.sh" "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
	trim_rootfs "$root"
	# What only building needs (rustc, the compilers, kernel sources and headers: ~1.5 GB),
	# the initrd dom0 is not booted with, modules of hardware dom0 has not.
	local lib=$root/usr/lib/x86_64-linux-gnu
	rm -rf "$root"/usr/src/{linux,rustc}-* "$root"/usr/lib/linux-kbuild-* "$root"/usr/lib/gcc "$root"/usr/libexec/gcc \
		"$root"/usr/lib/rustlib "$root"/usr/lib/llvm-* "$lib"/lib{rustc_driver,LLVM,clang,z3}* "$lib"/lib*san.so* \
		"$lib"/*.a "$lib"/libstd-* "$root"/usr/bin/*-lto-dump-* "$root"/boot/initrd.img-* "$root"/var/lib/dkms/*/*/build \
		"$root/usr/lib/modules/$rel/kernel"/{sound,drivers/gpu,drivers/media,drivers/net/wireless,drivers/net/ethernet,drivers/infiniband,drivers/staging}
	cpio_of "$root" > "$2/dom0.cpio"
}

# cached DIR MAKE ARGS...: run MAKE ARGS... DIR.tmp once, then keep it as DIR
cached() {
	local dir=$1
	shift
	[ ! -f "$dir/.done" ] || return 0
	unmount_under "$dir.tmp"
	rm -rf "$dir.tmp"
	mkdir -p "$dir.tmp"
	"$@" "$dir.tmp"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	touch "$dir/.done"
}
if [ "$flavour" = bookworm ]; then
	rootfs_key=$(rootfs_recipe | sha256sum | cut -c1-16)
	dom0_dir=$XCACHE/dom0-$rootfs_key
	cached "$dom0_dir" make_rootfs
else
	base_dir=$XCACHE/base-$(base_recipe | sha256sum | cut -c1-16)
	cached "$base_dir" make_base
	rootfs_key=$(dom0_recipe "$base_dir" | sha256sum | cut -c1-16)
	dom0_dir=$XCACHE/dom0-$rootfs_key
	cached "$dom0_dir" make_dom0 "$base_dir"
	find "$XCACHE" -maxdepth 1 -name 'base-*' ! -name "$(basename "$base_dir")" -exec rm -rf {} +
fi
# Older recipes' trees (each ~100 MB, trixie's ~2 GB) are not needed any more.
find "$XCACHE" -maxdepth 1 -name 'dom0-*' ! -name "dom0-$rootfs_key" -exec rm -rf {} +

# --- the hypervisor -------------------------------------------------------------------------
# The version of the dom0's xl, so that the tools and the hypervisor match.
xen_ver=$(dpkg-query --admindir="$dom0_dir/rootfs/var/lib/dpkg" -W -f='${Version}' "xen-utils-$XEN_SERIES")
xen_elf=$XCACHE/hypervisor-$xen_ver/xen.elf
hv_gz=$dom0_dir/rootfs/boot/xen-$XEN_SERIES-amd64.gz # trixie: installed with xen-system-amd64
if [ ! -f "$xen_elf" ] && [ -f "$hv_gz" ]; then
	mkdir -p "$(dirname "$xen_elf")"
	zcat "$hv_gz" > "$xen_elf.tmp"
	mv "$xen_elf.tmp" "$xen_elf"
elif [ ! -f "$xen_elf" ]; then
	tmp=$(mktemp -d "$XCACHE/.hv.XXXXXX")
	pkg=xen-hypervisor-$XEN_SERIES-amd64
	apt_dl() { (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download "$pkg=$xen_ver") > /dev/null 2>&1; }
	apt_dl || { apt-get update -qq > /dev/null 2>&1; apt_dl; } ||
		fatal "cannot download $pkg $xen_ver (apt-get download)"
	dpkg-deb -x "$tmp"/"${pkg}"_*.deb "$tmp/x"
	mkdir -p "$(dirname "$xen_elf")"
	# The package's /boot/xen-*.gz is a gzipped multiboot ELF; QEMU's -kernel wants it plain.
	zcat "$tmp"/x/boot/xen-$XEN_SERIES-amd64.gz > "$xen_elf.tmp"
	mv "$xen_elf.tmp" "$xen_elf"
	rm -rf "$tmp"
fi
log "xen: hypervisor $xen_ver, dom0 user space $dom0_dir"

# --- the run's dom0 initramfs ---------------------------------------------------------------
if [ "$flavour" = trixie ]; then
	# dom0's kernel as apt installed it, the guests' too; their modules from its package.
	bzimage=$dom0_dir/rootfs/usr/lib/modules/$STOCK_RELEASE/vmlinuz
	[ -f "$bzimage" ] || fatal "no $bzimage in the trixie dom0"
	log "xen: kernel (stock, signed) $STOCK_RELEASE"
fi
if [ -z "$results" ]; then results=${BLKTAP_RESULTS:-$TOP/results}/xen; [ "$flavour" = bookworm ] || results+=-$flavour; fi
mkdir -p "$results"
rm -f "$results"/guest-*.log
work=$(mktemp -d "$XCACHE/.run.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Guests: the same kernel; an initramfs with busybox, e2fsprogs and xen-blkfront, and one with
# fio as well (scripts/mkinitramfs.sh caches the bulk of both).
g=$work/guests/xen/guest
mkdir -p "$g"
cp "$bzimage" "$g/vmlinuz"
guest_mods=()
if [ "$flavour" = trixie ]; then
	# The stock kernel's modules are xz-compressed; busybox insmod wants them plain. ext4 and
	# what it needs are modules there too (guest-init.sh loads them in this order).
	mkdir -p "$work/mods"
	for m in drivers/block/xen-blkfront lib/crc/crc16 fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4; do
		xz -dc "$dom0_dir/rootfs/usr/lib/modules/$STOCK_RELEASE/kernel/$m.ko.xz" > "$work/mods/${m##*/}.ko" ||
			fatal "no $m.ko.xz in the stock kernel's modules"
		guest_mods+=(--module "$work/mods/${m##*/}.ko")
	done
else
	guest_mods=(--module "$blkfront")
fi
"$TOP/scripts/mkinitramfs.sh" "$g/small.cpio" --init "$TOP/tests/xen/guest-init.sh" "${guest_mods[@]}" --no-fio
"$TOP/scripts/mkinitramfs.sh" "$g/fio.cpio" --init "$TOP/tests/xen/guest-init.sh" "${guest_mods[@]}"
# Debian's root file system is usr-merged (/lib, /bin, /sbin are links into /usr): the overlay
# must not have those directories, which would replace the links when unpacked.
o=$work/overlay
mkdir -p "$o/xen" "$o/usr/local/bin" "$o/usr/libexec" "$o/usr/sbin"
install -m 0755 "$TOP/tests/xen/dom0-init.sh" "$o/init"
install -m 0755 "$TOP/tests/xen/cases.sh" "$TOP/scripts/check-kmsg.sh" "$o/xen/"
if [ "$flavour" = bookworm ]; then
	# trixie: the module and the tools are those the .debs installed in dom0.
	mkdir -p "$o/usr/lib/modules/xen-check"
	install -m 0644 "$blktap_ko" "$blkback" "$o/usr/lib/modules/xen-check/"
	install -m 0755 "$tools_bin/blktapd" "$tools_bin/blktap-ctl" "$o/usr/local/bin/"
fi
echo "$flavour" > "$o/xen/flavour"
if [ -n "$tapdisk_dir" ]; then
	# tap-ctl runs /usr/libexec/tapdisk (compiled in); all three are static.
	install -m 0755 "$tapdisk_dir/tapdisk" "$o/usr/libexec/tapdisk"
	install -m 0755 "$tapdisk_dir/tap-ctl" "$tapdisk_dir/vhd-util" "$o/usr/sbin/"
else
	printf '%s\n' "$tapdisk_skip" > "$o/xen/tapdisk-skip"
fi
initrd=$work/dom0.cpio
# The cached root file system and the guests' files go in uncompressed (unpacking is a copy,
# gunzip under TCG costs seconds), the small per-run part gzip'ed.
{ cat "$dom0_dir/dom0.cpio"; cpio_of "$work/guests"; cpio_of "$o" | gzip -1; } > "$initrd"
t_setup=$(date +%s.%N)
[ "$mode" != setup ] || { log "xen: set up in $(awk -v a="$t_start" -v b="$t_setup" 'BEGIN { printf "%.0f", b - a }') s"; exit 0; }

# --- boot -----------------------------------------------------------------------------------
# -cpu max without SMAP/SMEP: with them dom0 dies at once (emulated SMAP, "d0v0 Unhandled: vec
# 14, #PF[0001]"). Without AVX/AVX2: under Xen, QEMU 7.2's emulated AVX2 makes glibc's AVX2
# string functions fault at random in dom0 and the guests ("traps: tr[210] general protection
# fault ... in libc.so.6" at a vpcmpeqb of __strcmp_avx2): the user-space "segfaults" of the
# notes; glibc then takes its SSE variants. Xen's serial buffer is enlarged so that the guests' logs, copied to the
# console in bursts, are not cut. No "noreboot": a dead dom0 ends QEMU instead of hanging it.
# spec-ctrl=eager-fpu: Xen's default on an AMD CPU (QEMU's "max" model is one) is to switch the
# FPU lazily, setting CR0.TS and restoring a vCPU's registers on its first #NM. Under TCG that
# leaks one vCPU's SSE registers into another at random: bash, busybox, fio and glibc's malloc
# in dom0 and the guests saw corrupted strings and crashed ("echo blktap-rs emulation: command
# not found", "malloc(): unsorted double linked list corrupted") in most runs. Eager switching
# ended it (tests/xen/cases.sh emu_check: 0 wrong hashes of 200, where before a run never
# finished).
xen_args="console=com1 com1=115200 dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=2 loglvl=all"
xen_args+=" spec-ctrl=eager-fpu"
xen_args+=" guest_loglvl=all serial_tx_buffer=256k${BLKTAP_XEN_ARGS:+ $BLKTAP_XEN_ARGS}"
# No commas in dom0's command line: QEMU splits Xen's modules on them.
dom0_args="console=hvc0 earlyprintk=xen printk.devkmsg=on panic=-1 oops=panic"
dom0_args+=" xc.cases=$(echo "$cases" | tr -s ' ,' '++' | sed 's/^+//; s/+$//')"
[ "$mode" != shell ] || dom0_args+=" xc.shell=1"
# shellcheck disable=SC2054 # the commas belong to QEMU's options
qemu=(qemu-system-x86_64 -machine q35 -accel tcg -cpu max,-smap,-smep,-avx,-avx2 -m "$QEMU_MEM" -smp 2
	-nographic -no-reboot -serial mon:stdio -nic none
	-kernel "$xen_elf" -append "$xen_args" -initrd "$bzimage $dom0_args,$initrd")
if [ "$mode" = shell ]; then
	"${qemu[@]}"
	exit $?
fi
log "xen: booting Xen and dom0 (console log: $results/console.log)"
set +e
# Xen's console ends lines with CR LF, and dom0's lines come through it with one more CR.
timeout -k 5 "$timeout" "${qemu[@]}" < /dev/null 2>&1 | sed -u 's/\r//g' > "$results/console.raw"
qemu_rc=${PIPESTATUS[0]}
set -e
t_end=$(date +%s.%N)
[ "$keep" = 0 ] || cp "$initrd" "$results/dom0.cpio"

# --- verdict --------------------------------------------------------------------------------
raw=$results/console.raw
# Guest console logs, relayed by dom0 as "@@G NAME| LINE", go to files of their own; the rest
# is Xen's and dom0's console.
grep -av '^@@G ' "$raw" > "$results/console.log" || true
awk -v dir="$results" 'sub(/^@@G /, "") { n = index($0, "| "); if (n) print substr($0, n + 2) > (dir "/guest-" substr($0, 1, n - 1) ".log") }' "$raw"
splats=$results/splats.tsv
: > "$splats"
kmsg_rc=0
# A user-space fault that the kernel logs ("traps: sh[12] general protection fault ip:...") is
# no kernel report; the case it broke says so and is retried once.
export BLKTAP_KMSG_IGNORE='^traps: [^ ]+\[[0-9]+\] general protection fault ip:'
"$TOP/scripts/check-kmsg.sh" --attrib "$splats" "$results/console.log" > "$results/kmsg-report.txt" || kmsg_rc=$?
[ "$kmsg_rc" -le 1 ] || fatal "check-kmsg.sh failed on $results/console.log"

# KTAP: the "blktap-test: ktap LINE" kernel records (printk never splits them), else dom0's
# plain lines; the "# " lines of each case (its diagnostics) above its result; a case with a
# kernel report in dom0 is not ok.
report=$(awk -v splats="$splats" '
function num(l,   f) { split(l, f, " "); return (f[1] == "not") ? f[3] : f[2] }
BEGIN { while ((getline l < splats) > 0) { split(l, f, "\t"); if (f[1] > 0) bad[f[1]] = 1 }; cur = 0 }
match($0, /blktap-test: ktap /) {
	l = substr($0, RSTART + RLENGTH)
	if (l ~ /^1\.\.[0-9]+$/) plan = substr(l, 4) + 0
	else if (l ~ /^(not )?ok [0-9]+ /) res[num(l)] = l
	next
}
/^# start [0-9]+ / { cur = $3; next }
/^# / { if (cur) diag[cur] = diag[cur] $0 "\n"; next }
/^(not )?ok [0-9]+ / { if (!(num($0) in res)) res[num($0)] = $0; cur = 0; next }
END {
	print "TAP version 13"
	print "1.." plan + 0
	for (n = 1; n <= plan; n++) {
		l = (n in res) ? res[n] : "not ok " n " # never reported (dom0 or QEMU died, or the run timed out)"
		if (l ~ /^ok / && (n in bad)) { sub(/^ok /, "not ok ", l); l = l " # kernel report in dom0" }
		printf "%s", diag[n]
		print l
		if (l ~ /^not ok /) fail++; else pass++
	}
	if (plan == 0) fail++
	printf "xen: %d passed, %d failed\n", pass, fail
}' "$results/console.log")
summary=$(echo "$report" | tail -n 1)
echo "$report" | sed '$d'
ok=1
[ "$kmsg_rc" = 0 ] || { ok=0; cat "$results/kmsg-report.txt"; echo "xen: $(wc -l < "$splats") kernel report(s) in dom0's console log"; }
if grep -aqE '^\(XEN\) (Panic on CPU|.*crashed)' "$results/console.log"; then
	ok=0
	echo "xen: Xen or dom0 crashed:"
	grep -aE -A3 '^\(XEN\) (Panic on CPU|.*crashed)' "$results/console.log" | head -n 20
fi
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
	ok=0; echo "xen: TIMEOUT: QEMU killed after ${timeout}s"
elif ! grep -aq 'blktap-test: ktap XEN-RESULT: ' "$results/console.log"; then
	ok=0; echo "xen: dom0 never reported a result (qemu rc=$qemu_rc)"
fi
for f in "$results"/guest-*.log; do
	[ -e "$f" ] || continue
	"$TOP/scripts/check-kmsg.sh" --quiet "$f" || echo "xen: kernel report in $f (the case that ran it failed)"
done
awk -v a="$t_start" -v b="$t_setup" -v c="$t_end" \
	'BEGIN { printf "xen: setup %.0f s, boot and cases %.0f s\n", b - a, c - b }'
echo "xen: logs in $results (console.log: Xen and dom0; guest-NAME.log: each guest)"
case "$summary" in *", 0 failed") ;; *) ok=0 ;; esac
if [ "$ok" = 0 ] && [ "${summary%, 0 failed}" != "$summary" ]; then
	# Every case passed but the run itself failed (kernel report outside a case, crash, ...).
	summary=$(echo "$summary" | awk '{ printf "%s %s %s %d failed\n", $1, $2, $3, $4 + 1 }')
fi
echo "$summary"
[ "$ok" = 1 ]
