#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Eight tapdevs served at once by eight real tapdisk 3.55.5 processes (one tap-ctl create each):
# eight distinct minors, disks and tapdisks, all in tap-ctl list; each tapdev gets its own
# random 4 MiB written concurrently (O_DIRECT), and each image then holds exactly its own data
# (no crossed rings or pages), also read back concurrently through the tapdevs; then all are
# destroyed, in reverse order.
# timeout: 300
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp
tapdisk_env
N=8
minors='' pids='' i=0 d=''
while [ "$i" -lt "$N" ]; do
	truncate -s 16M "img$i" || fail "cannot create img$i"
	pattern "data$i" 4
	td_create -a "aio:$PWD/img$i"
	eval "dev$i=\$TD_DEV minor$i=\$TD_MINOR"
	minors="$minors $TD_MINOR" pids="$pids $TD_PID"
	i=$((i + 1))
done
# shellcheck disable=SC2086 # one word per minor or pid
[ "$(printf '%s\n' $minors | sort -u | wc -l)" = "$N" ] || td_fail "minors not distinct: $minors"
# shellcheck disable=SC2086
[ "$(printf '%s\n' $pids | sort -u | wc -l)" = "$N" ] || td_fail "tapdisks not distinct: $pids"
td_run list tap-ctl list || td_fail "tap-ctl list failed"
[ "$(grep -c 'pid=[0-9]* minor=[0-9]* state=0 args=aio:' list.out)" = "$N" ] ||
	{ cat list.out; td_fail "tap-ctl list does not show $N served taps"; }
log "$N taps:$minors, tapdisks:$pids"

# Concurrent writes, each tap its own data.
i=0 bg=
while [ "$i" -lt "$N" ]; do
	eval "d=\$dev$i"
	dd if="data$i" of="$d" bs=44k oflag=direct conv=notrunc status=none 2> "w$i.err" &
	bg="$bg $!"
	i=$((i + 1))
done
for p in $bg; do wait "$p" || td_fail "a concurrent write failed: $(cat w*.err)"; done
drop_caches
i=0 bg=
while [ "$i" -lt "$N" ]; do
	region_equal "img$i" 0 4 "data$i" || td_fail "img$i does not hold exactly tap $i's data"
	eval "d=\$dev$i"
	( region_equal "$d" 0 4 "data$i" || echo "tap $i ($d) reads back other data" > "r$i.bad" ) &
	bg="$bg $!"
	i=$((i + 1))
done
for p in $bg; do wait "$p"; done
if ls r*.bad >/dev/null 2>&1; then cat r*.bad; td_fail "concurrent read-back through the tapdevs differs"; fi
# shellcheck disable=SC2086
for m in $(printf '%s\n' $minors | sort -rn); do td_destroy "$m"; done
