#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Daemon death under a mounted file system: ext4 on a tap, fio (O_DIRECT, iodepth 32) on a file
# in it, kill -9 of the daemon. fio fails with EIO within 5 s, umount completes (within 20 s),
# the disk goes after the umount and the tap is freed; the next round allocates the same minor
# again. Once in `make check`, 100 times in `make stress`. No task in D state for over 10 s.
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test mkfs.ext4 mount umount
load_blktap
dstate_watch_start 10

BOUND=5
iters=$(scaled 1 100)
mnt=$PWD/mnt
mkdir -p "$mnt"
daemon=
minor=
cleanup() {
	[ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null
	umount "$mnt" 2>/dev/null
	[ -z "$minor" ] || { [ -d "$(tap_sysfs "$minor")" ] && free_tap "$minor"; }
	return 0
}
atexit cleanup

io_flowing() { [ "$(tap_counts "$1" | cut -d' ' -f1)" -gt "$2" ]; }
ios=0 failed=0 it=0 first=
while [ "$it" -lt "$iters" ]; do
	tap_alloc
	minor=$TAP_MINOR
	[ -z "$first" ] && first=$minor
	[ "$minor" = "$first" ] || fail "round $it: got minor $minor, expected $first again"
	disk=/dev/$(disk_name "$minor")
	serve_tap "$minor" mem:64M
	daemon=$DAEMON_PID
	mkfs.ext4 -q -F "$disk" > mkfs.out 2>&1 || { cat mkfs.out; fail "mkfs.ext4 $disk failed"; }
	mount -t ext4 "$disk" "$mnt" || fail "mount $disk failed"
	base=$(tap_counts "$minor" | cut -d' ' -f1)
	fio --name=fs --directory="$mnt" --direct=1 --ioengine=libaio --iodepth=32 --rw=randrw \
		--bs=4k --size=16M --time_based --runtime=300 > fio.out 2>&1 &
	fio_pid=$!
	wait_for 30 io_flowing "$minor" $((base + 200)) || { cat fio.out; fail "fio did not get going"; }
	# Cleanup must not kill the pid again: the helper reaps the daemon before anything can fail.
	killed=$daemon daemon=
	kill_daemon_under_fio "$killed" "$fio_pid" "$BOUND" "round $it"
	el=$FIO_ELAPSED
	awk -v e="$el" -v b="$BOUND" 'BEGIN { exit !(e <= b) }' ||
		fail "round $it: fio took ${el}s to fail, more than ${BOUND}s"
	t1=$(now)
	timeout 20 umount "$mnt" || fail "round $it: umount failed or hung after the daemon died"
	log "round $it: fio failed ${el}s after the kill, umount took $(since "$t1")s"
	wait_for "$BOUND" disk_gone "$minor" || fail "round $it: disk still there after umount"
	# shellcheck disable=SC2046 # two words on purpose
	set -- $(tap_counts "$minor")
	ios=$((ios + $1)) failed=$((failed + $2))
	free_tap "$minor" || fail "round $it: cannot free tap $minor"
	minor=
	it=$((it + 1))
done
dstate_watch_check
stat_report daemon-death-fs "$iters" "$ios" "$failed"
