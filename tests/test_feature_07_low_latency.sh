#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The low-latency path (issue 22, FEAT_LOW_LATENCY): blktapd --features low-latency --spin-us N
# gets a disk whose requests the kernel publishes as they are submitted (a blocking queue), and
# watches the ring for N us after each batch before sleeping. fio verify at QD1 (4 KiB random
# writes and reads) passes; blktapd finds batches by watching the ring (no poll for them: its
# "found by watching the ring" count); with large requests too, 1 MiB writes verify. After
# 10 s idle, blktapd has used next to no CPU (its utime + stime grew by at most 0.3 s): the
# watching is bounded, an idle daemon sleeps.
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd
load_blktap

img=/tmp/$TEST_NAME.img
log_file=/tmp/$TEST_NAME.log
atexit "rm -f $img $log_file"
rm -f "$img" "$log_file"
truncate -s 64M "$img" || fail "cannot create $img"

# cpu_ticks PID: the process's user + system time, in clock ticks (/proc/PID/stat).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

tap_create --backend "file:$img" --features low-latency,large --spin-us 2000 --log "$log_file"
grep -q 'features:0x180 ' "$(tap_sysfs "$TAP_MINOR")/debug" ||
	fail "debug does not show features 0x180: $(cat "$(tap_sysfs "$TAP_MINOR")/debug")"
pid=$(cat "$(tap_sysfs "$TAP_MINOR")/task")
[ -n "$pid" ] && [ -d "/proc/$pid" ] || fail "no blktapd process for tap $TAP_MINOR (task '$pid')"

fio_verify_job qd1.fio "$TAP_DEV"
cat >> qd1.fio <<JOB
[qd1-4k]
bs=4k
rw=randwrite
iodepth=1
offset=0
size=4m
[qd1-1m]
stonewall
bs=1m
rw=write
iodepth=1
offset=8m
size=8m
JOB
fio_run_check "low-latency" qd1.fio

# Idle: blktapd watches the ring once after its last batch, then sleeps in poll.
sleep 1
t0=$(cpu_ticks "$pid")
sleep 10
t1=$(cpu_ticks "$pid")
log "blktapd $pid: $((t1 - t0)) clock ticks of CPU over 10 s idle"
[ $((t1 - t0)) -le 30 ] || fail "blktapd used $((t1 - t0)) ticks of CPU in 10 s idle (at most 30 expected)"

tap_destroy "$TAP_MINOR"
wait_for 10 sh -c "grep -q 'found by watching the ring' $log_file" || fail "blktapd left no statistics in $log_file"
stats=$(grep 'found by watching the ring' "$log_file" | tail -n 1)
log "blktapd: ${stats#*: }"
spun=$(echo "$stats" | sed -n 's/.*(\([0-9]*\) found by watching the ring).*/\1/p')
[ "${spun:-0}" -gt 0 ] || fail "blktapd found no batch by watching the ring: $stats"
