#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Load with daemon deaths: 16 taps (64 in `make stress`), each served by blktapd from a file
# image, with verified O_DIRECT I/O on all of them at once (blktap-test io: every block read
# back must hold what was last written, or either the old or the new content after a write that
# failed) while daemons are killed at random (kill -9) and restarted on the same tap, which
# then serves the surviving disk. Only EIO is allowed, and no I/O may take more than 10 s.
# After everything is freed, memory is back to where it was: no ring area (353-page vmalloc)
# left, vmalloc use within 1 MiB, MemFree within 24 MiB and Slab within 8 MiB of the start
# (after dropping caches and shrinking the slab caches, which empties KASAN's quarantine). No
# task in D state for over 10 s.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd blktap-test
unload_blktap
load_blktap

ntaps=$(scaled 16 64)
secs=$(scaled 20 900)
seed=$(test_seed)
log "seed $seed, $ntaps taps, ${secs}s"

# mem_state: "MemFree Slab VmallocUsed rings" after dropping the caches and shrinking every slab
# cache (which also empties KASAN's quarantine of freed objects).
mem_state() {
	sync
	echo 3 > /proc/sys/vm/drop_caches
	sleep 1
	for f in /sys/kernel/slab/*/shrink; do echo 1 > "$f"; done 2>/dev/null
	echo 3 > /proc/sys/vm/drop_caches
	awk '/^MemFree:/ { f = $2 } /^Slab:/ { s = $2 } /^VmallocUsed:/ { v = $2 } END { printf "%d %d %d", f, s, v }' /proc/meminfo
	echo " $(grep -c ' pages=353 ' /proc/vmallocinfo)"
}
before=$(mem_state)
log "before: MemFree Slab VmallocUsed (kB) rings: $before"

dstate_watch_start 10
imgdir=$PWD/img
mkdir -p "$imgdir"
minors=
cleanup() {
	touch "$PWD/io.stop"
	for f in "$PWD"/daemon.*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
	for m in $minors; do [ -d "$(tap_sysfs "$m")" ] && free_tap "$m"; done
	rm -rf "$imgdir"
	return 0
}
atexit cleanup

i=0
disks=
while [ "$i" -lt "$ntaps" ]; do
	tap_alloc
	minors="$minors $TAP_MINOR"
	truncate -s 4M "$imgdir/$TAP_MINOR.img" 2>/dev/null ||
		dd if=/dev/zero of="$imgdir/$TAP_MINOR.img" bs=1048576 count=4 status=none
	serve_tap "$TAP_MINOR" "file:$imgdir/$TAP_MINOR.img"
	echo "$DAEMON_PID" > "daemon.$TAP_MINOR"
	disks="$disks --disk /dev/$(disk_name "$TAP_MINOR")"
	i=$((i + 1))
done
log "$ntaps taps up"

# shellcheck disable=SC2086 # $disks is a list of options
# Niced: the restarts of killed daemons should not wait behind 16 busy I/O threads.
blktap-test io $disks --nice 19 --threads 1 --blocks 1024 --max-blocks 8 --tolerate-eio --io-timeout 10 \
	--seconds 100000 --until "$PWD/io.stop" --seed "$seed" > io.out 2>&1 &
io_pid=$!

# Every disk is open in the I/O process before the first kill (else its removal would be right).
opened() { grep -q 'openers:[1-9]' "$(tap_sysfs "$1")/debug"; }
for m in $minors; do
	wait_for 20 opened "$m" || fail "the I/O process did not open the disk of tap $m"
done

# Kill and restart daemons at random until the time is up: 1 to 3 at a time.
t0=$(now)
kills=0
r=$seed
# rand N: RAND = a pseudo-random number in 0..N-1 (no subshell, so the state advances).
rand() { r=$(((r * 1103515245 + 12345) % 2147483648)); RAND=$(((r / 65536) % $1)); }
while awk -v e="$(since "$t0")" -v s="$secs" 'BEGIN { exit !(e < s) }'; do
	rand 9
	sleep "0.$RAND"
	victims=
	rand 3
	n=$((RAND + 1))
	while [ "$n" -gt 0 ]; do
		set -- $minors
		rand "$ntaps"
		k=$((RAND + 1))
		eval "m=\${$k}"
		case " $victims " in *" $m "*) ;; *) victims="$victims $m" ;; esac
		n=$((n - 1))
	done
	for m in $victims; do kill -KILL "$(cat "daemon.$m")" 2>/dev/null; done
	for m in $victims; do wait "$(cat "daemon.$m")" 2>/dev/null; kills=$((kills + 1)); done
	rand 3
	[ "$RAND" != 0 ] || sleep 0.5
	t1=$(now)
	for m in $victims; do
		rm -f "blktapd.$m.log"
		serve_tap_start "$m" "file:$imgdir/$m.img"
		echo "$DAEMON_PID" > "daemon.$m"
	done
	for m in $victims; do serve_tap_wait "$m"; done
	log "killed and restarted the daemons of taps$victims in $(since "$t1")s"
	kill -0 "$io_pid" 2>/dev/null || break
done
touch io.stop
io_rc=0
wait "$io_pid" || io_rc=$?
grep -E '^(not ok|# io-total|# io: .*(mismatches=[1-9]|errors=[1-9]))' io.out | head -n 20
log "$kills daemon kills in $(since "$t0")s"
[ "$io_rc" = 0 ] || { grep -E '^not ok' io.out; fail "verified I/O failed (rc=$io_rc)"; }
# shellcheck disable=SC2046 # two words on purpose
set -- $(ktap_io_totals io.out)
ios=$1 failed=$2
[ "$ios" -gt 0 ] || fail "no I/O was done"

# Tear down: daemons stop gracefully (removing their disks), then the taps are freed.
for m in $minors; do kill "$(cat "daemon.$m")" 2>/dev/null; done
for m in $minors; do
	pid=$(cat "daemon.$m")
	wait_for 20 sh -c "! kill -0 $pid 2>/dev/null" || fail "blktapd $pid (tap $m) did not stop"
	wait "$pid" 2>/dev/null
	rm -f "daemon.$m"
	wait_for 5 disk_gone "$m" || fail "disk of tap $m still there"
	free_tap "$m" || fail "cannot free tap $m"
done
minors=
dstate_watch_check
rm -rf "$imgdir"
after=$(mem_state)
log "after:  MemFree Slab VmallocUsed (kB) rings: $after"
set -- $before $after
[ "$8" = "$4" ] || fail "$(($8 - $4)) ring areas (353-page vmalloc) leaked"
[ $(($7 - $3)) -le 1024 ] || fail "VmallocUsed grew by $(($7 - $3)) kB"
[ $(($1 - $5)) -le 24576 ] || fail "MemFree dropped by $(($1 - $5)) kB"
[ $(($6 - $2)) -le 8192 ] || fail "Slab grew by $(($6 - $2)) kB"
stat_report load "$kills" "$ios" "$failed"
