#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# 64 taps at once (mem backend, 4 MiB each, one blktapd per tap), all created and destroyed
# concurrently: the concurrent creates get the minors 0..63 once each, every tap gets its own disk
# (td<letters> of its minor, 4 MiB). Concurrent O_DIRECT writes of a different random pattern
# to all 64 disks, then concurrent read-back: every disk returns its own pattern (no request
# answered from another tap's ring or with another tap's data). After all taps are destroyed
# none is left (blktap-ctl list, sysfs class, "devices", /sys/block) and rmmod succeeds.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd cmp
unload_blktap # rmmod at the end checks that nothing is left; start from nothing as well
load_blktap

ntaps=64
t0=$(now)

# Create all taps at once: concurrent ALLOC_TAPs, daemon start-ups and CREATE_DEVICEs. Under
# TCG + KASAN a tap takes ~0.7 s of CPU to come up and 64 creates share 2 vCPUs: hence the
# generous blktap-ctl timeout (its default, 10 s, is too short for the last of them).
i=0
while [ "$i" -lt "$ntaps" ]; do
	(
		rc=0
		blktap-ctl create --timeout 150 --backend mem:4M > "c$i.out" 2> "c$i.err" || rc=$?
		echo "$rc" > "c$i.rc"
	) &
	i=$((i + 1))
done
wait
minors=
bad=
i=0
while [ "$i" -lt "$ntaps" ]; do
	out=$(cat "c$i.out")
	m=${out##*tapdev}
	case "$m" in
	'' | *[!0-9]*) bad="$bad #$i(rc=$(cat "c$i.rc"): $(grep -v "^blktapd\[" "c$i.err" | tail -n 3))" ;;
	*) atexit "tap_destroy $m"; minors="$minors $m" ;;
	esac
	i=$((i + 1))
done
[ -z "$bad" ] || fail "blktap-ctl create failed:$bad"
sorted=$(echo "$minors" | tr ' ' '\n' | sed '/^$/d' | sort -n | tr '\n' ' ')
[ "$sorted" = "$(seq 0 $((ntaps - 1)) | tr '\n' ' ')" ] ||
	fail "the $ntaps concurrently created taps got minors $sorted, expected 0..$((ntaps - 1)) once each"
# "minor disk" pairs, computed once (every fork counts under TCG)
for m in $minors; do disk_name "$m"; done > disks
pairs=$(echo "$minors" | tr ' ' '\n' | sed '/^$/d' | paste -d' ' - disks | tr ' ' ':')
for p in $pairs; do
	m=${p%:*} d=${p#*:}
	wait_for 5 test -b "/dev/$d" || fail "/dev/$d (tap $m) did not appear"
	sz=$(cat "/sys/block/$d/size")
	[ "$sz" = 8192 ] || fail "/dev/$d (tap $m) has $sz sectors, expected 8192"
done
log "created $ntaps taps concurrently in $(since "$t0") s"
ndev=$(wc -l < "$BLKTAP_CLASS/devices")
[ "$ndev" = "$ntaps" ] || fail "$BLKTAP_CLASS/devices lists $ndev taps with a disk, expected $ntaps"

for m in $minors; do
	dd if=/dev/urandom of="pat$m" bs=131072 count=1 iflag=fullblock status=none || fail "cannot make a pattern"
done

# Phase 1: all writes at once (128 KiB at 1 MiB + 4 KiB * minor, 64 KiB writes: 44 + 20 KiB
# ring requests); phase 2: all read-backs at once.
t0=$(now)
for p in $pairs; do
	m=${p%:*} dev=/dev/${p#*:}
	(
		dd if="pat$m" of="$dev" bs=65536 seek=$((1048576 + 4096 * m)) oflag=seek_bytes,direct conv=notrunc status=none 2> "w$m.err" &&
			touch "w$m.ok"
	) &
done
wait
for p in $pairs; do
	m=${p%:*}
	[ -e "w$m.ok" ] || fail "O_DIRECT write to ${p#*:} (tap $m) failed: $(cat "w$m.err")"
done
log "concurrent writes to $ntaps disks done in $(since "$t0") s"
t0=$(now)
for p in $pairs; do
	m=${p%:*} dev=/dev/${p#*:}
	(
		dd if="$dev" of="r$m" bs=65536 count=2 skip=$((1048576 + 4096 * m)) iflag=skip_bytes,direct status=none 2> "r$m.err" &&
			cmp -s "pat$m" "r$m" && touch "r$m.ok"
	) &
done
wait
for p in $pairs; do
	m=${p%:*}
	[ -e "r$m.ok" ] || fail "${p#*:} (tap $m) did not read back its pattern: $(cat "r$m.err") $(cmp "pat$m" "r$m" 2>&1)"
done
log "concurrent read-back from $ntaps disks in $(since "$t0") s: every disk returned its own data"

t0=$(now)
for m in $minors; do
	( blktap-ctl destroy --timeout 150 -m "$m" > "d$m.err" 2>&1 && touch "d$m.ok" ) &
done
wait
for m in $minors; do
	[ -e "d$m.ok" ] || fail "blktap-ctl destroy -m $m failed: $(cat "d$m.err")"
done
log "destroyed $ntaps taps concurrently in $(since "$t0") s"
left=$(blktap-ctl list | sed 1d)
[ -z "$left" ] || fail "taps left after destroying all of them: $left"
# shellcheck disable=SC2010 # names with '!' from sysfs, nothing odd
left=$(ls "$BLKTAP_CLASS" | grep '^blktap[!0-9]' | tr '\n' ' ')
[ -z "$left" ] || fail "class devices left in $BLKTAP_CLASS: $left"
[ -z "$(cat "$BLKTAP_CLASS/devices")" ] || fail "$BLKTAP_CLASS/devices not empty: $(cat "$BLKTAP_CLASS/devices")"
# shellcheck disable=SC2010
left=$(ls /sys/block | grep '^td' | tr '\n' ' ')
[ -z "$left" ] || fail "disks left in /sys/block: $left"
log "all $ntaps taps destroyed, nothing left"
unload_blktap
