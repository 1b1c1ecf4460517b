#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# fio write-then-verify (crc32c, libaio, O_DIRECT) through a tap served by blktapd from a mem
# backend: every block size (512, 4k, 44k, 64k, 1M) with both rw modes (write, randwrite) and
# both iodepths (1, 32), as half of the bs x rw x iodepth cross product (test_data_02 runs the
# other half on the file backend), plus a 3584-byte job whose buffers straddle pages; see
# fio_verify_matrix in lib/common.sh for the design and the sizes (min(8 MiB, 1024 blocks)).
# Every written block must read back with its checksum: proves that write data reaches the
# daemon and read data comes back to the right pages, for single- and multi-page requests,
# full 11-segment requests, split requests and a full ring (32 in flight).
# timeout: 180
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd
load_blktap

tap_create --backend mem:64M
log "tap $TAP_MINOR: $TAP_DEV, mem:64M"
fio_verify_matrix "$TAP_DEV" 64 0
