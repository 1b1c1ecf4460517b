# SPDX-License-Identifier: GPL-2.0
# Helpers for the oxt_pause tests: the kernel-driven pause, resume and removal of V-OXT (sysfs
# pause, resume, remove and message_timeout of a tap, answered by OpenXT's legacy tapdisk2
# through the ring message byte). Sourced after lib/common.sh and lib/openxt.sh.

# pause_field MINOR FIELD: FIELD (pause, message, waiting, removing, message_timeout) of the
# "pause:..." line of the tap's debug file.
pause_field() {
	awk -v f="$2" '$1 ~ /^pause:/ { for (i = 1; i <= NF; i++) { split($i, p, ":"); if (p[1] == f) print p[2] } }' \
		"$(tap_sysfs "$1")/debug" 2>/dev/null
}

# pause_state MINOR: the tap's kernel-driven pause state (none, draining, requested, paused,
# resuming, closing).
pause_state() { pause_field "$1" pause; }

# expect_pause MINOR STATE WHEN: the pause state is STATE, the ring's message byte 0 and no writer
# waits (the daemon has answered); fails the test otherwise.
expect_pause() {
	_ep=$(pause_state "$1") _em=$(pause_field "$1" message) _ew=$(pause_field "$1" waiting)
	[ "$_ep $_em $_ew" = "$2 0 none" ] ||
		td_fail "$3: pause:$_ep message:$_em waiting:$_ew, expected pause:$2 message:0 waiting:none"
}

# timed_write FILE DATA: write_attr, and set ELAPSED to the seconds it took (one decimal).
timed_write() {
	_tw_start=$(now)
	_tw_rc=0
	write_attr "$1" "$2" || _tw_rc=1
	ELAPSED=$(since "$_tw_start")
	return $_tw_rc
}

# expect_write MINOR ATTR WHEN: write 1 to the tap's ATTR (pause, resume, remove); it must succeed.
expect_write() {
	timed_write "$(tap_sysfs "$1")/$2" 1 || td_fail "$3: writing $2 failed: $WRITE_ERR (after $ELAPSED s)"
	log "$3: $2 done in $ELAPSED s"
}

# expect_write_err MINOR ATTR DATA ERRTEXT WHEN: writing DATA to the tap's ATTR must fail with
# ERRTEXT (strerror).
expect_write_err() {
	if timed_write "$(tap_sysfs "$1")/$2" "$3"; then
		td_fail "$5: writing '$3' to $2 succeeded, expected '$4'"
	fi
	[ "$WRITE_ERR" = "$4" ] || td_fail "$5: writing '$3' to $2 failed with '$WRITE_ERR', expected '$4'"
	log "$5: $2 fails with '$WRITE_ERR' after $ELAPSED s"
}

# within SECS LOW HIGH: LOW <= SECS <= HIGH (decimals allowed).
within() { awk -v s="$1" -v l="$2" -v h="$3" 'BEGIN { exit !(s >= l && s <= h) }'; }

# td_forget MINOR: the tap went without tap-ctl destroy: nothing to clean up at exit.
td_forget() { TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' '); }

# sent MINOR: requests sent to the tap's daemon so far.
sent() { tap_counts "$1" | cut -d' ' -f1; }

# oxt_fio_start NAME DEV MIB: fio_verify_job's workload (crc32c verify, O_DIRECT, libaio, random
# 4k-64k writes, QD8) in the background; FIO_PID is its pid; fio_done NAME judges it.
oxt_fio_start() {
	fio --name="$1" --filename="$2" --ioengine=libaio --direct=1 --rw=randwrite \
		--bsrange=4k-64k --iodepth=8 --size="${3}m" --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --randrepeat=0 --output-format=terse --terse-version=3 \
		> "$1.out" 2> "$1.err" &
	FIO_PID=$!
}

# fio_done NAME: wait for the fio of oxt_fio_start and judge it (fio_check).
fio_done() {
	_fd_rc=0
	wait "$FIO_PID" || _fd_rc=$?
	fio_check "$1" "$1.out" "$1.err" "$_fd_rc"
}
