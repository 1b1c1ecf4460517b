#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kill -9 of OpenXT's legacy tapdisk2 while fio runs on its tapdev at QD32 (randrw, 4k to 44k
# blocks, O_DIRECT). fio must exit with EIO within 10 s of the kill, no task may stay in D state
# longer than 10 s and the disk goes once fio has closed it. OpenXT's tap-ctl list then shows
# the minor with no tapdisk2 ("minor=M", found through sysfs blktap<N>), its tap-ctl free
# releases it, and a new tap-ctl create gets the same minor back, served by a new tapdisk2 with
# verified I/O (td_kill_fio_round).
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd fio blktap-test cmp
require_openxt
dstate_watch_start 10
truncate -s 32M disk.img || fail "cannot create disk.img"
pattern data.bin 4
td_kill_fio_round oxt_create 10 tapdisk2 --bsrange=4k-44k
dstate_watch_check
