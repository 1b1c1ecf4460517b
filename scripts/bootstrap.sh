#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs everything blktap-rs needs on a Debian bookworm machine: the clang-19 toolchain,
# kernel build dependencies, QEMU, busybox, fio, the rust-src component and bindgen-cli, and
# what the real tapdisk needs to build.
# Idempotent and quick when everything is present.
set -euo pipefail
. "$(dirname "$0")/common.sh"

BINDGEN_VERSION=0.72.1
APT_PACKAGES=(clang-19 libclang-19-dev lld-19 llvm-19 bc flex bison libelf-dev libssl-dev
	cpio busybox-static qemu-system-x86 fio kmod rsync xz-utils e2fsprogs dwarves
	linux-libc-dev python3-docutils dkms udev
	# the real tapdisk 3.55.5 (scripts/build-tapdisk.sh) and the NBD client it is benchmarked with
	build-essential autoconf automake libtool pkg-config libaio-dev libxen-dev uuid-dev
	zlib1g-dev nbd-client
	# OpenXT's legacy userspace (scripts/build-openxt.sh) applies its build patch
	patch)

apt_ensure "${APT_PACKAGES[@]}"

command -v rustup >/dev/null || die "rustup not found: install Rust with rustup first"
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
	log "adding the rust-src component"
	rustup component add rust-src
fi
if ! bindgen --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
	log "installing bindgen-cli $BINDGEN_VERSION (a few minutes)"
	cargo install --locked "bindgen-cli@$BINDGEN_VERSION"
fi
