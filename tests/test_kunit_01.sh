#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The KUnit suites built into blktap.ko (suites named blktap*) run when the module is loaded:
# load it and check their KTAP in the kernel log: at least one suite, every suite and every case
# "ok", none "not ok". Prints "# kunit: P passed, F failed" (cases) for the outer runner.
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

[ -f "$BLKTAP_KO" ] || skip "no $BLKTAP_KO in the initramfs"
[ -d /sys/kernel/debug/kunit ] || grep -q kunit /proc/kallsyms 2>/dev/null ||
	skip "kernel built without CONFIG_KUNIT"

unload_blktap # the suites run at load time, so load it now
mark=$(kmsg_mark)
load_blktap
atexit unload_blktap

# KTAP of a module: "# Subtest: SUITE" at some indentation, the cases one level deeper, then the
# suite's own "ok N SUITE" / "not ok N SUITE". Cases of parameterised tests nest further and
# count under their parent case line.
kmsg_since "$mark" > kunit.log
awk '
function indent(s) { match(s, /^ */); return RLENGTH }
suite == "" && /# Subtest: blktap/ { suite = $NF; lvl = indent($0); ncase = 0; nsuites++; next }
suite != "" && /^ *(not )?ok [0-9]+ / {
	d = indent($0); name = ($1 == "not") ? $4 : $3; bad = ($1 == "not")
	skipped = ($0 ~ /# SKIP/)
	if (d == lvl) {         # one level deeper than the Subtest header: a case
		if (skipped) csk++; else if (bad) cf++; else cp++
		ncase++
		print (bad ? "not ok" : "ok") " " suite "." name (skipped ? " # SKIP" : "")
	} else if (d < lvl && name == suite) {     # the suite result closes it
		if (bad) sf++
		printf "suite %s: %s (%d cases)\n", suite, bad ? "not ok" : "ok", ncase
		suite = ""; done++
	}
}
END {
	printf "# kunit: %d passed, %d failed\n", cp, cf
	if (csk) printf "# kunit: %d skipped\n", csk
	if (nsuites == 0) { print "no blktap* KUnit suite ran"; exit 1 }
	if (done < nsuites) { print "a suite never finished"; exit 1 }
	exit (cf || sf) ? 1 : 0
}' kunit.log && exit 0
grep -A4 -E '(EXPECTATION|ASSERTION) FAILED' kunit.log
fail "KUnit: see above"
