#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Tests the Debian packages of `make deb` on this machine:
#
#   scripts/test-deb.sh [--debs DIR] [--release RELEASE]
#
#   --debs DIR     test the packages in DIR instead of building them (scripts/deb.sh)
#   --release R    the stock kernel to build for with the installed DKMS source (default
#                  7.3.4+deb13-amd64, if scripts/stock-kernel.sh fetch has it in the cache;
#                  skipped otherwise)
#
# The packages' contents and fields are checked, then both are installed with dpkg -i (the
# dkms package's maintainer script registers the module with DKMS), the tools run, DKMS builds
# blktap.ko from the installed /usr/src/blktap-VERSION for the stock kernel's headers, and
# dpkg --purge must remove every file the packages installed and the DKMS registration.
# Changes the real system while it runs (root); refuses to start if blktap-rs is installed.
#
# Prints KTAP, the last line "deb: N passed, N failed"; exit status 0 if nothing failed.
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

debs=
release=7.3.4+deb13-amd64
while [ $# -gt 0 ]; do
	case "$1" in
	--debs) debs=${2:?}; shift 2 ;;
	--release) release=${2:?}; shift 2 ;;
	*) sed -n '6,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done

# shellcheck source=scripts/ktap.sh
. "$TOP/scripts/ktap.sh"
finish() { ktap_finish deb; }
bail() { ktap_bail deb "$1" "${2:-}"; }
check() { # check DESCRIPTION COMMAND...: ok if the command succeeds
	local d=$1
	shift
	if "$@" > "$work/last" 2>&1; then ok "$d"; else not_ok "$d" "$work/last"; fi
}

work=$(mktemp -d "${TMPDIR:-/tmp}/blktap-deb.XXXXXX")
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	# Never leave the packages behind, whatever failed.
	dpkg --purge blktap-rs-dkms blktap-rs-tools > /dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || bail "needs root (dpkg -i)"
if dpkg-query -W -f '${Status}' blktap-rs-dkms blktap-rs-tools 2>/dev/null | grep -q installed; then
	trap - EXIT
	rm -rf "$work"
	bail "blktap-rs packages are installed on this machine: not touching them (dpkg --purge blktap-rs-dkms blktap-rs-tools first)"
fi
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
[ ! -e "/usr/src/blktap-$version" ] ||
	bail "/usr/src/blktap-$version exists (make dkms-install?): make dkms-uninstall first"

# --- build --------------------------------------------------------------------------------------
if [ -z "$debs" ]; then
	t0=$SECONDS
	debs=$work/debs
	"$TOP/scripts/deb.sh" "$debs" > "$work/build.log" 2>&1 || bail "make deb" "$work/build.log"
	ok "make deb ($((SECONDS - t0)) s)"
fi
dkms_deb=$debs/blktap-rs-dkms_${version}_all.deb
tools_deb=$debs/blktap-rs-tools_${version}_amd64.deb
if [ ! -f "$dkms_deb" ] || [ ! -f "$tools_deb" ]; then bail "no $dkms_deb or $tools_deb"; fi

# --- contents -------------------------------------------------------------------------------------
field() { dpkg-deb -f "$1" "$2"; }
has() { dpkg-deb -c "$1" | awk '{print $6}' | sed 's|^\./|/|' | grep -qx "$2"; }
check "blktap-rs-dkms is Architecture: all and depends on dkms" \
	sh -c "[ '$(field "$dkms_deb" Architecture)' = all ] && echo '$(field "$dkms_deb" Depends)' | grep -qw dkms"
missing=()
for f in /usr/src/blktap-"$version"/dkms.conf /usr/src/blktap-"$version"/scripts/dkms-make.sh \
	/usr/src/blktap-"$version"/scripts/prepare-rust-metadata.sh \
	/usr/src/blktap-"$version"/scripts/stock-kernel.sh \
	/usr/src/blktap-"$version"/drivers/block/blktap/blktap.rs \
	/usr/lib/udev/rules.d/60-blktap.rules /usr/lib/tmpfiles.d/blktap.conf \
	/usr/lib/modules-load.d/blktap.conf \
	/usr/share/doc/blktap-rs-dkms/README.md.gz; do
	has "$dkms_deb" "$f" || missing+=("$f")
done
if [ ${#missing[@]} = 0 ]; then ok "blktap-rs-dkms holds the DKMS tree, udev rules, tmpfiles.d and modules-load.d files and docs"
else not_ok "blktap-rs-dkms lacks ${missing[*]}"; fi
missing=()
for f in /usr/sbin/blktapd /usr/sbin/blktap-ctl /usr/share/man/man8/blktapd.8.gz \
	/usr/share/man/man8/blktap-ctl.8.gz; do
	has "$tools_deb" "$f" || missing+=("$f")
done
if [ ${#missing[@]} = 0 ] && [ "$(field "$tools_deb" Architecture)" = amd64 ]; then
	ok "blktap-rs-tools (amd64) holds blktapd, blktap-ctl and their man pages"
else
	not_ok "blktap-rs-tools lacks ${missing[*]} or is not amd64"
fi

# --- install ---------------------------------------------------------------------------------------
dpkg-deb -c "$dkms_deb" > "$work/dkms.files"
dpkg-deb -c "$tools_deb" > "$work/tools.files"
check "dpkg -i of both packages" dpkg -i "$dkms_deb" "$tools_deb"
check "dpkg reports both installed" sh -c \
	"dpkg-query -W -f '\${Status}\n' blktap-rs-dkms blktap-rs-tools | grep -c '^install ok installed' | grep -qx 2"
check "the postinst registered blktap/$version with DKMS" sh -c "dkms status -m blktap -v $version | grep -q ."
check "blktapd and blktap-ctl run (--help)" sh -c "blktapd --help && blktap-ctl --help"
check "man finds blktapd(8) and blktap-ctl(8)" sh -c "MANPATH=/usr/share/man man -w blktapd && MANPATH=/usr/share/man man -w blktap-ctl"

# The packaged source builds for the stock kernel (its headers lack Rust metadata).
root=$CACHE_DIR/stock/root-$release
if [ -f "$root/.blktap-fetched" ]; then
	t0=$SECONDS
	headers=$root/usr/lib/modules/$release/build
	# No signing key is made on this machine for the test (see test-dkms.sh).
	if KSOURCE=$(find "$root/usr/src" -maxdepth 1 -name 'linux-source-*.tar.*' | head -n1) \
		sign_file=/nonexistent dkms build -m blktap -v "$version" -k "$release" \
		--kernelsourcedir "$headers" > "$work/dkms-build" 2>&1 &&
		[ -f "/var/lib/dkms/blktap/$version/$release/x86_64/module/blktap.ko" ]; then
		ok "DKMS builds the installed source for the stock $release ($((SECONDS - t0)) s)"
	else
		not_ok "DKMS builds the installed source for the stock $release" "$work/dkms-build"
	fi
else
	skip "DKMS build for the stock $release" "not fetched (scripts/stock-kernel.sh fetch $release)"
fi

# --- purge -----------------------------------------------------------------------------------------
check "dpkg --purge of both packages" dpkg --purge blktap-rs-dkms blktap-rs-tools
left=()
while read -r path; do
	path=/${path#./}
	[ -f "$path" ] || [ -L "$path" ] && left+=("$path")
done < <(awk '$1 !~ /^d/ {print $6}' "$work/dkms.files" "$work/tools.files")
[ ! -e "/usr/src/blktap-$version" ] || left+=("/usr/src/blktap-$version")
[ ! -e /var/lib/dkms/blktap ] || left+=(/var/lib/dkms/blktap)
if [ ${#left[@]} = 0 ] && ! dpkg-query -W blktap-rs-dkms blktap-rs-tools > /dev/null 2>&1 &&
	! dkms status -m blktap 2>/dev/null | grep -q .; then
	ok "purge leaves no file, no DKMS registration, no dpkg record"
else
	not_ok "purge left ${left[*]:-a dpkg record or DKMS registration}"
fi
finish
