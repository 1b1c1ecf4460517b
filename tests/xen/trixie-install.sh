#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The Debian 13 administrator's steps of Documentation/admin-guide.rst ("A Debian 13 Xen
# host"), run by scripts/xen-check.sh --flavour trixie as root in the chroot that becomes the
# trixie dom0 (debootstrap'd by it, apt's archives and the DKMS cache kept between runs):
#
#   trixie-install.sh base RELEASE     trixie-backports; the stock kernel RELEASE, its headers
#                                      and the linux-source of the same version; Xen
#                                      (xen-system-amd64); trixie's rustc, rust-src and bindgen,
#                                      which are the stock kernel's own; DKMS
#   trixie-install.sh debs RELEASE DIR the project's packages in DIR (apt install ./*.deb): DKMS
#                                      builds blktap.ko for RELEASE when the package is
#                                      installed; fails unless modinfo then finds it there
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cmd=${1:?usage: trixie-install.sh base|debs RELEASE [DIR]}
release=${2:?usage: trixie-install.sh base|debs RELEASE [DIR]}
series=${release%%-*}
series=${series%.*}
apt_install() { apt-get install -y -q --no-install-recommends "$@"; }

case "$cmd" in
base)
	echo "deb http://deb.debian.org/debian trixie-backports main" > /etc/apt/sources.list.d/trixie-backports.list
	apt-get update -q
	# The stock kernel with CONFIG_RUST=y is trixie-backports' (trixie's 6.12 has no Rust).
	apt_install -t trixie-backports "linux-image-$release" "linux-headers-$release" "linux-source-$series"
	# Xen 4.20: the hypervisor (/boot/xen-4.20-amd64.gz) and its tools, xl and the hotplug
	# scripts (block-tap among them).
	apt_install xen-system-amd64 xenstore-utils
	# What DKMS needs to build a Rust module for headers without Rust metadata: trixie's own
	# rustc 1.85.1 and bindgen 0.71.1 are the versions the stock kernel was built with.
	apt_install dkms rustc rust-src bindgen
	;;
debs)
	dir=${3:?usage: trixie-install.sh debs RELEASE DIR}
	# With -t trixie-backports, as the kernel: its packages brought trixie-backports'
	# libelf1t64, and trixie's libelf-dev (which blktap-rs-dkms needs for the kernel's objtool)
	# wants trixie's older one: plain apt gives up ("libelf-dev : Depends: libelf1t64 (=
	# 0.192-4) but 0.196-1~bpo13+2 is to be installed").
	apt_install -t trixie-backports "$dir"/blktap-rs-dkms_*.deb "$dir"/blktap-rs-tools_*.deb
	# The postinst builds for the running kernel and the newest installed one; in a chroot the
	# running kernel is the host's, so RELEASE is built by autoinstall when it was not.
	if ! modinfo -k "$release" -n blktap > /dev/null 2>&1; then
		dkms autoinstall -k "$release"
	fi
	modinfo -k "$release" -F filename blktap
	dkms status
	;;
*) echo "trixie-install.sh: unknown step $cmd" >&2; exit 2 ;;
esac
