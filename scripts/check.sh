#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: every test of the project, ending with one line "N passed, N failed".
#
#   1. host: the three copies of the ABI agree (scripts/check-uapi.sh: the C header against the
#      V-XS contract and the driver's uapi.rs; the userspace library's by its cargo test); the
#      module builds without warnings, under CLIPPY=1 too, and is rustfmt-clean;
#   2. host: `cargo test` of the userspace workspace (tools/); the docs render; udev rules,
#      DESTDIR install/uninstall and a DKMS round trip (whose module then loads in a VM) work;
#   3. VM (debug kernel: KASAN, lockdep, Rust debug assertions): KUnit suites at insmod and the
#      selftests of tests/, failing on any kernel splat; the tapdisk interop tests with the
#      real tapdisk 3.55.5, and the openxt tests with OpenXT's legacy tapdisk2/tap-ctl and a
#      tapdisk 3.55.5 built with OpenXT's control name (all built from ../shared/vendor; SKIP
#      with the reason without them);
#   4. a second, short VM with kmemleak on for the fault-injection test;
#   5. Debian's stock kernels: the module built through the DKMS path for 7.3.4+deb13-amd64
#      and sid's 7.2.13+deb14-amd64 (Rust metadata rebuilt from their linux-source) and
#      selftests on each stock, signed vmlinuz (scripts/test-stock-kernel.sh --release all); the Debian packages of `make deb` installed, used and
#      purged on this machine (scripts/test-deb.sh).
#
# The Xen suite (`make xen-check`) is a CI step of its own (.ci/run), not part of this.
# BLKTAP_TESTS selects VM selftests (default: all) and leaves out steps 4 and 5.
set -uo pipefail
. "$(dirname "$0")/common.sh"
cd "$TOP"

passed=0
failed=0
summary=()
record() { # name passed failed
	passed=$((passed + $2)); failed=$((failed + $3))
	summary+=("$(printf '%-28s %4d passed, %d failed' "$1" "$2" "$3")")
}
check_cmd() { # name command...: one test that passes when the command does
	local name=$1; shift
	if "$@"; then record "$name" 1 0; else log "FAILED: $name"; record "$name" 0 1; fi
}
results=${BLKTAP_RESULTS:-$TOP/results}
mkdir -p "$results"
start=$(date +%s)

kdir=${KDIR:-$("$TOP/scripts/build-kernel.sh" debug)} || die "no test kernel (see above)"
export KDIR=$kdir
log "kernel build tree: $kdir"

warn_free() { # build and fail on any compiler or clippy warning
	local out; out=$("$TOP/scripts/kmake.sh" "$@" 2>&1); local rc=$?
	printf '%s\n' "$out" > "$results/build$*.log"
	if [ $rc -ne 0 ] || grep -qE '^(warning|error)' <<<"$out"; then
		grep -E '^(warning|error)' -A8 <<<"$out" | head -60; return 1
	fi
}
rustfmt_clean() {
	local ksrc; ksrc=$("$TOP/scripts/fetch-kernel.sh") || return 1
	rustfmt --check --config-path "$ksrc/.rustfmt.toml" drivers/block/blktap/blktap.rs &&
		(cd tools && cargo fmt --check)
}
check_cmd "ABI copies agree (check-uapi)" "$TOP/scripts/check-uapi.sh"
check_cmd "module build (CLIPPY=1)" warn_free modules CLIPPY=1
check_cmd "module build" warn_free modules
check_cmd "rustfmt" rustfmt_clean
check_cmd "docs (rst2html -W)" "$TOP/scripts/docs.sh"
check_cmd "udev rules" "$TOP/scripts/test-udev.sh"

# Host tests of the userspace workspace.
target=x86_64-unknown-linux-gnu
if (cd tools && cargo test --target "$target" 2>&1) > "$results/cargo-test.log"; then :; fi
cp=$(grep -E '^test result:' "$results/cargo-test.log" | sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/' |
	awk '{p+=$1; f+=$2} END {print p+0, f+0}')
read -r cpass cfail <<<"$cp"
if ! grep -q '^test result:' "$results/cargo-test.log"; then
	tail -n 30 "$results/cargo-test.log"; cfail=$((cfail + 1))
fi
record "cargo test (tools)" "$cpass" "$cfail"

# Static userspace binaries for the guest.
if ! (cd tools && cargo build --release --target "$target" 2>&1) > "$results/cargo-build.log"; then
	tail -n 30 "$results/cargo-build.log"; record "tools build" 0 1
fi
check_cmd "install/uninstall (DESTDIR)" "$TOP/scripts/test-install.sh"
check_cmd "DKMS add/build/install + load" "$TOP/scripts/test-dkms.sh"
# The real clients for the interop tests, built from ../shared/vendor and cached: tapdisk 3.55.5,
# OpenXT's legacy userspace and tapdisk 3.55.5 with OpenXT's control name. Without one, its tests
# report SKIP with the reason, and the summary says so.
client_opts=()
client_skips=()
client() { # OPTION CACHE WHAT BUILD...
	local opt=$1 cache=$2 what=$3 dir reason
	shift 3
	if dir=$("$@" 2> "$results/$cache-build.log"); then
		client_opts+=("--$opt" "$dir")
	else
		reason=$(cat "$CACHE_DIR/$cache/SKIP-REASON" 2>/dev/null || tail -n 1 "$results/$cache-build.log")
		log "$what tests will SKIP: $reason"
		client_opts+=("--$opt-skip" "$reason")
		client_skips+=("$what tests SKIPPED: $reason")
	fi
}
client tapdisk tapdisk "tapdisk interop" "$TOP/scripts/build-tapdisk.sh"
client openxt openxt "OpenXT legacy (openxt)" "$TOP/scripts/build-openxt.sh"
client tapdisk-oxt tapdisk-oxt "tapdisk with OpenXT's control name (openxt_05)" \
	"$TOP/scripts/build-tapdisk.sh" --openxt-name
bins=()
for b in blktapd blktap-ctl blktap-test; do
	[ -x "tools/target/$target/release/$b" ] && bins+=(--bin "tools/target/$target/release/$b")
done
# The kernel's NBD client beside the driver (tapdisk_12_nbd; it skips without them).
extra_modules=()
if [ -f "$kdir/drivers/block/nbd.ko" ] && [ -x /usr/sbin/nbd-client ]; then
	extra_modules+=(--module "$kdir/drivers/block/nbd.ko")
	bins+=(--bin /usr/sbin/nbd-client)
fi

# The VM run: KUnit at insmod plus the selftests. It takes 8-10 minutes on an idle host; the
# limit (vm-run's default is 10 minutes) leaves room for a loaded one.
vm_out="$results/vm.out"
"$TOP/scripts/vm-run.sh" --kdir "$kdir" --module drivers/block/blktap/blktap.ko "${extra_modules[@]}" \
	"${bins[@]}" "${client_opts[@]}" --tests "${BLKTAP_TESTS:-all}" --results "$results/vm" --timeout 2400 --quiet \
	> "$vm_out" 2>&1
vm_rc=$?
cat "$vm_out"
kunit=$(sed -nE 's/.*kunit: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$vm_out" | tail -n1)
if [ -n "$kunit" ]; then read -r kp kf <<<"$kunit"; record "KUnit cases" "$kp" "$kf"; fi
vm=$(sed -nE 's/^vm: ([0-9]+) passed, ([0-9]+) failed.*/\1 \2/p' "$vm_out" | tail -n1)
if [ -n "$vm" ]; then
	read -r vp vf <<<"$vm"
	record "VM selftests" "$vp" "$vf"
	# A clean test list with a failing run means a kernel splat, a hang or a lost result.
	if [ "$vm_rc" -ne 0 ] && [ "$vf" -eq 0 ]; then record "VM kernel log / completion" 0 1; fi
else
	record "VM run" 0 1
fi

# The fault-injection test needs kmemleak, which costs too much to have on for the whole run:
# a VM of its own (about a minute).
fi_out="$results/vm-faultinject.out"
if [ -z "${BLKTAP_TESTS:-}" ]; then
	"$TOP/scripts/vm-run.sh" --kdir "$kdir" --module drivers/block/blktap/blktap.ko "${bins[@]}" \
		--tests faultinject --append kmemleak=on --results "$results/vm-faultinject" \
		--timeout 900 --quiet > "$fi_out" 2>&1
	fi_rc=$?
	cat "$fi_out"
	fi=$(sed -nE 's/^vm: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/p' "$fi_out" | tail -n1)
	if [ -n "$fi" ]; then
		read -r fp ff fs <<<"$fi"
		# Here a skip is a failure: this VM exists to run it.
		record "fault injection + kmemleak" "$fp" "$((ff + fs))"
		if [ "$fi_rc" -ne 0 ] && [ "$ff" -eq 0 ]; then record "fault-injection VM log" 0 1; fi
	else
		record "fault-injection VM run" 0 1
	fi
fi

# suite NAME PREFIX COMMAND...: a KTAP script whose last line is "PREFIX: N passed, N failed";
# its counts go into the summary; a missing summary line counts as one failure.
suite() {
	local name=$1 prefix=$2 out counts
	shift 2
	out="$results/$prefix.out"
	"$@" > "$out" 2>&1
	cat "$out"
	counts=$(sed -nE "s/^$prefix: ([0-9]+) passed, ([0-9]+) failed\$/\1 \2/p" "$out" | tail -n1)
	if [ -n "$counts" ]; then
		local p f
		read -r p f <<<"$counts"
		record "$name" "$p" "$f"
	else
		record "$name (no summary line)" 0 1
	fi
}
if [ -z "${BLKTAP_TESTS:-}" ]; then
	suite "stock kernels 7.3.4, 7.2.13 (DKMS, VM)" stock "$TOP/scripts/test-stock-kernel.sh" --release all
	suite "Debian packages (dpkg)" deb "$TOP/scripts/test-deb.sh"
fi

echo
echo "== summary ($(( $(date +%s) - start )) s) =="
printf '%s\n' "${summary[@]}"
[ ${#client_skips[@]} -eq 0 ] || printf '%s\n' "${client_skips[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
