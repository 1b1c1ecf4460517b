#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install and uninstall blktap-rs (the recipes behind `make install`, `make uninstall`, ...).
#
#   scripts/install.sh install          module (+ depmod), tools, udev rules, tmpfiles.d,
#                                       modules-load.d and man pages
#   scripts/install.sh uninstall        remove everything an earlier install put there
#   scripts/install.sh modules_install  only the module (+ depmod)
#   scripts/install.sh man [DIR]        render the man pages into DIR (default tools/target/man)
#   scripts/install.sh dkms-source [DIR]  copy the DKMS source tree to DIR (default
#                                       $DESTDIR/usr/src/blktap-<version>)
#   scripts/install.sh dkms-install     dkms-source, then dkms add, build and install (root)
#   scripts/install.sh dkms-uninstall   dkms remove --all and delete the DKMS source tree (root)
#
# Settings (environment, or make variables, which make exports to its recipes):
#   DESTDIR           staging root prepended to every path (default: none, the real system)
#   PREFIX            /usr; SBINDIR=$PREFIX/sbin, MANDIR=$PREFIX/share/man
#   UDEVRULESDIR      /usr/lib/udev/rules.d (udev only reads fixed directories, whatever PREFIX)
#   TMPFILESDIR       /usr/lib/tmpfiles.d (the same for systemd-tmpfiles)
#   MODULESLOADDIR    /usr/lib/modules-load.d (and for systemd-modules-load)
#   INSTALL_MOD_PATH  root of the module tree (default: $DESTDIR); the module goes to
#                     $INSTALL_MOD_PATH/lib/modules/<release>/updates/drivers/block/blktap/
#   KDIR              kernel build tree to install the module for (as for `make`)
#
# install records what it creates (files and the directories it had to make) in
# $DESTDIR$PREFIX/share/blktap-rs/install-manifest; uninstall removes exactly those, then
# the directories that are left empty. depmod runs on the real system, or on a staging tree
# that holds a whole module tree (modules.order); otherwise it is left to the target system.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
MANDIR=${MANDIR:-$PREFIX/share/man}
UDEVRULESDIR=${UDEVRULESDIR:-/usr/lib/udev/rules.d}
TMPFILESDIR=${TMPFILESDIR:-/usr/lib/tmpfiles.d}
MODULESLOADDIR=${MODULESLOADDIR:-/usr/lib/modules-load.d}
INSTALL_MOD_PATH=${INSTALL_MOD_PATH:-$DESTDIR}
TOOLS_BIN=${TOOLS_BIN:-$TOP/tools/target/x86_64-unknown-linux-gnu/release}
TOOLS=(blktapd blktap-ctl)
# The manifest lives in the staging root; a module-only install into INSTALL_MOD_PATH (without
# DESTDIR) keeps its own under INSTALL_MOD_PATH, so that it never touches the running system.
manifest_root=$DESTDIR
case "${1:-}" in
modules_install) [ -n "$DESTDIR" ] || manifest_root=${INSTALL_MOD_PATH%/} ;;
uninstall)
	if [ -z "$DESTDIR" ] && [ -n "${INSTALL_MOD_PATH%/}" ] &&
		[ ! -f "$PREFIX/share/blktap-rs/install-manifest" ]; then
		manifest_root=${INSTALL_MOD_PATH%/}
	fi ;;
esac
MANIFEST=$manifest_root$PREFIX/share/blktap-rs/install-manifest
VERSION=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
[ -n "$VERSION" ] || die "no PACKAGE_VERSION in $TOP/dkms.conf"

# --- the manifest -----------------------------------------------------------------------------
new_entries=()
# make_dirs DIR: mkdir -p DIR, recording every directory it creates (outermost first).
make_dirs() {
	local d=$1 missing=()
	while [ ! -d "$d" ]; do missing=("$d" "${missing[@]}"); d=$(dirname "$d"); done
	for d in "${missing[@]}"; do
		mkdir -m 0755 "$d"
		new_entries+=("d $d")
	done
}
# put SRC DEST MODE: install one file, recording it.
put() {
	make_dirs "$(dirname "$2")"
	install -m "$3" "$1" "$2"
	new_entries+=("f $2")
	printf '  %s\n' "$2"
}
# Adds the new entries to the manifest (kept in order, without duplicates).
save_manifest() {
	[ ${#new_entries[@]} -gt 0 ] || return 0
	local old=()
	[ ! -f "$MANIFEST" ] || mapfile -t old < "$MANIFEST"
	make_dirs "$(dirname "$MANIFEST")"
	printf '%s\n' "${old[@]}" "${new_entries[@]}" "f $MANIFEST" | awk 'NF && !seen[$0]++' \
		> "$MANIFEST.tmp"
	mv "$MANIFEST.tmp" "$MANIFEST"
	new_entries=()
}

# need_root_for_system ROOT: writing below ROOT ("" or "/": the running system) needs root.
need_root_for_system() {
	if [ -z "${1#/}" ] && [ "$(id -u)" != 0 ]; then
		die "installing into the running system needs root (or stage it: make install DESTDIR=/tmp/stage)"
	fi
}

# What depmod writes into /lib/modules/<release>/.
DEPMOD_FILES=(modules.alias modules.alias.bin modules.builtin.alias.bin modules.builtin.bin
	modules.dep modules.dep.bin modules.devname modules.softdep modules.symbols
	modules.symbols.bin modules.weakdep)

# --- module -----------------------------------------------------------------------------------
# The kernel tree blktap.ko was built against: kbuild's link command names its module.lds.
built_kdir() {
	sed -n 's|.* -T \([^ ]*\)/scripts/module\.lds .*|\1|p' \
		"$TOP/drivers/block/blktap/.blktap.ko.cmd" 2>/dev/null | head -n1
}
# KDIR, else the tree `make` built blktap.ko against (never a kernel build: `sudo make install`
# runs with root's HOME and cache). A module built for another tree would not load.
kdir() {
	local built
	built=$(built_kdir)
	if [ -n "${KDIR:-}" ]; then
		[ -z "$built" ] || [ "$(realpath -m "$KDIR")" = "$(realpath -m "$built")" ] ||
			die "blktap.ko was built against $built, not KDIR=$KDIR: run make KDIR=$KDIR first"
		echo "$KDIR"
	elif [ -n "$built" ]; then
		echo "$built"
	else
		"$TOP/scripts/build-kernel.sh" debug
	fi
}

# depmod_for RELEASE: refresh the module index where that makes sense (see the header).
depmod_for() {
	local rel=$1 base=${INSTALL_MOD_PATH%/}
	if [ -z "$base" ]; then
		[ -d "/lib/modules/$rel" ] || return 0
		if [ -f "/lib/modules/$rel/modules.order" ]; then
			depmod -a "$rel"
		else
			# Not an installed kernel (its own modules are not there): depmod would warn about
			# the kernel's missing modules.order and modules.builtin*; say it once instead.
			depmod -a "$rel" 2>&1 | { grep -v "could not open modules\.\(order\|builtin\)" || true; } >&2
			log "note: /lib/modules/$rel holds no installed kernel (no modules.order)"
		fi
		log "depmod -a $rel"
	elif [ -f "$base/lib/modules/$rel/modules.order" ]; then
		depmod -b "$base" "$rel"
		log "depmod -b $base $rel"
	else
		log "staged: no module tree of $rel under $base, so no depmod (the target system runs it)"
	fi
}

modules_install() {
	local kd rel dir before created=() d f
	kd=$(kdir)
	rel=$(make -s --no-print-directory -C "$kd" kernelrelease)
	[ -f "$TOP/drivers/block/blktap/blktap.ko" ] || die "no blktap.ko: run make first"
	dir=${INSTALL_MOD_PATH%/}/lib/modules/$rel/updates/drivers/block/blktap
	# kbuild creates the directories itself: note which ones are new.
	d=$dir
	while [ ! -d "$d" ]; do created=("$d" "${created[@]}"); d=$(dirname "$d"); done
	before=$(find "$dir" -maxdepth 1 -name 'blktap.ko*' 2>/dev/null || true)
	KDIR=$kd "$TOP/scripts/kmake.sh" modules_install INSTALL_MOD_PATH="${INSTALL_MOD_PATH%/}" \
		INSTALL_MOD_DIR=updates DEPMOD=true >/dev/null
	for d in "${created[@]}"; do new_entries+=("d $d"); done
	f=$(find "$dir" -maxdepth 1 -name 'blktap.ko*' -newer "$TOP/drivers/block/blktap/blktap.ko" | head -n1)
	[ -n "$f" ] || f=$(find "$dir" -maxdepth 1 -name 'blktap.ko*' | head -n1)
	[ -n "$f" ] || die "kbuild installed no blktap.ko under $dir"
	[ -z "$before" ] || [ "$before" = "$f" ] || log "note: an older $before is still there"
	new_entries+=("f $f")
	printf '  %s\n' "$f"
	save_manifest
	depmod_for "$rel"
}

# --- man pages --------------------------------------------------------------------------------
render_man() {
	local out=$1 gen=$TOOLS_BIN/blktap-man
	[ -x "$gen" ] || die "no $gen: run make tools first"
	rm -rf "$out"
	"$gen" "$out" >/dev/null
	if command -v groff >/dev/null; then
		local warn
		warn=$(groff -man -ww -z "$out"/*.8 2>&1) || true
		[ -z "$warn" ] || die "groff warnings in the generated man pages:
$warn"
	fi
}

# --- install / uninstall ----------------------------------------------------------------------
install_all() {
	need_root_for_system "$DESTDIR"
	need_root_for_system "$INSTALL_MOD_PATH"
	local tmp f
	log "installing blktap-rs $VERSION into ${DESTDIR:-/}"
	modules_install
	for f in "${TOOLS[@]}"; do
		[ -x "$TOOLS_BIN/$f" ] || die "no $TOOLS_BIN/$f: run make tools first"
		put "$TOOLS_BIN/$f" "$DESTDIR$SBINDIR/$f" 0755
	done
	for f in "$TOP"/udev/*.rules; do
		put "$f" "$DESTDIR$UDEVRULESDIR/$(basename "$f")" 0644
	done
	put "$TOP/udev/blktap.tmpfiles" "$DESTDIR$TMPFILESDIR/blktap.conf" 0644
	put "$TOP/udev/blktap.modules-load" "$DESTDIR$MODULESLOADDIR/blktap.conf" 0644
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	render_man "$tmp/man"
	for f in "$tmp"/man/*.8; do
		put "$f" "$DESTDIR$MANDIR/man8/$(basename "$f")" 0644
	done
	save_manifest
	if [ -z "$DESTDIR" ] && command -v udevadm >/dev/null && [ -d /run/udev ]; then
		udevadm control --reload || true
	fi
	if [ -z "$DESTDIR" ] && command -v systemd-tmpfiles >/dev/null && [ -d /run/systemd/system ]; then
		systemd-tmpfiles --create blktap.conf || true
	fi
	log "installed; the list is in $MANIFEST"
}

uninstall_all() {
	need_root_for_system "$manifest_root"
	local entries=() e path i rels=() had_manifest=0
	if [ -f "$MANIFEST" ]; then
		had_manifest=1
		mapfile -t entries < "$MANIFEST"
	else
		# No record (installed by an older version, or the manifest was lost): the known names.
		log "no $MANIFEST; removing the files an install would have made"
		for e in "${TOOLS[@]}"; do entries+=("f $DESTDIR$SBINDIR/$e"); done
		for e in "$TOP"/udev/*.rules; do entries+=("f $DESTDIR$UDEVRULESDIR/$(basename "$e")"); done
		entries+=("f $DESTDIR$TMPFILESDIR/blktap.conf" "f $DESTDIR$MODULESLOADDIR/blktap.conf")
		for e in blktapd blktap-ctl blktap-ctl-alloc blktap-ctl-free blktap-ctl-create \
			blktap-ctl-destroy blktap-ctl-abort blktap-ctl-recover blktap-ctl-list; do entries+=("f $DESTDIR$MANDIR/man8/$e.8"); done
		for e in "${INSTALL_MOD_PATH%/}"/lib/modules/*/updates/drivers/block/blktap/blktap.ko*; do
			[ ! -e "$e" ] || entries+=("f $e")
		done
	fi
	for e in "${entries[@]}"; do
		[ "${e%% *}" = f ] || continue
		path=${e#f }
		if [ -e "$path" ] || [ -L "$path" ]; then
			rm -f "$path"
			printf '  removed %s\n' "$path"
		fi
		case "$path" in
		*/lib/modules/*/updates/drivers/block/blktap/blktap.ko*)
			i=${path%%/updates/drivers/*}
			rels+=("${i##*/lib/modules/}") ;;
		esac
	done
	# A module tree the install created (the kernel is not installed here) holds, besides the
	# module, only depmod's indexes: remove them with it, then the directories, and no depmod.
	local kept=()
	for e in "${rels[@]}"; do
		i=${INSTALL_MOD_PATH%/}/lib/modules/$e
		if printf '%s\n' "${entries[@]}" | grep -qxF "d $i" &&
			[ -z "$(find "$i" -name '*.ko*' -print -quit)" ]; then
			for path in "${DEPMOD_FILES[@]}"; do rm -f "$i/$path"; done
		else
			kept+=("$e")
		fi
	done
	# Directories the install created, innermost first, as long as they are empty.
	for ((i = ${#entries[@]} - 1; i >= 0; i--)); do
		e=${entries[$i]}
		[ "${e%% *}" = d ] || continue
		rmdir "${e#d }" 2>/dev/null || true
	done
	# Without a manifest: the module directories that kbuild creates below updates/, if empty.
	if [ "$had_manifest" = 0 ]; then
		for e in "${INSTALL_MOD_PATH%/}"/lib/modules/*/updates/drivers/block/blktap; do
			[ -d "$e" ] || continue
			rmdir "$e" "${e%/blktap}" "${e%/block/blktap}" 2>/dev/null || true
		done
	fi
	for e in "${kept[@]}"; do depmod_for "$e"; done
	if [ -z "$DESTDIR" ] && command -v udevadm >/dev/null && [ -d /run/udev ]; then
		udevadm control --reload || true
	fi
	log "uninstalled blktap-rs from ${manifest_root:-/}"
}

# --- DKMS -------------------------------------------------------------------------------------
# The files DKMS needs to build the module: its sources, the Kbuild files, the build scripts.
dkms_files() {
	(cd "$TOP" && {
		printf '%s\n' dkms.conf Kbuild COPYING include/uapi/linux/blktap.h \
			scripts/common.sh scripts/kmake.sh scripts/dkms-preflight.sh scripts/dkms-make.sh \
			scripts/prepare-rust-metadata.sh scripts/stock-kernel.sh
		find drivers/block/blktap -name Kbuild -o -name '*.rs'
	} | LC_ALL=C sort)
}

dkms_source() {
	local dest=${1:-$DESTDIR/usr/src/blktap-$VERSION} f
	[ -n "${1:-}" ] || need_root_for_system "$DESTDIR"
	rm -rf "$dest"
	mkdir -p "$dest"
	while IFS= read -r f; do
		[ -f "$TOP/$f" ] || die "missing $TOP/$f"
		mkdir -p "$dest/$(dirname "$f")"
		cp -p "$TOP/$f" "$dest/$f"
	done < <(dkms_files)
	echo "$dest"
}

dkms_install() {
	[ "$(id -u)" = 0 ] || die "dkms-install needs root"
	command -v dkms >/dev/null || die "dkms not found (apt-get install dkms)"
	# Check first, so that a tree DKMS cannot use leaves nothing registered behind.
	local rel kd
	if [ -n "${KVER:-}" ]; then rel=$KVER
	elif [ -n "${KDIR:-}" ]; then rel=$(make -s --no-print-directory -C "$KDIR" kernelrelease)
	else rel=$(uname -r); fi
	kd=${KHEADERS:-${KDIR:-/lib/modules/$rel/build}}
	# A distribution kernel's headers without Rust metadata: this install step fetches what
	# DKMS needs to prepare it (source of the same version, the kernel's rustc and bindgen),
	# since DKMS itself, also when it rebuilds on a kernel upgrade, downloads nothing.
	if [ ! -e "$kd/rust/libkernel.rmeta" ] && [ -f "$kd/.config" ] &&
		! "$TOP/scripts/prepare-rust-metadata.sh" --check --headers "$kd" "$rel" 2>/dev/null; then
		log "installing what the Rust metadata of $rel needs (scripts/stock-kernel.sh deps $rel)"
		"$TOP/scripts/stock-kernel.sh" deps "$rel"
	fi
	"$TOP/scripts/dkms-preflight.sh" --quiet "$kd" "$rel" ||
		die "DKMS cannot build blktap.ko for $rel with $kd (see above)"
	[ -d "/lib/modules/$rel" ] ||
		die "kernel $rel is not installed here (no /lib/modules/$rel): DKMS installs modules only for installed kernels"
	# A fresh registration each time: the sources may have changed since the last one.
	if dkms status -m blktap -v "$VERSION" 2>/dev/null | grep -q .; then
		dkms remove -m blktap -v "$VERSION" --all
	fi
	DESTDIR='' dkms_source "/usr/src/blktap-$VERSION" >/dev/null
	dkms add -m blktap -v "$VERSION"
	local kopt=(-k "$rel")
	[ "$kd" = "/lib/modules/$rel/build" ] || kopt+=(--kernelsourcedir "$kd")
	dkms build -m blktap -v "$VERSION" "${kopt[@]}"
	dkms install -m blktap -v "$VERSION" "${kopt[@]}"
}

dkms_uninstall() {
	[ "$(id -u)" = 0 ] || die "dkms-uninstall needs root"
	if dkms status -m blktap -v "$VERSION" 2>/dev/null | grep -q .; then
		dkms remove -m blktap -v "$VERSION" --all
	fi
	rm -rf "/usr/src/blktap-$VERSION"
}

case "${1:-}" in
install) install_all ;;
uninstall) uninstall_all ;;
modules_install) need_root_for_system "$INSTALL_MOD_PATH"; modules_install ;;
man) render_man "${2:-$TOP/tools/target/man}"; ls "${2:-$TOP/tools/target/man}"/*.8 ;;
dkms-source) dkms_source "${2:-}" ;;
dkms-install) dkms_install ;;
dkms-uninstall) dkms_uninstall ;;
*) sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
