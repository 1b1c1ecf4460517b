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
