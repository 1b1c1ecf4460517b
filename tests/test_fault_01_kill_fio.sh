#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Daemon death under load: kill -9 of the blktapd serving a tap while fio runs at iodepth 32
# (read, write, randrw; O_DIRECT, libaio). Every outstanding and later I/O fails with EIO
# within 5 s: fio exits (with EIO) within 5 s of the kill, and a later read and write of the
# disk (held open by another task) fail with EIO at once. The disk goes after its last close;
# the tap can be freed, or served again by a new daemon on the same minor (CREATE_DEVICE
# EEXIST while the old disk is still open), with verified I/O. No task stays in D state for
# more than 10 s. `make stress` repeats it 20 times.
# timeout: 240 (three daemon deaths, each with a re-serve: 85-125 s under KASAN and TCG)
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test
load_blktap
dstate_watch_start 10

BOUND=5
iters=$(scaled 1 20)
daemons=
minors=
cleanup() {
	for p in $daemons; do kill -KILL "$p" 2>/dev/null; done
	exec 5<&-
	for m in $minors; do [ -d "$(tap_sysfs "$m")" ] && free_tap "$m"; done
	return 0
}
atexit cleanup

ios=0 failed=0 n=0
io_flowing() { [ "$(tap_counts "$1" | cut -d' ' -f1)" -gt 200 ]; }
# shellcheck disable=SC2046 # two words on purpose
count() { set -- $(tap_counts "$1"); ios=$((ios + $1)); failed=$((failed + $2)); }

it=0
while [ "$it" -lt "$iters" ]; do
	for rw in read write randrw; do
		n=$((n + 1))
		tap_alloc
		m=$TAP_MINOR
		minors="$minors $m"
		disk=/dev/$(disk_name "$m")
		serve_tap "$m" mem:64M
		daemons="$daemons $DAEMON_PID"
		fio --name="kill-$rw" --filename="$disk" --direct=1 --ioengine=libaio --iodepth=32 \
			--rw="$rw" --bs=4k --size=64M --time_based --runtime=300 > "fio.$n.out" 2>&1 &
		fio_pid=$!
		wait_for 30 io_flowing "$m" || fail "$rw: fio did not get going on $disk"
		# write and randrw: another task keeps the disk open across the kill.
		hold=0
		[ "$rw" = read ] || { exec 5<>"$disk" && hold=1; } || fail "cannot open $disk"
		kill_daemon_under_fio "$DAEMON_PID" "$fio_pid" "$BOUND" "$rw"
		frc=$FIO_RC el=$FIO_ELAPSED
		log "$rw: fio exited (rc=$frc) ${el}s after kill -9 of its daemon"
		awk -v e="$el" -v b="$BOUND" 'BEGIN { exit !(e <= b) }' ||
			fail "$rw: fio took ${el}s to fail, more than ${BOUND}s"
		[ "$frc" != 0 ] || fail "$rw: fio succeeded although its daemon was killed"
		grep -q 'Input/output error' "fio.$n.out" || { cat "fio.$n.out"; fail "$rw: fio did not report EIO"; }
		if [ "$hold" = 1 ]; then
			disk_present "$m" || fail "$rw: the disk went while still open"
			ktap_run "later-io-$n" blktap-test io --disk "$disk" --expect-eio --ops 3 --threads 1 \
				--blocks 16 --io-timeout "$BOUND"
			# A new daemon on the same minor serves the surviving disk.
			rm -f "blktapd.$m.log"
			serve_tap "$m" mem:64M
			daemons="$daemons $DAEMON_PID"
			grep -q 'exists already' "blktapd.$m.log" || fail "$rw: the new daemon did not find the old disk"
			ktap_run "reserve-io-$n" blktap-test io --disk "$disk" --seconds 2 --threads 2 --blocks 256
			exec 5<&-
			count "$m"
			kill_daemon "$DAEMON_PID" TERM
			wait_for 5 disk_gone "$m" || fail "$rw: disk still there after its daemon stopped"
		else
			wait_for "$BOUND" disk_gone "$m" || fail "$rw: disk still there ${BOUND}s after fio closed it"
			count "$m"
			free_tap "$m" || fail "$rw: cannot free tap $m after its daemon died"
			# A new daemon can serve the same minor.
			tap_alloc
			[ "$TAP_MINOR" = "$m" ] || fail "$rw: reallocation gave minor $TAP_MINOR, not $m"
			serve_tap "$m" mem:64M
			daemons="$daemons $DAEMON_PID"
			ktap_run "reserve-io-$n" blktap-test io --disk "$disk" --seconds 2 --threads 2 --blocks 256
			count "$m"
			kill_daemon "$DAEMON_PID" TERM
			wait_for 5 disk_gone "$m" || fail "$rw: disk still there after its daemon stopped"
		fi
		free_tap "$m" || fail "$rw: cannot free tap $m"
	done
	it=$((it + 1))
done
dstate_watch_check
stat_report daemon-death "$n" "$ios" "$failed"
