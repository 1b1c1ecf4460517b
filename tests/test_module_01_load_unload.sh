#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# insmod/rmmod blktap.ko 20 times: every load and unload succeeds and /sys/module/blktap follows.
# Catches init/exit paths that leak (KASAN, kmemleak-style double registration) or leave state
# behind that makes the next load fail (a misc name still registered, a major still taken).
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

[ -f "$BLKTAP_KO" ] || skip "no $BLKTAP_KO in the initramfs"
unload_blktap # start from a clean slate if something preloaded it

i=1
while [ "$i" -le 20 ]; do
	insmod "$BLKTAP_KO" || fail "load #$i: insmod failed (rc=$?)"
	wait_for 5 module_loaded || fail "load #$i: /sys/module/$BLKTAP_MOD did not appear"
	rmmod "$BLKTAP_MOD" || fail "load #$i: rmmod failed (rc=$?)"
	wait_for 5 module_gone || fail "load #$i: /sys/module/$BLKTAP_MOD still there after rmmod"
	i=$((i + 1))
done
log "20 load/unload cycles done"
