# SPDX-License-Identifier: GPL-2.0
# Helpers for the tests that drive blktap.ko with the real tapdisk 3.55.5 and tap-ctl (the
# xapi-project/blktap userspace, built by scripts/build-tapdisk.sh and put into the VM by
# scripts/mkinitramfs.sh --tapdisk). Sourced after lib/common.sh.

# shellcheck disable=SC2034 # used by the tests that source this file
TD_NODE_DIR=/dev/xen/blktap-2
TD_MINORS=
TD_SYSLOG=/var/log/messages

# tapdisk_env: skip the test when tapdisk is not in the VM (with the reason the host gave);
# otherwise td_runtime_env.
tapdisk_env() {
	if [ ! -x /usr/libexec/tapdisk ] || ! command -v tap-ctl >/dev/null 2>&1; then
		skip "real tapdisk not in the VM: $(cat /etc/blktap-rs/tapdisk-skip 2>/dev/null ||
			echo 'the VM was built without --tapdisk')"
	fi
	td_runtime_env
}

# td_runtime_env: make what the tapdisks need at run time (/var/run for their control sockets,
# /var/log, syslog on /dev/log), load blktap.ko and register the cleanup of every tap made by
# td_create (once, whichever client's setup calls it first).
td_runtime_env() {
	[ -z "${_td_env_done:-}" ] || return 0
	_td_env_done=1
	mkdir -p /var/run /var/log /run || fail "cannot create /var/run, /var/log"
	if [ ! -S /dev/log ]; then
		# Started once, it outlives the test (it daemonises): later tests reuse it.
		syslogd -O "$TD_SYSLOG" || fail "cannot start syslogd"
		wait_for 5 test -S /dev/log || fail "syslogd made no /dev/log"
	fi
	_td_log_start=$(wc -l < "$TD_SYSLOG" 2>/dev/null || echo 0)
	load_blktap
	atexit td_cleanup
}

# td_ctl MINOR: the tap-ctl that made tap MINOR with td_create_with (tap-ctl, 3.55.5's, if none
# did): the control protocols of the clients differ, so each tap is driven by its own.
td_ctl() { eval "echo \"\${TD_CTL_$1:-tap-ctl}\""; }

# td_log: what tapdisk and tap-ctl logged since tapdisk_env (last 40 lines).
td_log() {
	[ -f "$TD_SYSLOG" ] || return 0
	log "--- syslog since the test started ---"
	tail -n "+$((_td_log_start + 1))" "$TD_SYSLOG" | tail -n 40
}

# td_fail MESSAGE: fail with tapdisk's log printed first.
td_fail() {
	td_log
	fail "$@"
}

# td_run NAME CMD...: run CMD (tap-ctl ...) with stdout and stderr in files NAME.out and
# NAME.err. Never use $(tap-ctl ...): a tapdisk it spawns inherits the pipe, and the command
# substitution waits for it. Returns CMD's exit status.
td_run() {
	_tr_name=$1
	shift
	"$@" < /dev/null > "$_tr_name.out" 2> "$_tr_name.err"
}

# td_create [tap-ctl create ARGS...]: tap-ctl create (allocate, spawn, attach, open). Sets
# TD_MINOR, TD_DEV (the node tap-ctl made, /dev/xen/blktap-2/tapdevN), TD_DISK (tdX) and TD_PID
# (the tapdisk serving it); the tap is destroyed at exit.
td_create() { td_create_with tap-ctl "$@"; }

# td_create_with TAP-CTL [create ARGS...]: td_create with another client's tap-ctl (OpenXT's),
# which then also lists, destroys and cleans up that tap (td_ctl).
td_create_with() {
	_tc_ctl=$1
	shift
	_tc_rc=0
	td_run td-create "$_tc_ctl" create "$@" || _tc_rc=$?
	[ "$_tc_rc" = 0 ] || { cat td-create.err; td_fail "$_tc_ctl create $* failed (rc=$_tc_rc)"; }
	TD_DEV=$(tail -n 1 td-create.out)
	TD_MINOR=${TD_DEV##*tapdev}
	case "$TD_MINOR" in
	'' | *[!0-9]*) td_fail "tap-ctl create $* printed '$TD_DEV', expected $TD_NODE_DIR/tapdev<N>" ;;
	esac
	TD_MINORS="$TD_MINORS $TD_MINOR"
	eval "TD_CTL_$TD_MINOR=\$_tc_ctl"
	TD_DISK=$(disk_name "$TD_MINOR")
	[ -b "$TD_DEV" ] || td_fail "$TD_DEV is not a block device"
	wait_for 5 test -b "/dev/$TD_DISK" || td_fail "no /dev/$TD_DISK for tap $TD_MINOR"
	TD_PID=$(td_pid "$TD_MINOR")
	[ -n "$TD_PID" ] || td_fail "tap-ctl list shows no tapdisk for minor $TD_MINOR"
}

# td_list_field MINOR FIELD: FIELD (pid, state, args) of MINOR's line in "tap-ctl list -m MINOR",
# whose lines read "pid=P minor=M state=0xS args=TYPE:PATH" when stdout is not a terminal (the
# same in OpenXT's tap-ctl).
td_list_field() {
	"$(td_ctl "$1")" list -m "$1" 2>/dev/null < /dev/null | awk -v m="$1" -v f="$2" '
		{ delete kv; for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = substr($i, length(p[1]) + 2) } }
		kv["minor"] == m && (f in kv) { print kv[f]; exit }'
}

# td_pid MINOR: the pid of the tapdisk serving MINOR (empty if none).
td_pid() { td_list_field "$1" pid; }

# td_destroy MINOR: tap-ctl destroy (close, detach, free) of the tap and check that it is gone:
# the minor's sysfs directory and its tapdisk. Fails the test if not.
td_destroy() {
	_td_pid=$(td_pid "$1")
	[ -n "$_td_pid" ] || td_fail "no tapdisk serves minor $1"
	_td_rc=0
	td_run "td-destroy-$1" "$(td_ctl "$1")" destroy -p "$_td_pid" -m "$1" || _td_rc=$?
	[ "$_td_rc" = 0 ] || { cat "td-destroy-$1.err"; td_fail "$(td_ctl "$1") destroy -p $_td_pid -m $1 failed (rc=$_td_rc)"; }
	wait_for 10 td_gone "$1" "$_td_pid" || td_fail "tap $1 or its tapdisk $_td_pid still there after destroy"
	TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

# td_gone MINOR [PID]: the tap is freed and PID (its tapdisk) has exited.
td_gone() {
	[ ! -d "$(tap_sysfs "$1")" ] || return 1
	[ -z "${2:-}" ] || ! proc_alive "$2"
}

# td_cleanup: destroy what td_create made and the test did not; a tapdisk that does not answer is
# killed and its tap freed.
td_cleanup() {
	for _m in $TD_MINORS; do
		[ -d "$(tap_sysfs "$_m")" ] || continue
		_p=$(td_pid "$_m")
		if [ -n "$_p" ] && td_run "td-cleanup-$_m" "$(td_ctl "$_m")" destroy -p "$_p" -m "$_m" -t 20; then
			continue
		fi
		[ -z "$_p" ] || kill -KILL "$_p" 2>/dev/null
		free_tap "$_m" || log "cleanup: cannot free tap $_m"
	done
	TD_MINORS=
	return 0
}

# td_stat_secs MINOR PID: "READ WRITTEN" sectors from tap-ctl stats (its "secs": [rd, wr]).
td_stat_secs() {
	td_run td-stats tap-ctl stats -p "$2" -m "$1" || return 1
	sed -n 's/.*"secs": *\[ *\([0-9]*\) *, *\([0-9]*\) *\].*/\1 \2/p' td-stats.out | head -n 1
}

# pattern FILE MIB [SEED]: a file of MIB MiB of pseudo-random data (different for every SEED).
pattern() {
	dd if=/dev/urandom of="$1" bs=1M count="$2" status=none || fail "cannot make $1"
}

# region_equal FILE OFFSET_MIB MIB EXPECTED: MIB MiB of FILE (a file or a block device, read with
# O_DIRECT if a block device) at OFFSET_MIB are the bytes of file EXPECTED.
region_equal() {
	_flag=
	[ ! -b "$1" ] || _flag=iflag=direct
	# shellcheck disable=SC2086 # empty or one word
	dd if="$1" bs=1M skip="$2" count="$3" $_flag status=none 2>region.err | cmp -s - "$4"
}

# write_region DEV OFFSET_MIB FILE: write FILE onto DEV at OFFSET_MIB with O_DIRECT.
write_region() {
	dd if="$3" of="$1" bs=1M seek="$2" oflag=direct conv=notrunc status=none 2>write.err ||
		{ cat write.err; td_fail "writing $3 to $1 at ${2} MiB failed"; }
}
