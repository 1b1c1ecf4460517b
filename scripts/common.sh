# SPDX-License-Identifier: GPL-2.0
# Shared settings for the blktap-rs scripts. Sourced, never executed.

# Kernel series we build against; the Debian package is linux-source-$KVER_SERIES.
KVER_SERIES=${KVER_SERIES:-7.3}
CACHE_DIR=${BLKTAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blktap-rs}
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LLVM_SUFFIX=${LLVM_SUFFIX:--19}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm${LLVM_SUFFIX}/lib}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[blktap-rs] %s\n' "$*" >&2; }
die() { printf '[blktap-rs] error: %s\n' "$*" >&2; exit 1; }

# apt_ensure PACKAGE...: install the Debian packages that are missing (quietly; sudo if not root).
apt_ensure() {
	local p missing=() sudo=
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || return 0
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing: ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# For the scripts that build a client userspace into the cache (build-tapdisk.sh,
# build-openxt.sh), which define $skip_file and unavailable().
#
# reuse_build OUT: print OUT/bin and exit 0 if OUT is built; otherwise return holding the lock
# of OUT's cache directory (fd 9) so that one build at a time happens.
reuse_build() {
	local pass
	for pass in 1 2; do
		if [ -f "$1/.built" ]; then rm -f "$skip_file"; echo "$1/bin"; exit 0; fi
		[ "$pass" = 2 ] || { exec 9>"$(dirname "$1")/.lock"; flock 9; }
	done
}

# need_build_deps PACKAGES FILE|COMMAND...: unavailable (naming the Debian PACKAGES to install)
# unless every absolute FILE exists and every other word is a command.
need_build_deps() {
	local pkgs=$1 d
	shift
	for d; do
		case "$d" in
		/*) [ -f "$d" ] || unavailable "build dependency missing ($d): apt-get install $pkgs" ;;
		*) command -v "$d" >/dev/null || unavailable "build tool missing ($d): apt-get install $pkgs" ;;
		esac
	done
}

# finish_build OUT SRC LOG WHAT START PATH...: copy the binaries SRC/PATH into OUT/bin, strip them
# and check that they are static (a dynamic one would not run in the busybox VM: say so now, not
# as a mystery there), drop the tree SRC (only needed to rebuild), mark OUT built, print OUT/bin.
finish_build() {
	local out=$1 src=$2 blog=$3 what=$4 start=$5 p b
	shift 5
	for p; do cp "$src/$p" "$out/bin/"; done
	strip "$out/bin/"*
	for p; do
		b=$(basename "$p")
		if ldd "$out/bin/$b" >/dev/null 2>&1; then unavailable "$b is not static (see $blog)"; fi
	done
	rm -rf "$src"
	log "$what built in $(( $(date +%s) - start )) s"
	touch "$out/.built"
	rm -f "$skip_file"
	echo "$out/bin"
}
