#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Scan a console log of the test VM for kernel splats (WARN, BUG, Oops, KASAN, lockdep, RCU
# stalls, hung tasks, panics, list/refcount/slab corruption...). Each one is printed with some
# context and blamed on the test whose "blktap-test: start N NAME" marker (written to /dev/kmsg
# by scripts/vm-init.sh) precedes it.
#
#   scripts/check-kmsg.sh [--context N] [--attrib FILE] [--quiet] LOG
#
# Exit status: 0 no splat, 1 splat(s) found, 2 usage error.
#   --context N    lines shown before each splat (default 5)
#   --attrib FILE  also write one "NUM<TAB>NAME<TAB>during|after" line per splat; NUM is 0
#                  outside tests, NAME is then "boot" or the runner's phase ("teardown")
#   --quiet        only the exit status and the attribution file
# BLKTAP_KMSG_IGNORE=ERE ignores matching lines (for a known, accepted message; keep it rare).
# Allocation failure reports between a test's "fault injection on/off" marks are expected.
set -euo pipefail

ctx=5 attrib=/dev/null quiet=0 log=
while [ $# -gt 0 ]; do
	case "$1" in
	--context) ctx=${2:?}; shift 2 ;;
	--attrib) attrib=${2:?}; shift 2 ;;
	--quiet) quiet=1; shift ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "check-kmsg: unknown option $1" >&2; exit 2 ;;
	*) log=$1; shift ;;
	esac
done
if [ -z "$log" ] || [ ! -r "$log" ]; then
	echo "usage: check-kmsg.sh [--context N] [--attrib FILE] [--quiet] LOG" >&2
	exit 2
fi

# What counts as a splat. "cut here" opens every WARN/BUG report, so the block then shows the
# whole report; the rest catches reports that do not use it (lockdep, KASAN, RCU, hung tasks,
# SLUB, panics) and a few that must never be missed even when the header line got mangled.
pattern='cut here|WARNING:|BUG:|kernel BUG at|BUG [^ ]+ \((Not t|T)ainted\)|Oops|KASAN|UBSAN|KFENCE'
pattern+='|possible circular locking|possible recursive locking|inconsistent lock state'
pattern+='|suspicious RCU usage|DEBUG_LOCKS_WARN_ON|detected stall|RCU stall|stall on CPU'
pattern+='|hung task|blocked for more than|INFO: task .* blocked|soft lockup|hard LOCKUP|Call Trace:'
pattern+='|[Kk]ernel panic|general protection fault|double fault|stack-protector|Unable to handle'
pattern+='|unable to handle|refcount_t:|list_add corruption|list_del corruption|Bad page'
pattern+='|Poison overwritten|Redzone|Freepointer|Object padding|Slab corruption|panicked at'

# With CONFIG_PRINTK_TIME every kernel line carries "[    1.234567] ", and only text after such a
# stamp is scanned: test output (which init prefixes with "# ") may then talk about warnings
# freely. A kernel line can still land in the middle of a userspace line on the serial console,
# which is why the stamp is searched anywhere in the line. A line starting with "# [ stamp]" is
# a test that echoed dmesg verbatim; tests must not do that (use kmsg_since in tests/lib).
stamped=1
grep -qE '^\[ *[0-9]+\.[0-9]+\] ' "$log" || stamped=0

awk -v pat="$pattern" -v ign="${BLKTAP_KMSG_IGNORE:-}" -v ctx="$ctx" -v stamped="$stamped" \
    -v attrib="$attrib" -v quiet="$quiet" -v logname="$log" '
function kernel_text(line,   i) {
	if (!stamped)
		return line ~ /^# / ? "" : line
	if (line ~ /^# \[ *[0-9]+\.[0-9]+\]/)
		return ""
	if (!match(line, /\[ *[0-9]+\.[0-9]+\] /))
		return ""
	return substr(line, RSTART + RLENGTH)
}
function out(s) { if (!quiet) print s }
function remember(line) { ring[NR] = line; delete ring[NR - ctx] }
BEGIN { num = 0; name = "boot"; when = "during"; splats = 0; inblock = 0 }
{
	line = $0
	sub(/\r$/, "", line)
	# Markers: "blktap-test: start N NAME", "blktap-test: end N NAME rc=R".
	if (match(line, /blktap-test: (start|end) [0-9]+ [^ ]+/)) {
		split(substr(line, RSTART, RLENGTH), f, " ")
		num = f[3]; name = f[4]; when = (f[2] == "start") ? "during" : "after"
		if (inblock) { inblock = 0; out("") }
	} else if (match(line, /blktap-test: phase [^ ]+/)) {
		# Work of the runner itself (e.g. the final rmmod): no test to blame.
		split(substr(line, RSTART, RLENGTH), f, " ")
		num = 0; name = f[3]; when = "during"
		if (inblock) { inblock = 0; out("") }
	}
	text = kernel_text(line)
	# Between the "fault injection on" and "off" marks of a test, an allocation failure report
	# (warn_alloc: the kernel saying an allocation failed, which the test causes on purpose)
	# is expected: its stack dump is not a splat. Anything else in it still is.
	if (text ~ /blktap-test: [^ ]+: fault injection (on|off)$/) finj = (text ~ / on$/)
	if (finj && text ~ /(page allocation failure|vmalloc error):/) allocfail = 1
	if (allocfail && text ~ /<\/TASK>/) allocfail = 0
	hit = text != "" && text ~ pat && text !~ /blktap-test: / && !(ign != "" && text ~ ign)
	if (hit && allocfail && text ~ /Call Trace:/) hit = 0

	if (inblock) {
		# A report goes on while kernel lines keep coming, up to 40 lines past its last
		# matching line, and stops at its end marker. At most 150 lines are shown.
		if (hit) last = NR
		if (text != "" && NR - last <= 40 && NR - start < 150) {
			out(line)
			if (text ~ /---\[ end (trace|Kernel panic)/) { inblock = 0; out("") }
			remember(line)
			next
		}
		inblock = 0
		out("")
	}
	if (hit) {
		splats++
		who = (num == 0) ? ("during " name) : (when " test " num " " name)
		out(sprintf("==== kernel splat #%d %s (%s:%d) ====", splats, who, logname, NR))
		for (i = NR - ctx; i < NR; i++)
			if (i in ring) out(ring[i])
		out(line)
		printf "%d\t%s\t%s\n", num, name, when > attrib
		inblock = 1; start = NR; last = NR
	}
	remember(line)
}
END {
	if (inblock) out("")
	if (splats) out(sprintf("check-kmsg: %d kernel splat(s) in %s", splats, logname))
	exit splats ? 1 : 0
}' "$log"
