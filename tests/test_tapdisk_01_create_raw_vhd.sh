#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The real tapdisk 3.55.5 over raw (aio:) and VHD (vhd:) images, made and torn down with
# tap-ctl create/destroy.
# raw (td_raw_roundtrip): data put into the backing file is read back bit-exact through the
# tapdev (O_DIRECT), and data written through the tapdev (O_DIRECT, and buffered then flushed)
# is found bit-exact in the backing file after drop_caches. The tapdev has the image's size.
# VHD (td_vhd_roundtrip, made by vhd-util): a fresh image reads as zeros; data written through
# the tapdev (also the image's last block) is read back through it, then, after destroy,
# through a new tapdisk and from the VHD file itself with vhd-util read (tapdisk's own VHD code
# is the only writer of that format, so vhd-util is the independent reader); vhd-util check
# finds the image valid.
# timeout: 180
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp blockdev
tapdisk_env

# --- raw ------------------------------------------------------------------------------------
td_raw_roundtrip td_create tapdisk

# --- VHD ------------------------------------------------------------------------------------
td_vhd_roundtrip td_create vhd-util tapdisk
# tapdisk's own VHD code is the only writer of that format: vhd-util read is the independent
# reader of what it wrote.
vhd-util read -n "$PWD/disk.vhd" -R $((8 << 20)) -c $((4 << 20)) > vhd-read.bin 2> vhd-read.err ||
	{ cat vhd-read.err; fail "vhd-util read failed"; }
cmp -s vhd-read.bin vhd-mid.bin || fail "vhd: vhd-util read finds other data at 8 MiB than was written"
vhd-util read -n "$PWD/disk.vhd" -R $((30 << 20)) -c $((2 << 20)) > vhd-read.bin 2> vhd-read.err ||
	{ cat vhd-read.err; fail "vhd-util read failed"; }
cmp -s vhd-read.bin vhd-end.bin || fail "vhd: vhd-util read finds other data in the last 2 MiB than was written"
log "vhd: vhd-util read finds the data"
