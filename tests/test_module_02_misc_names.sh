#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The control device is registered under both names blktap2 userspace knows: /proc/misc lists
# exactly "blktap/control" and "blktap-control" (no other blktap entry before any tap exists),
# and both nodes are character devices of the misc major (10) whose minors match /proc/misc.
. "$(dirname "$0")/lib/common.sh"

unload_blktap # the check is about a fresh module with no tap
load_blktap
atexit unload_blktap

misc=$(awk '$2 ~ /blktap/ { print $2 }' /proc/misc | sort)
log "blktap entries in /proc/misc: $(echo "$misc" | tr '\n' ' ')"
expected=$(printf 'blktap-control\nblktap/control\n')
[ "$misc" = "$expected" ] || fail "/proc/misc has '$(echo "$misc" | tr '\n' ' ')', expected 'blktap-control blktap/control'"

for name in blktap/control blktap-control; do
	node=/dev/$name
	# devtmpfs creates the node asynchronously from the uevent
	wait_for 5 test -e "$node" || fail "$node was not created"
	minor=$(awk -v n="$name" '$2 == n { print $1 }' /proc/misc)
	expect_chrdev "$node" "$MISC_MAJOR" "$minor"
	log "$node: char $MISC_MAJOR:$minor"
done
