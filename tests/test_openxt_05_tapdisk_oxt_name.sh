#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# OpenXT's current userspace, stood in for by tapdisk 3.55.5 built with its one kernel-facing
# patch: BLKTAP2_CONTROL_NAME "blktap-control" (scripts/build-tapdisk.sh --openxt-name, in
# /usr/libexec/blktap-oxt). Its tap-ctl check finds that name in /proc/misc; with no control
# node present it makes /dev/xen/blktap-2/control from that /proc/misc line (10:<its minor>).
# create spawns its own tapdisk (the libexec directory compiled into its tap-ctl); fio writes and
# verifies (crc32c) the tapdev, the image equals the tapdev; destroy leaves nothing behind.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd fio cmp
require_tapdisk_oxt

td_run check "$OXT3_TAPCTL" check || { cat check.out check.err; td_fail "tap-ctl check refuses the module"; }
misc=$(awk '$2 == "blktap-control" { print $1 }' /proc/misc)
[ -n "$misc" ] || td_fail "no blktap-control in /proc/misc"
rm -f "$TD_NODE_DIR/control"
truncate -s 16M disk.img || fail "cannot create disk.img"
oxt3_create -a "aio:$PWD/disk.img"
[ "$(dev_numbers "$TD_NODE_DIR/control")" = "$MISC_MAJOR $misc" ] ||
	td_fail "$TD_NODE_DIR/control is $(dev_numbers "$TD_NODE_DIR/control"), blktap-control is $MISC_MAJOR:$misc"
exe=$(readlink "/proc/$TD_PID/exe")
[ "$exe" = "$OXT3_DIR/tapdisk" ] || td_fail "tap $TD_MINOR is served by '$exe', not $OXT3_DIR/tapdisk"
log "tap $TD_MINOR ($TD_DEV) served by $exe $TD_PID; control node 10:$misc made from blktap-control"
fio_verify_job verify.fio "$TD_DEV"
printf '[verify]\nrw=randwrite\nbsrange=4k-64k\niodepth=8\nsize=12m\ndo_verify=1\n' >> verify.fio
fio_run_check "verify on $TD_DEV" verify.fio
drop_caches
dd if="$TD_DEV" bs=1M iflag=direct status=none > back.bin 2> read.err || { cat read.err; td_fail "reading $TD_DEV back failed"; }
cmp -s back.bin disk.img || td_fail "the image does not hold what the tapdev reads"
m=$TD_MINOR
td_destroy "$m"
[ ! -e "$BLKTAP_CLASS/blktap$m" ] || td_fail "$BLKTAP_CLASS/blktap$m left after destroy"
log "fio verify clean, image equals tapdev, destroyed"
