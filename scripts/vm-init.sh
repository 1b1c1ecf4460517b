#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# /init of the blktap-rs test VM (busybox ash). Runs the selected selftests from /tests, prints
# KTAP on the console and a final "BLKTAP-RESULT: passed=P failed=F skipped=S" line, then makes
# QEMU exit (isa-debug-exit: rc 1 = all passed, rc 3 = failures; or reboot -f with -no-reboot).
#
# Kernel command line parameters (unknown "x.y=" parameters are ignored by the kernel and not
# passed to init, so we read them from /proc/cmdline):
#   blktap.tests=LIST     comma-separated test names (test_module_01_load_unload[.sh]), group
#                         names (module = test_module_*) or "all" (the default).  A quoted value
#                         (blktap.tests="a b") may also be space-separated.
#   blktap.insmod=1|LIST  preload blktap.ko (1) or the listed modules (names in /lib/modules or
#                         paths) before the tests. Off by default: tests load what they need.
#   blktap.timeout=SECS   default per-test timeout (120); a test may override it with a
#                         "# timeout: SECS" header line.
#   blktap.run=PATH       run only this script, as a test named after its file (the demo mode).
#   blktap.shell=1        interactive shell on the console instead of tests.
#   blktap.io=MODE        export BLKTAPD_IO=MODE (sync, uring, auto): the I/O path of every
#                         blktapd the tests start without --io (the file backend's tests on
#                         either path: --append blktap.io=sync).
#
# Markers written to /dev/kmsg (and so interleaved with kernel messages in the console log),
# which scripts/check-kmsg.sh uses to blame a kernel splat on a test:
#   blktap-test: start N NAME          blktap-test: end N NAME rc=RC
#   blktap-test: phase teardown        blktap-test: done
# and copies of the plan, result and BLKTAP-RESULT lines: "blktap-test: ktap LINE".

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export TERM="${TERM:-vt100}"
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || echo "init: cannot mount devtmpfs"
# If the archive had no /dev/console, stdio is closed until devtmpfs provides one.
[ -t 1 ] || exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t configfs configfs /sys/kernel/config 2>/dev/null
hostname blktap-vm

kmsg() { echo "<5>blktap-test: $*" > /dev/kmsg 2>/dev/null; }

# KTAP and result lines go to the console for people and, as "blktap-test: ktap LINE", to the
# kernel log for the host: printk may print a record in the middle of a line a process writes
# to the console, but never splits its own records, so the host reads those.
ktap() {
	echo "$*"
	kmsg "ktap $*"
}

# Leave QEMU with status $1 (0 = success). isa-debug-exit turns the byte v written to port 0xf4
# into QEMU exit status (v << 1) | 1; without it, reboot -f ends QEMU through -no-reboot.
vm_exit() {
	sync
	# Userspace console output is drained by the UART interrupt, not synchronously: give the
	# last lines time to leave before QEMU is gone.
	sleep 0.3
	if [ -c /dev/port ]; then
		# shellcheck disable=SC2059 # the format is built on purpose: one raw byte
		printf "\\$(printf %03o "$1")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
		sleep 1
	fi
	reboot -f
	while :; do sleep 60; done # never return: pid 1 exiting panics the kernel
}

# --- command line -----------------------------------------------------------------------
TESTS=all INSMOD='' TIMEOUT=120 RUN='' SHELL_MODE=''
pending='' pval=''
set -f # no globbing while splitting the command line
# shellcheck disable=SC2013 # words are what we want
for w in $(cat /proc/cmdline); do
	# Re-join a quoted value that the word splitting above cut at its spaces.
	if [ -n "$pending" ]; then
		pval="$pval $w"
		case "$w" in *\") ;; *) continue ;; esac
		w="$pending=$pval" pending=''
	else
		case "$w" in
		blktap.*=\"*\") ;;
		blktap.*=\"*) pending=${w%%=*} pval=${w#*=}; continue ;;
		esac
	fi
	v=${w#*=}
	v=${v#\"} v=${v%\"}
	case "$w" in
	blktap.tests=*) TESTS=$v ;;
	blktap.insmod=*) INSMOD=$v ;;
	blktap.timeout=*) TIMEOUT=$v ;;
	blktap.run=*) RUN=$v ;;
	blktap.shell=*) SHELL_MODE=$v ;;
	blktap.io=*) export BLKTAPD_IO="$v" ;;
	esac
done
set +f

preload() {
	case "$INSMOD" in
	""|0|n|no) return 0 ;;
	1|y|yes) set -- blktap ;;
	*) # shellcheck disable=SC2046 # split the list into words
	   set -- $(echo "$INSMOD" | tr ',' ' ') ;;
	esac
	for m; do
		case "$m" in */*) ko=$m ;; *) ko=/lib/modules/${m%.ko}.ko ;; esac
		echo "# init: insmod $ko"
		insmod "$ko" || echo "# init: insmod $ko failed (rc=$?)"
	done
}

if [ -n "$SHELL_MODE" ] && [ "$SHELL_MODE" != 0 ]; then
	preload
	echo "blktap-vm: interactive shell; tests are in /tests, modules in /lib/modules."
	echo "blktap-vm: 'exit' (or Ctrl-D) powers the VM off; Ctrl-A X kills QEMU."
	# cttyhack opens the real console tty as controlling terminal so job control and ^C work.
	setsid cttyhack sh -l
	vm_exit 0
fi

# --- test selection ---------------------------------------------------------------------
# One "name path" pair per line; unknown names get path "-" and are reported as failed.
select_tests() {
	if [ -n "$RUN" ]; then
		n=$(basename "$RUN"); echo "${n%.sh} $RUN"
		return
	fi
	for item in $(echo "$TESTS" | tr ',' ' '); do
		item=${item%.sh}
		case "$item" in
		all) set -- /tests/test_*.sh
		     [ -f "$1" ] || continue ;; # no tests at all: an empty plan, not a failure
		*) if [ -f "/tests/$item.sh" ]; then set -- "/tests/$item.sh"
		   elif [ -f "/tests/test_$item.sh" ]; then set -- "/tests/test_$item.sh"
		   else set -- /tests/test_"${item}"_*.sh
		   fi ;;
		esac
		if [ ! -f "$1" ]; then echo "$item -"; continue; fi
		for t; do n=$(basename "$t"); echo "${n%.sh} $t"; done
	done | awk '!seen[$1]++' # a test named twice (e.g. "all,module") runs once
}

# After a failed or timed-out test: daemons it started run in sessions of their own (the
# timeout's process-group kill misses them) and may still hold taps and open disks, which
# would fail every later test that unloads the module. Stop them and free every tap.
reset_after_failure() {
	killall -KILL blktapd tapdisk tapdisk2 fio blktap-test 2>/dev/null
	sleep 1
	command -v blktap-ctl >/dev/null || return 0
	for d in /sys/class/blktap2/blktap!blktap*; do
		[ -e "$d" ] || continue
		m=${d##*blktap}
		if blktap-ctl free -m "$m" >/dev/null 2>&1; then
			echo "# reset after failure: freed tap $m"
		else
			echo "# reset after failure: tap $m could not be freed"
		fi
	done
}

# Run test $1 (number), $2 (name), $3 (path); print its KTAP line; return 0 pass, 1 fail, 4 skip.
run_test() {
	n=$1 name=$2 path=$3
	if [ "$path" = - ]; then
		ktap "not ok $n $name # no such test"
		return 1
	fi
	to=$(sed -n 's/^# *timeout[:=] *\([0-9][0-9]*\).*/\1/p' "$path" | head -n1)
	to=${to:-$TIMEOUT}
	dir=/tmp/test.$n
	mkdir -p "$dir"
	skipf=$dir/.skip-reason
	echo "# start $n $name (timeout ${to}s)"
	kmsg "start $n $name"
	mkfifo "$dir/.out"
	# Prefix the test's output with "# " (KTAP diagnostics) while streaming it, so that the host
	# log shows how far a hanging test got.
	( while IFS= read -r line || [ -n "$line" ]; do echo "# $line"; done < "$dir/.out" ) &
	reader=$!
	# setsid gives the test its own process group: a timeout kills it with everything it forked.
	(
		cd "$dir" || exit 1
		exec 9<&- # the test list
		export BLKTAP_TEST_NAME="$name" BLKTAP_TEST_NUM="$n" BLKTAP_SKIP_FILE="$skipf"
		exec setsid sh "$path"
	) </dev/null >"$dir/.out" 2>&1 &
	pid=$!
	(
		sleep "$to"
		touch "$dir/.timeout"
		kmsg "timeout $n $name after ${to}s"
		# Stacks of blocked tasks, when sysrq is built in: shows where the test is stuck.
		[ -w /proc/sysrq-trigger ] && echo w > /proc/sysrq-trigger
		kill -TERM -- "-$pid" 2>/dev/null
		sleep 5
		kill -KILL -- "-$pid" 2>/dev/null
	) &
	watchdog=$!
	wait "$pid"
	rc=$?
	kill "$watchdog" 2>/dev/null
	# Background helpers the test forgot to stop must not leak into the next test.
	kill -KILL -- "-$pid" 2>/dev/null
	wait "$reader"
	kmsg "end $n $name rc=$rc"
	# /tmp is a tmpfs in RAM: the images a test made must not starve the tests after it. The
	# small files (logs, fio output) stay for a look at a failure.
	find "$dir" -type f -size +1024k -exec rm -f {} + 2>/dev/null
	if [ -e "$dir/.timeout" ]; then
		ktap "not ok $n $name # TIMEOUT after ${to}s"
		reset_after_failure
		return 1
	fi
	case $rc in
	0) ktap "ok $n $name"; return 0 ;;
	4) reason=$(cat "$skipf" 2>/dev/null)
	   ktap "ok $n $name # SKIP${reason:+ $reason}"; return 4 ;;
	*) ktap "not ok $n $name # exit=$rc"; reset_after_failure; return 1 ;;
	esac
}

preload
list=$(select_tests)
total=$(echo "$list" | grep -c .)
echo "TAP version 13"
ktap "1..$total"
pass=0 fail=0 skip=0 n=0
# The list is read on fd 9 so that nothing a test does to stdin can eat it.
while read -r name path <&9; do
	[ -n "$name" ] || continue
	n=$((n + 1))
	run_test "$n" "$name" "$path"
	case $? in
	0) pass=$((pass + 1)) ;;
	4) skip=$((skip + 1)) ;;
	*) fail=$((fail + 1)) ;;
	esac
done 9<<EOF
$list
EOF

# Unload what is still loaded so that unload-time leaks and warnings show up in this run too.
kmsg "phase teardown"
if [ -d /sys/module/blktap ]; then
	echo "# init: rmmod blktap (still loaded after the tests)"
	rmmod blktap || echo "# init: final rmmod blktap failed (rc=$?)"
fi
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:$skip error:0"
ktap "BLKTAP-RESULT: passed=$pass failed=$fail skipped=$skip"
kmsg "done"
[ "$fail" = 0 ] && vm_exit 0
vm_exit 1
