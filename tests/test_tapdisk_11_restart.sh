#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A real tapdisk 3.55.5 restarted under I/O without an I/O error: recovery on (sysfs
# "recovery" 30), fio --verify=crc32c at QD32 on the tapdev, kill -9 of tapdisk, then what a
# toolstack does to restart it on the same minor: tap-ctl spawn, attach, open. tapdisk's
# CREATE_DEVICE finds the disk (EEXIST, which it accepts), the held requests go to it, and fio
# ends with no error and every block verified.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio
tapdisk_env
truncate -s 64M disk.img || fail "cannot create disk.img"
td_create -a "aio:$PWD/disk.img"
m=$TD_MINOR
write_attr "$(tap_sysfs "$m")/recovery" 30 || fail "cannot set recovery: $WRITE_ERR"
flowing() { [ "$(tap_counts "$m" | cut -d' ' -f1)" -gt 300 ]; }
fio --name=restart --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite \
	--bs=4k --size=32M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
	--output-format=terse --terse-version=3 > fio.out 2> fio.err &
fio_pid=$!
wait_for 60 flowing || td_fail "fio did not get going on $TD_DEV"
kill -KILL "$TD_PID"
t0=$(now)
gone() { ! proc_alive "$TD_PID"; }
wait_for 10 gone || td_fail "tapdisk $TD_PID survived kill -9"
kill -0 "$fio_pid" 2>/dev/null || { cat fio.err; td_fail "fio ended while the tap held its requests"; }
step() {
	_s=$1
	shift
	td_run "$_s" "$@" || { cat "$_s.out" "$_s.err"; td_fail "$_s: '$*' failed"; }
}
step spawn tap-ctl spawn
pid=$(tail -n 1 spawn.out)
pid=${pid##* }
step attach tap-ctl attach -p "$pid" -m "$m"
step open tap-ctl open -p "$pid" -m "$m" -a "aio:$PWD/disk.img"
log "tapdisk $pid serves minor $m again $(since "$t0") s after the kill"
rc=0
wait "$fio_pid" || rc=$?
fio_check "fio across a tapdisk restart" fio.out fio.err "$rc"
grep -q 'reissued:[1-9]' "$(tap_sysfs "$m")/debug" || { cat "$(tap_sysfs "$m")/debug"; td_fail "no request was reissued"; }
td_destroy "$m"
