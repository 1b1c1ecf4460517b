#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# ALLOC/FREE storm: several processes at once allocate and free taps, run whole life cycles
# (open, mmap, CREATE_DEVICE, REMOVE_DEVICE, close, free), FREE_TAP random minors and open
# random rings (blktap-test storm). Every call must end with a result the design allows for
# that race (ALLOC_TAP always succeeds), nothing may hang, every tap left behind must be
# freeable once the processes are gone, and the set of taps must be back to what it was.
# Then rmmod must succeed (no reference leaked) and the module loads again.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
unload_blktap
load_blktap
dstate_watch_start 10
seed=$(test_seed)
iters=$(scaled 40 2000)
ktap_run storm blktap-test storm --procs 4 --iterations "$iters" --seed "$seed" --timeout "$(scaled 60 3000)"
ops=$(sed -n 's/^# storm: ops=//p' storm.out)
dstate_watch_check
unload_blktap
load_blktap
stat_report teardown-storm "${ops:-0}" 0 0
