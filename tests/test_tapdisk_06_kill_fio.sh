#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kill -9 of the real tapdisk 3.55.5 while fio runs on its tapdev at QD32 (randrw, 4k and 44k,
# O_DIRECT). Its ring goes with it, and the driver fails every outstanding and later request:
# fio must exit with EIO within 5 s of the kill, no task may stay in D state longer than 10 s,
# the disk goes once fio has closed it, and the minor can be freed and served again by a new
# tapdisk (tap-ctl create gets the same minor back) with verified I/O.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio blktap-test cmp
tapdisk_env
dstate_watch_start 10
BOUND=5
truncate -s 64M disk.img || fail "cannot create disk.img"
pattern data.bin 4

flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt 300 ]; }
td_gone_pid() { ! proc_alive "$pid"; }
for bs in 4k 44k; do
	td_create -a "aio:$PWD/disk.img"
	m=$TD_MINOR pid=$TD_PID
	fio --name="kill-$bs" --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=32 \
		--rw=randrw --bs="$bs" --size=64M --time_based --runtime=300 > "fio.$bs.out" 2>&1 &
	fio_pid=$!
	wait_for 60 flowing || td_fail "$bs: fio did not get going on $TD_DEV"
	kill_daemon_under_fio "$pid" "$fio_pid" "$BOUND" "$bs"
	log "$bs: fio exited (rc=$FIO_RC) ${FIO_ELAPSED}s after kill -9 of tapdisk $pid"
	awk -v e="$FIO_ELAPSED" -v b="$BOUND" 'BEGIN { exit !(e <= b) }' ||
		td_fail "$bs: fio took ${FIO_ELAPSED}s to fail, more than ${BOUND}s"
	[ "$FIO_RC" != 0 ] || td_fail "$bs: fio succeeded although tapdisk was killed"
	grep -q 'Input/output error' "fio.$bs.out" || { cat "fio.$bs.out"; td_fail "$bs: fio did not report EIO"; }
	wait_for "$BOUND" disk_gone "$m" || td_fail "$bs: disk still there ${BOUND}s after fio closed it"
	wait_for 5 td_gone_pid || td_fail "$bs: tapdisk $pid survived kill -9"
	# tap-ctl list still shows the minor, with no tapdisk; tap-ctl free releases it.
	td_run "free-$bs" tap-ctl free -m "$m" || { cat "free-$bs.err"; td_fail "$bs: tap-ctl free -m $m failed after tapdisk died"; }
	wait_for 5 test ! -d "$(tap_sysfs "$m")" || td_fail "$bs: tap $m still in sysfs after free"
	TD_MINORS=
	old=$m
	td_create -a "aio:$PWD/disk.img"
	[ "$TD_MINOR" = "$old" ] || td_fail "$bs: the freed minor $old was not reused (got $TD_MINOR)"
	write_region "$TD_DEV" 32 data.bin
	drop_caches
	region_equal "$TD_DEV" 32 4 data.bin || td_fail "$bs: the re-served tap does not read back its write"
	region_equal disk.img 32 4 data.bin || td_fail "$bs: the re-served tap's write is not in the image"
	td_destroy "$TD_MINOR"
done
dstate_watch_check
