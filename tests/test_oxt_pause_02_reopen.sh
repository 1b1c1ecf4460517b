#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A kernel-driven resume that reopens another image (V-OXT: ioctls 205 REOPEN and 203
# SET_PARAMS). OpenXT's legacy tapdisk2 serves a.img; the tap is paused; a write issued while
# paused waits in the kernel (the dd is still running 2 s later, the request pending); a.img is
# copied to b.img, which is made 48 MiB instead of 32; "aio:<b.img>" is written to the tap's
# name. First a resume with a name whose image does not exist: tapdisk2 reports its open error
# through 206, the resume writer gets it and the tap stays paused. Then the resume with b.img:
# tapdisk2 reopens the name the kernel gives it, the tapdev grows to 48 MiB (SET_PARAMS), the
# waiting write completes into b.img, later writes land in b.img and never in a.img, and the
# data copied from a.img reads back through the tapdev.
# timeout: 120
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"
. "$(dirname "$0")/lib/oxt_pause.sh"

require_cmd cmp blockdev
require_openxt

mib=$((1024 * 1024))
pattern p1.bin 4
pattern p2.bin 4
pattern p3.bin 4
truncate -s 32M a.img || fail "cannot create a.img"
oxt_create -a "aio:$PWD/a.img"
m=$TD_MINOR
attrs=$(tap_sysfs "$m")
write_attr "$attrs/message_timeout" 20 || td_fail "message_timeout 20: $WRITE_ERR"
write_region "$TD_DEV" 0 p1.bin

expect_write "$m" pause "pause"
expect_pause "$m" paused "after pause"
dd if=p2.bin of="$TD_DEV" bs=1M seek=8 oflag=direct conv=notrunc status=none 2> dd2.err &
dd_pid=$!
sleep 2
kill -0 "$dd_pid" 2>/dev/null || td_fail "a write completed while the tap was paused"
pending=$(awk '/^begin pending:/ { sub(/.*:/, ""); print }' "$attrs/debug")
[ "${pending:-0}" -gt 0 ] || td_fail "no request pending in the kernel while paused"
log "paused: the write waits ($pending requests pending)"

cp a.img b.img || td_fail "cannot copy a.img"
truncate -s 48M b.img || td_fail "cannot grow b.img"

write_attr "$attrs/name" "aio:$PWD/missing.img" || td_fail "cannot set the name: $WRITE_ERR"
if timed_write "$attrs/resume" 1; then
	td_fail "resume onto a missing image succeeded"
fi
case "$WRITE_ERR" in
"Connection timed out") td_fail "tapdisk2 did not report its open error (resume timed out)" ;;
esac
log "resume onto a missing image: '$WRITE_ERR' after $ELAPSED s"
expect_pause "$m" paused "after the failed resume"
kill -0 "$dd_pid" 2>/dev/null || td_fail "the waiting write completed after a failed resume"

write_attr "$attrs/name" "aio:$PWD/b.img" || td_fail "cannot set the name: $WRITE_ERR"
expect_write "$m" resume "resume onto b.img"
expect_pause "$m" none "after resume"
rc=0
wait "$dd_pid" || rc=$?
[ "$rc" = 0 ] || { cat dd2.err; td_fail "the write issued while paused failed (rc=$rc)"; }
[ "$(cat "$attrs/name")" = "aio:$PWD/b.img" ] || td_fail "the tap's name is '$(cat "$attrs/name")'"
size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
[ "$size" = $((48 * mib)) ] || td_fail "$TD_DEV has $size bytes after the resume, b.img 48 MiB"

write_region "$TD_DEV" 40 p3.bin # past a.img's end: only b.img has room
drop_caches
region_equal "$TD_DEV" 0 4 p1.bin || td_fail "the data copied from a.img does not read back"
region_equal b.img 8 4 p2.bin || td_fail "the write issued while paused is not in b.img"
region_equal b.img 40 4 p3.bin || td_fail "the write after the resume is not in b.img"
region_equal a.img 8 4 p2.bin && td_fail "the write issued while paused went to a.img"
[ "$(stat -c %s a.img)" = $((32 * mib)) ] || td_fail "a.img changed size"
# shellcheck disable=SC2046 # "SENT FAILED"
set -- $(tap_counts "$m")
[ "$2" = 0 ] || td_fail "$2 requests failed on the tap"
log "resumed onto b.img: the paused write and later ones are in b.img, a.img untouched"
oxt_destroy "$m"
