#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A hostile daemon (blktap-test evil): random, far and backward rsp_prod, responses with
# out-of-range, idle, duplicated and racing ids, wrong operations, garbage status, rewritten
# req_prod, scribbled ring and data pages, RESPOND storms from several threads and remaps, while
# 8 threads do O_DIRECT I/O on the disk. Between evil phases the daemon behaves: every I/O of a
# good phase must succeed and read back what was last written. I/O only ever fails with EIO,
# ioctls in the middle of it return their documented errno, and teardown is clean. The kernel's
# warnings about bad responses are rate limited: far fewer lines than bad responses. Then the
# same on a deep ring of 128 entries (--ring-slots 128). The seed is printed; rerun with
# BLKTAP_SEED=<seed> or blktap-test evil --seed <seed>.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
dstate_watch_start 10
seed=$(test_seed)
iters=$(scaled 8 300)
log "seed $seed"
mark=$(kmsg_mark)
ktap_run evil blktap-test evil --seed "$seed" --iterations "$iters" --threads 8 --phase-ms 300
bad=$(sed -n 's/^# evil:.* bad_responses=\([0-9]*\).*/\1/p' evil.out)
warnings=$(kmsg_since "$mark" | grep -cE 'blktap: td[a-z]+: (ignoring|response for id)')
log "$bad bad responses, $warnings warning lines in the kernel log"
[ "${bad:-0}" -gt 0 ] || fail "the kernel counted no bad responses"
[ "$warnings" -gt 0 ] || fail "the kernel logged no warning about bad responses"
[ "$warnings" -le 64 ] && [ "$warnings" -lt "$bad" ] ||
	fail "$warnings warning lines for $bad bad responses: not rate limited"
# The same on a deep ring (FEAT_DEEP, 128 entries): ids, indices and pages past V-XS's.
deep_iters=$(scaled 4 100)
ktap_run evil-deep blktap-test evil --seed "$seed" --iterations "$deep_iters" --threads 8 \
	--phase-ms 300 --ring-slots 128
grep -q 'evil: .*bad_responses=[1-9]' evil-deep.out || fail "the deep ring counted no bad responses"
dstate_watch_check
# shellcheck disable=SC2046 # two words on purpose
set -- $(ktap_io_totals evil.out)
stat_report evil "$iters" "$1" "$2"
# shellcheck disable=SC2046 # two words on purpose
set -- $(ktap_io_totals evil-deep.out)
stat_report evil-deep "$deep_iters" "$1" "$2"
