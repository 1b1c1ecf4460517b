#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# V-OXT's 40-byte CREATE_DEVICE (issue 21) through blktap-test "oxt-info" (KTAP passed through):
# a 208 in the V-XS layout (physical size 4096 at offset 12) still makes a V-XS disk (its FLUSH
# and TRIM bits ignored); a zero word at 12 selects the V-OXT layout, of which only the bytes
# the flags select are read (the struct is placed against an inaccessible page); bad geometry
# is EINVAL with a log line and nothing written back; flags are written back masked (0x10 and
# 0x100 cleared; EFAULT and no disk if they cannot be written); the queue follows FLUSH (write
# back, no FUA), TRIM (granularity from the info) and PSZ (physical size, alignment offset); no
# flags give a V-XS queue; a new daemon on the disk must send the same flags (a V-XS 208 is
# EINVAL); a prior NEGOTIATE must agree with the flags; the tap's discard switch applies.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
mark=$(kmsg_mark)

rc=0
blktap-test oxt-info 2>&1 || rc=$?
[ "$rc" = 0 ] || fail "blktap-test oxt-info failed (rc=$rc)"
kmsg_since "$mark" | grep -q 'CREATE_DEVICE (V-OXT layout, flags 0x2) refused: physical block size or offset' ||
	fail "no log line for a refused physical geometry"
kmsg_since "$mark" | grep -q 'CREATE_DEVICE (V-OXT layout, flags 0x8) refused: trim block size or offset' ||
	fail "no log line for a refused trim geometry"
kmsg_since "$mark" | grep -q 'CREATE_DEVICE refused: its flags ask for features 0xc, the session negotiated 0x4' ||
	fail "no log line for flags that disagree with the session's NEGOTIATE"
log "V-OXT device info: layouts, reads, refusals, write-back, queue limits, agreements"
