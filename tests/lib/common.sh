# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Helpers for the blktap-rs selftests (busybox ash). Source it first thing:
#
#   . "$(dirname "$0")/lib/common.sh"
#
# Conventions (kselftest): exit 0 pass, 1 fail, 4 skip. The runner (scripts/vm-init.sh) prefixes
# the output with "# ", kills the test with its whole process group after its timeout (120 s, or
# a "# timeout: SECS" line in the test's header) and runs it in a fresh directory under /tmp.
# Never print raw dmesg lines: the host scans the console for kernel splats and would take an
# echoed "[  1.0] WARNING:" for a real one. Use kmsg_since, which strips the timestamps.

# shellcheck disable=SC2034 # used by the tests that source this file
KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

# The module under test. Overridable (e.g. vm-run.sh --append "BLKTAP_MOD=null_blk
# BLKTAP_KO=/lib/modules/null_blk.ko": the kernel hands such words to init as environment) to
# try the harness on a stand-in module.
# shellcheck disable=SC2034
{
BLKTAP_KO=${BLKTAP_KO:-/lib/modules/blktap.ko}
BLKTAP_MOD=${BLKTAP_MOD:-blktap}
BLKTAP_CONTROL=${BLKTAP_CONTROL:-/dev/blktap-control}
BLKTAP_CONTROL_ALT=/dev/blktap/control
MISC_MAJOR=10
}

TEST_NAME=${BLKTAP_TEST_NAME:-$(basename "$0" .sh)}

log() { echo "$*"; }

# Cleanups registered with atexit run in reverse order when the test exits, however it exits.
_atexit_cmds=
atexit() { _atexit_cmds="$*
$_atexit_cmds"; }
_run_atexit() {
	_cmds=$_atexit_cmds
	_atexit_cmds= # a failing cleanup must not loop back into the list
	printf '%s\n' "$_cmds" | while IFS= read -r _c; do
		[ -z "$_c" ] || eval "$_c" || log "cleanup failed: $_c"
	done
}
trap _run_atexit EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*"
	kmsg "FAIL: $*"
	exit "$KSFT_FAIL"
}

# skip "reason": the reason also ends up on the KTAP line ("ok N name # SKIP reason").
skip() {
	echo "SKIP: $*"
	[ -z "${BLKTAP_SKIP_FILE:-}" ] || echo "$*" > "$BLKTAP_SKIP_FILE"
	exit "$KSFT_SKIP"
}

# Write a line to the kernel log, so that it sits next to whatever the kernel says.
kmsg() { echo "<5>blktap-test: $TEST_NAME: $*" > /dev/kmsg 2>/dev/null || true; }

# A mark in the kernel log; kmsg_since MARK prints the kernel messages after it (no timestamps).
kmsg_mark() {
	_mark="mark-$$-$(tr -d ' .' < /proc/uptime)"
	kmsg "$_mark"
	echo "$_mark"
}
kmsg_since() {
	dmesg | awk -v m="$1" 'f { sub(/^\[ *[0-9]+\.[0-9]+\] /, ""); print } index($0, m) { f = 1 }'
}

# wait_for SECS CMD [ARGS...]: poll CMD every 0.1 s until it succeeds; 1 on timeout.
wait_for() {
	_secs=$1
	shift
	_n=$((_secs * 10))
	while [ "$_n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		_n=$((_n - 1))
	done
	"$@"
}

require_cmd() {
	for _c; do command -v "$_c" >/dev/null 2>&1 || skip "$_c not available"; done
}

module_loaded() { [ -d "/sys/module/${1:-$BLKTAP_MOD}" ]; }
module_gone() { ! module_loaded "$@"; }

# load_blktap [PARAM=VALUE...]: insmod blktap.ko unless it is loaded already. Skips the test if
# the initramfs has no blktap.ko (the runner was given none); fails if it does not load.
load_blktap() {
	module_loaded && return 0
	[ -f "$BLKTAP_KO" ] || skip "no $BLKTAP_KO in the initramfs"
	insmod "$BLKTAP_KO" "$@" || fail "insmod $BLKTAP_KO failed (rc=$?)"
	wait_for 5 module_loaded || fail "/sys/module/$BLKTAP_MOD missing after insmod"
}

# unload_blktap: rmmod and check that the module is gone. A no-op if it is not loaded.
unload_blktap() {
	module_loaded || return 0
	rmmod "$BLKTAP_MOD" || fail "rmmod $BLKTAP_MOD failed (rc=$?)"
	wait_for 5 module_gone || fail "/sys/module/$BLKTAP_MOD still present after rmmod"
}

# Major and minor numbers (decimal) of a device node: "MAJOR MINOR".
dev_numbers() {
	_t=$(stat -L -c '%t %T' "$1") || return 1
	# shellcheck disable=SC2086 # two words on purpose
	set -- $_t
	echo "$((0x$1)) $((0x$2))"
}

# expect_chrdev PATH MAJOR [MINOR]
expect_chrdev() {
	[ -e "$1" ] || fail "$1 does not exist"
	[ -c "$1" ] || fail "$1 is not a character device"
	_nums=$(dev_numbers "$1") || fail "cannot stat $1"
	[ "${_nums% *}" = "$2" ] || fail "$1 has major ${_nums% *}, expected $2"
	[ -z "${3:-}" ] || [ "${_nums#* }" = "$3" ] || fail "$1 has minor ${_nums#* }, expected $3"
}
