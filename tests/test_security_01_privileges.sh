#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Who may do what (blktap-test security): the control and ring nodes are 0600 root:root;
# ALLOC_TAP and FREE_TAP need CAP_SYS_ADMIN (EPERM for uid 65534 holding a control fd opened as
# root, and for root without CAP_SYS_ADMIN); uid 65534 cannot open the control or ring node
# (EACCES); a process that does not own the ring mapping (a forked child, privileged or not, or
# a process given the fd over a unix socket) gets EACCES from every ring ioctl and EBUSY from
# mmap, and the owner's ring keeps working; a thread of the owner may use the ring.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
ktap_run security blktap-test security
stat_report security 1 0 0
