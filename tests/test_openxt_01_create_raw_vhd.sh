#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# OpenXT's legacy userspace (tapdisk2 and tap-ctl of OpenXT/blktap a0f94d7: ioctl 202, the
# 272-byte params, the "blktap-control" misc name) over raw (aio:) and VHD (vhd:) images, made
# and torn down with its tap-ctl create/destroy.
# raw (td_raw_roundtrip): data put into the image is read back bit-exact through the tapdev
# (O_DIRECT); data written through the tapdev (O_DIRECT, and buffered then flushed) is found
# bit-exact in the image after drop_caches and after destroy. The tapdev has the image's size.
# VHD (td_vhd_roundtrip, made by OpenXT's vhd-util): a fresh image reads as zeros; data written
# through the tapdev (also the image's last block) is read back through it, then, after
# destroy, through a new tap served by a new tapdisk2; vhd-util check finds the image valid.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd cmp blockdev
require_openxt

# --- raw ------------------------------------------------------------------------------------
td_raw_roundtrip oxt_create tapdisk2

# --- VHD ------------------------------------------------------------------------------------
td_vhd_roundtrip oxt_create "$OXT_VHDUTIL" tapdisk2
