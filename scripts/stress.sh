#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make stress`: the long version of the fault, teardown, fuzz, security, load, stuck-daemon
# (timeout, abort, stale write, ring exhaustion, killed processes) and recovery tests, and
# tapdisk_13 with a 200 s pause of the real tapdisk (longer than the old 180 s default timeout;
# built by scripts/build-tapdisk.sh, or the test skips). Boots
# the debug VM with BLKTAP_STRESS=1 on the kernel command line (init passes it to the tests as
# environment; they scale their iteration counts with it, see `scaled` in tests/lib/common.sh),
# runs the selected tests and prints one row per group: tests run, iterations, I/Os issued, I/Os
# that failed as the test expected (daemon kills, hostile responses), and kernel reports (WARN,
# BUG, KASAN, lockdep, hung task... found in the console log; must be 0).
#
#   scripts/stress.sh [--tests "fault teardown fuzz security stress hang recovery tapdisk_13"]
#                     [--seed N] [--timeout SECS] [--test-timeout SECS] [--results DIR] [--kvm]
#   scripts/stress.sh --report RESULTS_DIR     # print the table of an earlier run again
#
# BLKTAP_STRESS_TESTS selects tests too. --seed makes the randomised tests reproducible (it is
# passed as BLKTAP_SEED; each test prints the seed it used either way). Exit status 0 only if
# every test passed and no kernel report was found.
set -uo pipefail
. "$(dirname "$0")/common.sh"
cd "$TOP" || exit 1

tests=${BLKTAP_STRESS_TESTS:-fault teardown fuzz security stress hang recovery tapdisk_13}
seed=
timeout=36000
test_timeout=7200
results=$TOP/results/stress
extra=()
report_only=
while [ $# -gt 0 ]; do
	case "$1" in
	--tests) tests=${2:?}; shift 2 ;;
	--seed) seed=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--test-timeout) test_timeout=${2:?}; shift 2 ;;
	--results) results=${2:?}; shift 2 ;;
	--kvm) extra+=(--kvm); shift ;;
	--report) report_only=${2:?}; shift 2 ;;
	-h|--help) sed -n '4,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

# table CONSOLE SPLATS: one row per group from the "# STAT" lines of each test, the test
# results and the kernel reports that scripts/check-kmsg.sh attributed to each test.
table() { # CONSOLE SPLATS
	local console=$1 splats=$2
	awk -v splats="$splats" '
	BEGIN {
		while ((getline l < splats) > 0) { split(l, f, "\t"); if (f[1] > 0) rep[f[2]]++; else other++ }
	}
	{ sub(/\r$/, "") }
	/^# start [0-9]+ / { cur = $4; next }
	/^(not )?ok [0-9]+ / {
		name = ($1 == "not") ? $4 : $3
		sub(/\[.*/, "", name) # a kernel line may have landed right after the name
		status[name] = ($1 == "not") ? "FAIL" : (($0 ~ /# SKIP/) ? "skip" : "ok")
		next
	}
	/^# STAT / && cur != "" {
		g = ""; it = io = fl = 0
		for (i = 3; i <= NF; i++) {
			split($i, kv, "=")
			if (kv[1] == "group") g = kv[2]
			else if (kv[1] == "iterations") it = kv[2]
			else if (kv[1] == "ios") io = kv[2]
			else if (kv[1] == "failed") fl = kv[2]
		}
		if (!(cur in grp)) { grp[cur] = g; order[++n] = cur }
		# Later groups of a test (fuzz_01: evil, then evil-deep) get rows of their own.
		if (!(g in gseen)) { gseen[g] = 1; allg[++na] = g }
		its[g] += it; ios[g] += io; fails[g] += fl
	}
	END {
		printf "%-18s %5s %10s %12s %14s %8s %s\n", "group", "tests", "iterations", "I/Os", "failed (exp.)", "kernel", "result"
		for (i = 1; i <= n; i++) {
			t = order[i]; g = grp[t]
			if (!(g in seen)) { seen[g] = 1; gorder[++m] = g }
			tests[g]++; krep[g] += rep[t]
			if (status[t] != "ok") res[g] = "FAIL"
		}
		for (i = 1; i <= na; i++) if (!(allg[i] in seen)) { seen[allg[i]] = 1; gorder[++m] = allg[i] }
		for (t in status) if (!(t in grp)) { g = "(no stats)"; if (!(g in seen)) { seen[g] = 1; gorder[++m] = g } tests[g]++; krep[g] += rep[t]; if (status[t] != "ok") res[g] = "FAIL" }
		for (i = 1; i <= m; i++) {
			g = gorder[i]
			printf "%-18s %5d %10d %12d %14d %8d %s\n", g, tests[g], its[g], ios[g], fails[g], krep[g], (g in res) ? res[g] : "ok"
			T += tests[g]; I += its[g]; O += ios[g]; F += fails[g]; K += krep[g]
		}
		printf "%-18s %5d %10d %12d %14d %8d\n", "total", T, I, O, F, K + other
		if (other) printf "(%d kernel report(s) outside any test)\n", other
	}' "$console"
}

if [ -n "$report_only" ]; then
	table "$report_only/vm/console.log" "$report_only/vm/splats.tsv"
	exit 0
fi

target=x86_64-unknown-linux-gnu
bin=$TOP/tools/target/$target/release
log "building the tools"
(cd tools && cargo build --release --target "$target" 2>&1) > /dev/null || die "cargo build failed (cd tools && cargo build --release)"
module=drivers/block/blktap/blktap.ko
[ -f "$module" ] || die "no $module: run make first"
mkdir -p "$results"
append="BLKTAP_STRESS=1"
[ -z "$seed" ] || append+=" BLKTAP_SEED=$seed"

start=$(date +%s)
vm_out=$results/vm.out
log "running \"$tests\" in stress mode (results in $results)"
"$TOP/scripts/vm-run.sh" --module "$module" --bin "$bin/blktapd" --bin "$bin/blktap-ctl" \
	--bin "$bin/blktap-test" --tests "$tests" --append "$append" --timeout "$timeout" \
	--test-timeout "$test_timeout" --results "$results/vm" --quiet "${extra[@]}" > "$vm_out" 2>&1
vm_rc=$?
cat "$vm_out"
console=$results/vm/console.log
splats=$results/vm/splats.tsv
[ -f "$console" ] || die "no console log in $results/vm"

echo
echo "== stress results ($(( $(date +%s) - start )) s) =="
table "$console" "$splats" | tee "$results/table.txt"
[ "$vm_rc" = 0 ] || { echo "stress: FAILED (see $console)"; exit 1; }
echo "stress: passed"
