#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Tests `make install` / `make uninstall` (scripts/install.sh) into staging directories only:
#
#   scripts/test-install.sh
#
# Needs the built module (make) and tools (make tools). Checks, in a fresh DESTDIR: every file
# lands where the admin guide says, with the right mode; the module's vermagic is the kernel's;
# the man pages format without warnings; the manifest lists exactly the installed files;
# a second install changes nothing; uninstall leaves the staging directory as it was (a file
# placed there beforehand survives). Then, with INSTALL_MOD_PATH holding a copy of a module
# tree (modules.order), depmod indexes the module, and uninstall takes it out of the index.
# Prints KTAP; exit status 0 if every check passed, 1 otherwise.
set -uo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "$0")/common.sh"

n=0
failed=0
check() { # check DESCRIPTION COMMAND...
	local d=$1 out; shift
	n=$((n + 1))
	if out=$("$@" 2>&1); then echo "ok $n $d"
	else failed=$((failed + 1)); echo "not ok $n $d"; printf '%s\n' "$out" | tail -n 20 | sed 's/^/# /'; fi
}
echo "TAP version 13"

kdir=${KDIR:-}
if [ -z "$kdir" ]; then
	# shellcheck disable=SC2012 # cache paths are ours
	stamp=$(ls -1t "$CACHE_DIR"/build/debug-*/.blktap-built 2>/dev/null | head -n1 || true)
	[ -n "$stamp" ] || { echo "Bail out! no kernel: set KDIR"; exit 1; }
	kdir=$(dirname "$stamp")
fi
export KDIR=$kdir
release=$(make -s --no-print-directory -C "$kdir" kernelrelease)
[ -f "$TOP/drivers/block/blktap/blktap.ko" ] || { echo "Bail out! no blktap.ko: run make"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/blktap-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage=$work/stage
mkdir -p "$stage/etc"
echo keep > "$stage/etc/unrelated"
before=$(cd "$stage" && find . | LC_ALL=C sort)

inst() { DESTDIR=$stage "$TOP/scripts/install.sh" "$@"; }
check "make install DESTDIR=... succeeds" inst install

files=(
	"lib/modules/$release/updates/drivers/block/blktap/blktap.ko 644"
	"usr/sbin/blktapd 755"
	"usr/sbin/blktap-ctl 755"
	"usr/lib/udev/rules.d/60-blktap.rules 644"
	"usr/lib/tmpfiles.d/blktap.conf 644"
	"usr/lib/modules-load.d/blktap.conf 644"
	"usr/share/man/man8/blktapd.8 644"
	"usr/share/man/man8/blktap-ctl.8 644"
	"usr/share/man/man8/blktap-ctl-create.8 644"
	"usr/share/man/man8/blktap-ctl-destroy.8 644"
	"usr/share/man/man8/blktap-ctl-alloc.8 644"
	"usr/share/man/man8/blktap-ctl-free.8 644"
	"usr/share/man/man8/blktap-ctl-list.8 644"
	"usr/share/blktap-rs/install-manifest 644"
)
installed_as_expected() {
	local e p m bad=0
	for e in "${files[@]}"; do
		p=${e% *} m=${e##* }
		if [ ! -f "$stage/$p" ]; then echo "missing $p"; bad=1
		elif [ "$(stat -c %a "$stage/$p")" != "$m" ]; then echo "$p has mode $(stat -c %a "$stage/$p"), not $m"; bad=1
		fi
	done
	return $bad
}
check "files and modes as documented" installed_as_expected
check "module vermagic is $release" \
	bash -c "modinfo -F vermagic '$stage/lib/modules/$release/updates/drivers/block/blktap/blktap.ko' | grep -q '^$release '"
check "installed binaries run (--version)" \
	bash -c "'$stage/usr/sbin/blktapd' --version && '$stage/usr/sbin/blktap-ctl' --version"
check "man pages format without warnings" \
	bash -c "out=\$(groff -man -ww -z '$stage'/usr/share/man/man8/*.8 2>&1); [ -z \"\$out\" ] || { echo \"\$out\"; false; }"
manifest_exact() {
	local listed actual
	listed=$(sed -n 's|^f ||p' "$stage/usr/share/blktap-rs/install-manifest" | sed "s|^$stage/||" | LC_ALL=C sort)
	actual=$(cd "$stage" && find . -type f ! -path ./etc/unrelated | sed 's|^\./||' | LC_ALL=C sort)
	[ "$listed" = "$actual" ] || { diff <(echo "$listed") <(echo "$actual"); return 1; }
}
check "the manifest lists exactly the installed files" manifest_exact
snapshot() { (cd "$stage" && find . -type f -exec sha256sum {} + | LC_ALL=C sort); }
first=$(snapshot)
check "a second install succeeds" inst install
check "a second install changes nothing" bash -c "[ \"\$1\" = \"\$2\" ] || diff <(echo \"\$1\") <(echo \"\$2\")" _ "$first" "$(snapshot)"
check "make uninstall DESTDIR=... succeeds" inst uninstall
after=$(cd "$stage" && find . | LC_ALL=C sort)
check "uninstall restores the staging directory" \
	bash -c "[ \"\$1\" = \"\$2\" ] || diff <(echo \"\$1\") <(echo \"\$2\")" _ "$before" "$after"

# A staged module tree (as in an image build): depmod must index the module.
modroot=$work/modroot
mkdir -p "$modroot/lib/modules/$release/kernel"
: > "$modroot/lib/modules/$release/modules.order"
: > "$modroot/lib/modules/$release/modules.builtin"
: > "$modroot/lib/modules/$release/modules.builtin.modinfo"
check "modules_install INSTALL_MOD_PATH=<module tree> succeeds" \
	env DESTDIR="$work/stage2" INSTALL_MOD_PATH="$modroot" "$TOP/scripts/install.sh" modules_install
check "depmod indexed it" \
	bash -c "grep -q '^updates/drivers/block/blktap/blktap.ko:' '$modroot/lib/modules/$release/modules.dep'"
check "uninstall removes it from the tree and the index" bash -c "
	DESTDIR='$work/stage2' INSTALL_MOD_PATH='$modroot' '$TOP/scripts/install.sh' uninstall &&
	[ ! -e '$modroot/lib/modules/$release/updates' ] &&
	! grep -q blktap '$modroot/lib/modules/$release/modules.dep'"

echo "1..$n"
echo "# install: $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
