#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The driver's error paths, reached with the kernel's fault injection: failslab and
# fail_page_alloc fail every Nth allocation made with blktap.ko on the stack (N from 2 to 301,
# a different one each iteration; the stack-trace filter confines them to the module's address
# range; sleeping allocations included), while
# taps are allocated and freed, served by blktapd (mmap, CREATE_DEVICE, I/O), named, pooled
# and destroyed. Every operation must end within its bound, succeed or fail with a clean
# errno; afterwards, with injection off, every tap left can be freed, the module unloads (no
# reference leaked) and kmemleak finds no leaked object allocated from the module.
# Needs kmemleak=on on the kernel command line (make check boots a VM of its own for this
# test); skips otherwise.
# timeout: 420
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd timeout
KL=/sys/kernel/debug/kmemleak
[ -w /sys/kernel/debug/failslab/probability ] || skip "no failslab in this kernel"
if ! grep -q 'kmemleak=on' /proc/cmdline || [ ! -w "$KL" ]; then
	skip "kmemleak is off (boot with kmemleak=on)"
fi
unload_blktap
load_blktap
# The module's memory: /proc/modules gives its size and load address.
# shellcheck disable=SC2046 # two words
set -- $(awk '$1 == "blktap" { print $2, $6 }' /proc/modules)
size=$1 base=$2
case "$base" in '' | 0x0000000000000000) fail "no address for blktap in /proc/modules" ;; esac
# Kernel addresses do not fit a signed 64-bit number: keep them as 16 hex digits, which
# compare as strings.
start=$(printf '%016x' "$((base))") end=$(printf '%016x' "$((base + size))")
log "blktap.ko at 0x$start..0x$end ($size bytes)"
ITER=$(scaled 30 300)

inject() { # inject on INTERVAL | inject off
	for f in failslab fail_page_alloc; do
		d=/sys/kernel/debug/$f
		if [ "$1" = on ]; then
			echo 0 > "$d/verbose"; echo N > "$d/task-filter"; echo N > "$d/ignore-gfp-wait"
			echo "0x$start" > "$d/require-start"; echo "0x$end" > "$d/require-end"
			echo 32 > "$d/stacktrace-depth"; echo "$2" > "$d/interval"; echo -1 > "$d/times"
			echo 100 > "$d/probability"
		else
			echo 0 > "$d/probability"
		fi
	done
	[ ! -w /sys/kernel/debug/fail_page_alloc/min-order ] || echo 0 > /sys/kernel/debug/fail_page_alloc/min-order
}
atexit "inject off"
echo clear > "$KL"

# errno_ok FILE: the command's error output names a clean errno (or is empty).
errno_ok() {
	! grep -qiE 'panic|segfault|bug|unknown error' "$1"
}

# The kernel reports each failed allocation (warn_alloc, with a stack dump); between these
# marks scripts/check-kmsg.sh knows them for what they are.
kmsg "fault injection on"
atexit 'kmsg "fault injection off"'
ok=0 failed=0 i=0
while [ "$i" -lt "$ITER" ]; do
	i=$((i + 1))
	# Every Nth allocation from the module fails, N varying from 2 to 301 over the iterations:
	# each one breaks a different step of the same path.
	inject on $((2 + (i * 37) % 300))
	# Every other tap with large requests (a ring of 513 pages, 64 KiB requests, issue 22).
	large=
	[ $((i % 2)) = 1 ] || large="--features large --max-segments 16"
	# shellcheck disable=SC2086 # words on purpose
	if timeout 60 blktap-ctl create --backend mem:8M --timeout 30 $large > create.out 2> create.err; then
		dev=$(cat create.out)
		m=${dev##*tapdev}
		disk=/dev/$(disk_name "$m")
		# I/O (its failures are EIO at worst), a name, a pool.
		timeout 30 dd if=/dev/zero of="$disk" bs=64k count=8 oflag=direct status=none 2>> io.err
		timeout 30 dd if="$disk" of=/dev/null bs=64k count=8 iflag=direct status=none 2>> io.err
		printf 'vm-%s' "$i" > "$(tap_sysfs "$m")/name" 2>> attr.err
		timeout 60 blktap-ctl destroy -m "$m" --timeout 40 2> destroy.err ||
			{ errno_ok destroy.err || { cat destroy.err; fail "iteration $i: destroy failed oddly"; }; }
		ok=$((ok + 1))
	else
		rc=$?
		[ "$rc" != 124 ] || { cat create.err; fail "iteration $i: blktap-ctl create hung (60 s)"; }
		errno_ok create.err || { cat create.err; fail "iteration $i: create failed oddly"; }
		failed=$((failed + 1))
	fi
done
inject off
kmsg "fault injection off"
log "$ITER iterations under fault injection: $ok served and destroyed, $failed creations failed cleanly"
head -n 3 create.err 2>/dev/null | sed 's/^/  a failure: /'
[ "$ok" -gt 0 ] || fail "no iteration succeeded: the injection rate is too high to test anything"
[ "$failed" -gt 0 ] || log "note: no creation failed (injection hit other paths only)"

# Clean up what the failures left: daemons, then taps.
killall -TERM blktapd 2>/dev/null
sleep 1
killall -KILL blktapd 2>/dev/null
for d in /sys/class/blktap2/blktap!blktap*; do
	[ -e "$d" ] || continue
	m=${d##*blktap}
	wait_for 20 blktap-ctl free -m "$m" 2>/dev/null || fail "tap $m cannot be freed after the injection"
done

# Leaks: kmemleak reports objects unreferenced for 5 s; attribute them by the backtrace
# addresses that fall inside the module (before it is unloaded).
sleep 6
echo scan > "$KL"
sleep 2
echo scan > "$KL"
cat "$KL" > leaks.txt
ours=$(awk -v s="$start" -v e="$end" '
	/^unreferenced object/ { obj = $0 }
	/\[<[0-9a-f]+>\]/ {
		a = $1; gsub(/[^0-9a-f]/, "", a)
		if ((length(a) == 16 && a >= s && a < e) || / \[blktap\]$/) print obj
	}
' leaks.txt | sort -u | wc -l)
if [ "$ours" -gt 0 ]; then
	head -n 60 leaks.txt
	fail "kmemleak: $ours object(s) allocated from blktap.ko leaked"
fi
log "kmemleak: $(grep -c '^unreferenced object' leaks.txt) unreferenced object(s) in all, none from blktap.ko"
unload_blktap
