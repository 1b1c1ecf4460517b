# SPDX-License-Identifier: GPL-2.0
# KTAP output for the host-side test scripts (test-*.sh, docs.sh). Sourced, never executed.
#
#   ok DESCRIPTION                   a passing test point
#   skip DESCRIPTION REASON          a skipped one (counts as passed)
#   not_ok DESCRIPTION [FILE]        a failing one; the last lines of FILE as diagnostics
#   ktap_finish [NAME]               the plan, then "NAME: N passed, N failed" when NAME is
#                                    given; exits 0 if nothing failed
#   ktap_bail [NAME] REASON [FILE]   a failing point for REASON, then ktap_finish NAME
#
# Counters: $ktap_n test points so far, $ktap_failed of them failed.

ktap_n=0
ktap_failed=0
echo "TAP version 13"
ok() { ktap_n=$((ktap_n + 1)); echo "ok $ktap_n $1"; }
skip() { ktap_n=$((ktap_n + 1)); echo "ok $ktap_n $1 # SKIP $2"; }
not_ok() {
	ktap_n=$((ktap_n + 1)); ktap_failed=$((ktap_failed + 1)); echo "not ok $ktap_n $1"
	[ -z "${2:-}" ] || [ ! -s "$2" ] || tail -n 25 "$2" | sed 's/^/# /'
}
ktap_finish() {
	echo "1..$ktap_n"
	[ -z "${1:-}" ] || echo "$1: $((ktap_n - ktap_failed)) passed, $ktap_failed failed"
	[ "$ktap_failed" = 0 ]
	exit
}
ktap_bail() { local name=$1; shift; not_ok "$@"; ktap_finish "$name"; }

# dkms_step NAME COMMAND...: one dkms step as a test point, its output in $work/log/NAME; on
# failure, the tail of DKMS's make.log (under $work/dkms) too, kept as $work/log/make-NAME.log.
dkms_step() {
	local name=$1 t0=$SECONDS mlog
	shift
	if "$@" > "$work/log/$name" 2>&1; then
		ok "dkms $name ($((SECONDS - t0)) s)"
		return 0
	fi
	not_ok "dkms $name" "$work/log/$name"
	mlog=$(find "$work/dkms" -name make.log 2>/dev/null | head -n1)
	[ -z "$mlog" ] || { echo "# --- $mlog"; tail -n 25 "$mlog" | sed 's/^/# /'; cp "$mlog" "$work/log/make-$name.log"; }
	return 1
}
