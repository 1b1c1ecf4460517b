#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# No stale data in pages handed to userspace (blktap-test stale-pages, zeroed-pages): a fresh
# mapping is all zero; a daemon serves reads and writes, scribbles every data page and exits;
# the next daemon's mapping of the same tap has zeroed data pages, a fresh ring header and zero
# entries; on a fresh mapping the buffers of read requests are zero until the daemon itself
# writes them; a new tap's mapping is zero too.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-test
load_blktap
ktap_run zeroed blktap-test zeroed-pages
ktap_run stale blktap-test stale-pages
stat_report security 1 96 0
