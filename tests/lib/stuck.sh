# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Helpers for the tests of stuck, dying and odd daemons (the blktap-test subcommands stuck,
# withhold and level). Sourced after lib/common.sh; call stuck_env first.

# stuck_env: record the pids of the test daemons and the taps they serve (in files, so that
# cases run in subshells by run_case record them too); at exit abort those taps (so that a
# daemon stuck in D state on its own disk, or a reader stuck on it, can end), then kill the
# daemons.
stuck_env() {
	STUCK_PIDS=$PWD/stuck.pids STUCK_TAPS=$PWD/stuck.taps
	: > "$STUCK_PIDS"
	: > "$STUCK_TAPS"
	failed_cases=
	atexit stuck_cleanup
}
# daemon_record PID: a daemon for stuck_cleanup to kill.
daemon_record() { echo "$1" >> "$STUCK_PIDS"; }
stuck_cleanup() {
	while read -r _m; do
		[ -d "$(tap_sysfs "$_m")" ] && blktap-ctl abort -m "$_m" >/dev/null 2>&1
	done < "$STUCK_TAPS"
	while read -r _p; do kill -KILL "$_p" 2>/dev/null; done < "$STUCK_PIDS"
	return 0
}
# stuck_reset: after a failed case, stuck_cleanup, then free what is left of its taps.
stuck_reset() {
	stuck_cleanup
	while read -r _m; do
		[ -d "$(tap_sysfs "$_m")" ] || continue
		wait_for 10 disk_gone "$_m" || log "reset: the disk of tap $_m is still there"
		free_tap "$_m" || log "reset: cannot free tap $_m"
	done < "$STUCK_TAPS"
	: > "$STUCK_PIDS"
	: > "$STUCK_TAPS"
}
# run_case NAME CMD...: run CMD in a subshell, so that a failure (fail) ends only this case;
# then reset what the case left and add NAME to $failed_cases. cases_check: fail the test if
# a case failed.
run_case() {
	_rc_name=$1
	shift
	( "$@" ) && return 0
	log "case $_rc_name FAILED"
	failed_cases="$failed_cases $_rc_name"
	stuck_reset
}
cases_check() {
	[ -z "$failed_cases" ] || fail "failed case(s):$failed_cases"
}

# tap_alloc_m: tap_alloc, and set m (its minor), disk (/dev/tdX) and ring (its ring node).
tap_alloc_m() {
	tap_alloc
	m=$TAP_MINOR disk=/dev/$(disk_name "$m") ring=/dev/blktap/blktap$m
	echo "$m" >> "$STUCK_TAPS"
}

# daemon_start CMD...: start a test daemon on tap $m in the background (output in
# daemon.$m.log), record it, and wait until it has mapped the ring and the disk exists. Sets pid.
daemon_start() {
	"$@" > "daemon.$m.log" 2>&1 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- &
	pid=$!
	daemon_record "$pid"
	wait_for 20 tap_mapped "$m" || fail "$1 $2 did not map tap $m: $(cat "daemon.$m.log")"
	# Not just its node: devtmpfs may still show the node of the tap's previous disk, and a new
	# disk's sysfs entry comes before the block layer can open it (ENXIO until then). An open
	# alone issues no I/O (the disk has no partitions to scan).
	_ds_opens() { (exec 9< "$disk") 2> /dev/null; }
	wait_for 20 _ds_opens || fail "no disk for tap $m that opens: $(cat "daemon.$m.log")"
}

# stuck_tap MODE [ARGS...]: a new tap served by "blktap-test stuck --mode MODE" (with --disk,
# for the modes that read their own disk); sets m, disk, ring and pid.
stuck_tap() {
	tap_alloc_m
	_mode=$1
	shift
	daemon_start blktap-test stuck --ring "$ring" --mode "$_mode" --disk "$disk" "$@"
}

# read_start: an O_DIRECT 4k read of $disk in the background; sets rpid and t0.
read_start() {
	t0=$(now)
	dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct > "read.$m.out" 2>&1 &
	rpid=$!
}
# eio_wait PID OUT LOW HIGH WHAT: the background job PID, started at $t0, ends with EIO (in its
# output file OUT) between LOW and HIGH seconds after it began.
eio_wait() {
	while ! proc_gone "$1" && [ "$(awk -v e="$(since "$t0")" -v h="$4" 'BEGIN { print (e > h + 5) }')" = 0 ]; do
		sleep 0.1
	done
	el=$(since "$t0")
	proc_gone "$1" || { kill -KILL "$1"; fail "$5: still waiting after ${el}s"; }
	rc=0
	wait "$1" || rc=$?
	[ "$rc" != 0 ] || fail "$5: it succeeded"
	grep -q 'Input/output error' "$2" || { cat "$2"; fail "$5: it failed without EIO"; }
	awk -v e="$el" -v l="$3" -v h="$4" 'BEGIN { exit !(e >= l && e <= h) }' ||
		fail "$5: EIO after ${el}s, expected between $3 and $4 s"
	log "$5: EIO after ${el}s"
}
# read_wait LOW HIGH WHAT: the read of read_start ends with EIO between LOW and HIGH seconds.
read_wait() { eio_wait "$rpid" "read.$m.out" "$@"; }

# proc_gone PID: every thread of PID has exited (zombies count: its parent has not reaped it
# yet). Not just the main thread: a thread-group leader that exited shows Z while other threads
# of its process still run.
proc_gone() {
	for _t in /proc/"$1"/task/*; do
		[ -r "$_t/stat" ] || continue
		awk '{ sub(/.*\) /, ""); exit !($1 == "Z" || $1 == "X") }' "$_t/stat" 2>/dev/null || return 1
	done
	return 0
}

# wait_gone SECS PID: proc_gone within SECS seconds of wall time (wait_for counts polls, which
# take long on a loaded TCG host when each forks).
wait_gone() {
	_wg_t0=$(now)
	until proc_gone "$2"; do
		[ "$(awk -v e="$(since "$_wg_t0")" -v b="$1" 'BEGIN { print (e > b) }')" = 0 ] || return 1
		sleep 0.1
	done
}

# kill_gone PID BOUND WHAT: kill -9 PID (a background job of this shell) and require it gone
# within BOUND seconds; reap it. Sets GONE_AFTER (seconds from the kill).
kill_gone() {
	_kg_t0=$(now)
	kill -KILL "$1" 2>/dev/null
	wait_gone "$2" "$1" ||
		fail "$3: the process still runs $(since "$_kg_t0") s after kill -9 ($(proc_where "$1"))"
	GONE_AFTER=$(since "$_kg_t0")
	wait "$1" 2>/dev/null
	log "$3: gone ${GONE_AFTER} s after kill -9"
}

# proc_where PID: the state and wait channel of each thread of PID, for failure messages.
proc_where() {
	for _t in /proc/"$1"/task/*; do
		[ -r "$_t/stat" ] || continue
		printf '%s:%s:%s ' "${_t##*/}" "$(awk '{ sub(/.*\) /, ""); print $1 }' "$_t/stat" 2>/dev/null)" \
			"$(cat "$_t/wchan" 2>/dev/null)"
	done
}

# thread_in_d PID: some thread of PID is in uninterruptible sleep.
thread_in_d() {
	for _t in /proc/"$1"/task/*; do
		awk '{ sub(/.*\) /, ""); exit !($1 == "D") }' "$_t/stat" 2>/dev/null && return 0
	done
	return 1
}

# tap_pending MINOR: number of requests the tap holds for its daemon (queued or sent).
tap_pending() { sed -n 's/^begin pending:\([0-9]*\).*/\1/p' "$(tap_sysfs "$1")/debug" 2>/dev/null | head -n 1; }

# stuck_finish: kill the daemon $pid, then the tap frees (its disk goes with the ring).
stuck_finish() {
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	wait_for 10 disk_gone "$m" || fail "tap $m: disk still there after its daemon died"
	free_tap "$m" || fail "tap $m: cannot be freed after its daemon died"
}
