#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kill -9 of the real tapdisk 3.55.5 while fio runs on its tapdev at QD32 (randrw, 4k and 44k,
# O_DIRECT). Its ring goes with it, and the driver fails every outstanding and later request:
# fio must exit with EIO within 5 s of the kill, no task may stay in D state longer than 10 s,
# the disk goes once fio has closed it, tap-ctl list shows the minor unserved, and the minor
# can be freed and served again by a new tapdisk (tap-ctl create gets the same minor back) with
# verified I/O (td_kill_fio_round).
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio blktap-test cmp
tapdisk_env
dstate_watch_start 10
truncate -s 64M disk.img || fail "cannot create disk.img"
pattern data.bin 4
for bs in 4k 44k; do td_kill_fio_round td_create 5 "$bs" --bs="$bs"; done
dstate_watch_check
