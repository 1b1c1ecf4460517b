#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Restart without I/O errors (opt-in per tap: sysfs "recovery", blktapd --recover, blktap-ctl
# recover). "recovery" is 0 (off) on a new tap, takes whole seconds, refuses "x" (EINVAL).
#  - kill -9 of blktapd (file backend) under fio --verify=crc32c at QD32, a new blktapd on the
#    same minor 2 s later: fio ends with no error and every block verified; the tap held
#    requests and sent them to the new daemon (debug: reissued > 0);
#  - the window ends with no new daemon (recovery 3 s): fio gets EIO 3 to 10 s after the kill,
#    the disk goes once fio has closed it, and the tap frees.
# No task stays in D state longer than the bound.
# timeout: 1800
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test
load_blktap
dstate_watch_start 20
daemons=
cleanup() { for p in $daemons; do kill -KILL "$p" 2>/dev/null; done; return 0; }
atexit cleanup
truncate -s 64M disk.img || fail "cannot create disk.img"
flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt "$1" ]; }
debug_field() { sed -n "s/.*$2:\([0-9]*\).*/\1/p" "$(tap_sysfs "$1")/debug" | head -n 1; }

# --- a new daemon within the window (5 times in `make stress`) -----------------------------
iters=$(scaled 1 5)
it=0 ios=0
while [ "$it" -lt "$iters" ]; do
	it=$((it + 1))
	tap_alloc
	m=$TAP_MINOR disk=/dev/$(disk_name "$m")
	[ "$(cat "$(tap_sysfs "$m")/recovery")" = 0 ] || fail "recovery is not 0 on a new tap"
	write_attr "$(tap_sysfs "$m")/recovery" x && fail "recovery accepted 'x'"
	[ "$WRITE_ERR" = "Invalid argument" ] || fail "recovery 'x': '$WRITE_ERR', expected EINVAL"
	serve_tap "$m" "file:$PWD/disk.img" --recover 30
	daemons="$daemons $DAEMON_PID"
	[ "$(cat "$(tap_sysfs "$m")/recovery")" = 30 ] || fail "blktapd --recover 30 did not set recovery"
	fio --name=restart --filename="$disk" --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite \
		--bs=4k --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
		--output-format=terse --terse-version=3 > fio.out 2> fio.err &
	fio_pid=$!
	wait_for 60 flowing 300 || fail "fio did not get going on $disk"
	kill_daemon "$DAEMON_PID"
	t0=$(now)
	sleep 2
	kill -0 "$fio_pid" 2>/dev/null || { cat fio.err; fail "fio ended while the tap held its requests"; }
	held=$(debug_field "$m" holding)
	log "daemon killed; after 2 s the tap holds $held request(s)"
	rm -f "blktapd.$m.log"
	serve_tap "$m" "file:$PWD/disk.img"
	daemons="$daemons $DAEMON_PID"
	log "new daemon serving $(since "$t0") s after the kill"
	rc=0
	wait "$fio_pid" || rc=$?
	fio_check "fio across a daemon restart" fio.out fio.err "$rc"
	reissued=$(debug_field "$m" reissued)
	[ "${reissued:-0}" -gt 0 ] || { cat "$(tap_sysfs "$m")/debug"; fail "the tap reissued no request to the new daemon"; }
	log "reissued $reissued request(s) to the new daemon; fio verified everything"
	ios=$((ios + $(tap_counts "$m" | cut -d' ' -f1)))
	kill_daemon "$DAEMON_PID" TERM
	wait_for 10 disk_gone "$m" || fail "disk still there after the daemon stopped"
	free_tap "$m" || fail "cannot free tap $m"
done
stat_report recovery "$iters" "$ios" 0

# --- the window ends first ------------------------------------------------------------------
tap_alloc
m=$TAP_MINOR disk=/dev/$(disk_name "$m")
serve_tap "$m" "file:$PWD/disk.img"
daemons="$daemons $DAEMON_PID"
blktap-ctl recover -m "$m" -w 3 || fail "blktap-ctl recover failed"
fio --name=expire --filename="$disk" --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw \
	--bs=4k --size=32M --time_based --runtime=300 > fio2.out 2>&1 &
fio_pid=$!
wait_for 60 flowing 300 || fail "fio did not get going on $disk"
kill_daemon_under_fio "$DAEMON_PID" "$fio_pid" 10 "window expiry"
log "no new daemon: fio exited (rc=$FIO_RC) ${FIO_ELAPSED}s after the kill"
awk -v e="$FIO_ELAPSED" 'BEGIN { exit !(e >= 3 && e <= 10) }' ||
	fail "fio ended ${FIO_ELAPSED}s after the kill, expected 3 to 10 s (window 3 s)"
[ "$FIO_RC" != 0 ] || fail "fio succeeded although no daemon came back"
grep -q 'Input/output error' fio2.out || { cat fio2.out; fail "fio did not report EIO"; }
wait_for 10 disk_gone "$m" || fail "disk still there after the window ended and fio closed it"
free_tap "$m" || fail "cannot free tap $m after the window ended"
dstate_watch_check
