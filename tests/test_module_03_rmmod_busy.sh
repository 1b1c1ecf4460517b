#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# An open control device pins the module: rmmod fails quickly ("in use"/EBUSY/EAGAIN) instead of
# unloading code that an open file still points to, or hanging; after close, rmmod succeeds.
. "$(dirname "$0")/lib/common.sh"

load_blktap
atexit unload_blktap
wait_for 5 test -e "$BLKTAP_CONTROL" || fail "$BLKTAP_CONTROL missing"

refcnt() { cat "/sys/module/$BLKTAP_MOD/refcnt" 2>/dev/null; }
before=$(refcnt)
exec 3<"$BLKTAP_CONTROL" || fail "cannot open $BLKTAP_CONTROL"
log "module refcnt: $before closed, $(refcnt) open"

# timeout: a rmmod that waits for the last reference would hang the test here. 3<&-: busybox
# timeout leaves a watcher process behind for the whole 10 s, which must not hold fd 3 open.
if out=$(timeout 10 rmmod "$BLKTAP_MOD" 2>&1 3<&-); then
	fail "rmmod succeeded while $BLKTAP_CONTROL was open"
else
	rc=$?
fi
log "rmmod while open: rc=$rc: $out"
[ "$rc" -lt 124 ] || fail "rmmod hung (killed by timeout, rc=$rc)"
case "$out" in
*"in use"*|*[Bb]usy*|*"temporarily unavailable"*) ;;
*) fail "unexpected rmmod error: $out" ;;
esac
module_loaded || fail "module is gone although rmmod failed"

# Closing the last file must drop the reference synchronously.
exec 3<&-
[ "$(refcnt)" = "$before" ] || fail "refcnt $(refcnt) after close, expected $before"
unload_blktap
