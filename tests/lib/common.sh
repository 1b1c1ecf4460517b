# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Helpers for the blktap-rs selftests (busybox ash). Source it first thing:
#
#   . "$(dirname "$0")/lib/common.sh"
#
# Conventions (kselftest): exit 0 pass, 1 fail, 4 skip. The runner (scripts/vm-init.sh) prefixes
# the output with "# ", kills the test with its whole process group after its timeout (120 s, or
# a "# timeout: SECS" line in the test's header) and runs it in a fresh directory under /tmp.
# Never print raw dmesg lines: the host scans the console for kernel splats and would take an
# echoed "[  1.0] WARNING:" for a real one. Use kmsg_since, which strips the timestamps.

# shellcheck disable=SC2034 # used by the tests that source this file
KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

# The module under test. Overridable (e.g. vm-run.sh --append "BLKTAP_MOD=null_blk
# BLKTAP_KO=/lib/modules/null_blk.ko": the kernel hands such words to init as environment) to
# try the harness on a stand-in module.
# shellcheck disable=SC2034
{
BLKTAP_KO=${BLKTAP_KO:-/lib/modules/blktap.ko}
BLKTAP_MOD=${BLKTAP_MOD:-blktap}
BLKTAP_CONTROL=${BLKTAP_CONTROL:-/dev/blktap-control}
BLKTAP_CONTROL_ALT=/dev/blktap/control
MISC_MAJOR=10
}

TEST_NAME=${BLKTAP_TEST_NAME:-$(basename "$0" .sh)}

log() { echo "$*"; }

# Cleanups registered with atexit run in reverse order when the test exits, however it exits.
_atexit_cmds=
atexit() { _atexit_cmds="$*
$_atexit_cmds"; }
_run_atexit() {
	_cmds=$_atexit_cmds
	_atexit_cmds= # a failing cleanup must not loop back into the list
	printf '%s\n' "$_cmds" | while IFS= read -r _c; do
		[ -z "$_c" ] || eval "$_c" || log "cleanup failed: $_c"
	done
}
trap _run_atexit EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*"
	kmsg "FAIL: $*"
	exit "$KSFT_FAIL"
}

# skip "reason": the reason also ends up on the KTAP line ("ok N name # SKIP reason").
skip() {
	echo "SKIP: $*"
	[ -z "${BLKTAP_SKIP_FILE:-}" ] || echo "$*" > "$BLKTAP_SKIP_FILE"
	exit "$KSFT_SKIP"
}

# Write a line to the kernel log, so that it sits next to whatever the kernel says.
kmsg() { echo "<5>blktap-test: $TEST_NAME: $*" > /dev/kmsg 2>/dev/null || true; }

# A mark in the kernel log; kmsg_since MARK prints the kernel messages after it (no timestamps).
kmsg_mark() {
	_mark="mark-$$-$(tr -d ' .' < /proc/uptime)"
	kmsg "$_mark"
	echo "$_mark"
}
kmsg_since() {
	dmesg | awk -v m="$1" 'f { sub(/^\[ *[0-9]+\.[0-9]+\] /, ""); print } index($0, m) { f = 1 }'
}

# wait_for SECS CMD [ARGS...]: poll CMD every 0.1 s until it succeeds; 1 on timeout.
wait_for() {
	_secs=$1
	shift
	_n=$((_secs * 10))
	while [ "$_n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		_n=$((_n - 1))
	done
	"$@"
}

require_cmd() {
	for _c; do command -v "$_c" >/dev/null 2>&1 || skip "$_c not available"; done
}

module_loaded() { [ -d "/sys/module/${1:-$BLKTAP_MOD}" ]; }
module_gone() { ! module_loaded "$@"; }

# load_blktap [PARAM=VALUE...]: insmod blktap.ko unless it is loaded already. Skips the test if
# the initramfs has no blktap.ko (the runner was given none); fails if it does not load.
load_blktap() {
	module_loaded && return 0
	[ -f "$BLKTAP_KO" ] || skip "no $BLKTAP_KO in the initramfs"
	insmod "$BLKTAP_KO" "$@" || fail "insmod $BLKTAP_KO failed (rc=$?)"
	wait_for 5 module_loaded || fail "/sys/module/$BLKTAP_MOD missing after insmod"
}

# unload_blktap: rmmod and check that the module is gone. A no-op if it is not loaded.
unload_blktap() {
	module_loaded || return 0
	rmmod "$BLKTAP_MOD" || fail "rmmod $BLKTAP_MOD failed (rc=$?)"
	wait_for 5 module_gone || fail "/sys/module/$BLKTAP_MOD still present after rmmod"
}

# Major and minor numbers (decimal) of a device node: "MAJOR MINOR".
dev_numbers() {
	_t=$(stat -L -c '%t %T' "$1") || return 1
	# shellcheck disable=SC2086 # two words on purpose
	set -- $_t
	echo "$((0x$1)) $((0x$2))"
}

# expect_chrdev PATH MAJOR [MINOR]
expect_chrdev() {
	[ -e "$1" ] || fail "$1 does not exist"
	[ -c "$1" ] || fail "$1 is not a character device"
	_nums=$(dev_numbers "$1") || fail "cannot stat $1"
	[ "${_nums% *}" = "$2" ] || fail "$1 has major ${_nums% *}, expected $2"
	[ -z "${3:-}" ] || [ "${_nums#* }" = "$3" ] || fail "$1 has minor ${_nums#* }, expected $3"
}

# --- Taps served by blktapd (data, fs, ro, scale, abi, sysfs tests) --------------------------

# shellcheck disable=SC2034 # used by the tests that source this file
{
BLKTAP_DEV_DIR=${BLKTAP_DEV_DIR:-/dev/xen/blktap-2}
BLKTAP_CLASS=/sys/class/blktap2
}

# disk_name MINOR: the disk name of a tap, "td" + base-26 letters (0 tda, 25 tdz, 26 tdaa,
# 701 tdzz, 702 tdaaa, 16383 tdxfd).
disk_name() {
	awk -v m="$1" 'BEGIN {
		l = "abcdefghijklmnopqrstuvwxyz"
		if (m < 26) s = substr(l, m + 1, 1)
		else if (m < 702) s = substr(l, int(m / 26), 1) substr(l, m % 26 + 1, 1)
		else { q = int(m / 26) - 1; s = substr(l, int(q / 26), 1) substr(l, q % 26 + 1, 1) substr(l, m % 26 + 1, 1) }
		print "td" s
	}'
}

# tap_sysfs MINOR: the class device directory of a tap.
tap_sysfs() { echo "$BLKTAP_CLASS/blktap!blktap$1"; }

# tap_create [blktap-ctl create ARGS...]: allocate a tap served by blktapd and wait for its disk.
# Sets TAP_MINOR, TAP_DISK (e.g. tda) and TAP_DEV (/dev/tda); "blktap-ctl destroy" runs at exit.
tap_create() {
	_out=$(blktap-ctl create "$@") || fail "blktap-ctl create $* failed (rc=$?)"
	TAP_MINOR=${_out##*tapdev}
	case "$TAP_MINOR" in
	'' | *[!0-9]*) fail "blktap-ctl create $* printed '$_out', expected $BLKTAP_DEV_DIR/tapdev<N>" ;;
	esac
	atexit "tap_destroy $TAP_MINOR"
	TAP_DISK=$(disk_name "$TAP_MINOR")
	TAP_DEV=/dev/$TAP_DISK
	wait_for 5 test -b "$TAP_DEV" || fail "$TAP_DEV (tap $TAP_MINOR) did not appear after blktap-ctl create"
}

# tap_destroy MINOR: stop the tap's daemon and free it (a no-op if the tap is gone already).
tap_destroy() {
	[ -d "$(tap_sysfs "$1")" ] || return 0
	blktap-ctl destroy -m "$1" || { log "blktap-ctl destroy -m $1 failed (rc=$?)"; return 1; }
}

# write_attr FILE DATA: write DATA as is (no newline added) to FILE in a single write(2).
# 0 on success; else 1 with WRITE_ERR set to the error text (strerror, e.g. "Invalid argument").
write_attr() {
	WRITE_ERR=$(printf '%s' "$2" | dd of="$1" bs=4096 iflag=fullblock conv=notrunc status=none 2>&1) &&
		{ WRITE_ERR=; return 0; }
	WRITE_ERR=${WRITE_ERR##*: }
	[ -n "$WRITE_ERR" ] || WRITE_ERR="write failed without a message"
	return 1
}

# fio_verify_job FILE DEV: starts fio job file FILE with the [global] section of a verifying job
# on DEV (libaio, O_DIRECT, crc32c, fatal at the first mismatch, repeatable random offsets);
# the caller appends its job sections (cat >> FILE).
fio_verify_job() {
	cat > "$1" <<JOB
[global]
filename=$2
ioengine=libaio
direct=1
verify=crc32c
verify_fatal=1
randrepeat=1
JOB
}

# fio_verify_sizes LABEL DEPTH [EXTRA-JOB-LINES]: fio verify on $TAP_DEV at 4k, 44k, 128k and
# 1M, queue depth DEPTH, one job after the other, each on its own 8 MiB range (the first 32
# MiB); EXTRA-JOB-LINES go into every job. Judged by fio_check.
fio_verify_sizes() {
	fio_verify_job sizes.fio "$TAP_DEV"
	_off=0
	for _bs in 4k 44k 128k 1m; do
		cat >> sizes.fio <<JOB
[$1-$_bs]
stonewall
bs=$_bs
rw=randwrite
iodepth=$2
iodepth_batch_submit=$2
offset=${_off}m
size=8m
${3:-}
JOB
		_off=$((_off + 8))
	done
	fio_run_check "$1" sizes.fio
}

# disk_same_as_image IMAGE LABEL: fails unless the first 64 MiB of $TAP_DEV equal IMAGE's (read
# through the tap once the daemon has written everything it was sent).
disk_same_as_image() {
	cmp -n $((64 << 20)) "$TAP_DEV" "$1" > /dev/null 2>&1 ||
		fail "$2: the disk and the image differ"
}

# drop_caches: write back dirty data and drop the page cache, so that later reads of a disk
# come from its backend.
drop_caches() {
	sync
	echo 3 > /proc/sys/vm/drop_caches || fail "cannot drop the page cache"
}

# fio_check NAME OUT ERR RC: judge a fio run whose terse (v3) output is in file OUT and stderr
# in file ERR. Fails unless fio exited 0, every job has error 0, read back (verified) as many
# KiB as it wrote and wrote something, and no line mentions a verify problem. Prints one line
# per job: "name: wrote W KiB (T ms), verified R KiB (T ms): ok".
fio_check() {
	_bad=
	[ "$4" = 0 ] || _bad="fio exited with $4"
	if grep -qi 'verify\|bad magic\|crc' "$3"; then
		_bad="${_bad:+$_bad; }fio reported verify errors"
	fi
	_jobs=$(awk -F';' '$1 == 3 {
		st = ($5 != 0) ? "error " $5 : (($47 == 0) ? "wrote nothing" : (($6 != $47) ? "verified " $6 " of " $47 " KiB" : "ok"))
		printf "%s: wrote %s KiB (%s ms), verified %s KiB (%s ms): %s\n", $3, $47, $50, $6, $9, st
	}' "$2")
	[ -n "$_jobs" ] || _bad="${_bad:+$_bad; }no job result in fio's output"
	printf '%s\n' "$_jobs"
	case "$_jobs" in *": error "* | *": wrote nothing"* | *": verified "*" of "*) _bad="${_bad:+$_bad; }a job failed (see above)" ;; esac
	[ -n "$_bad" ] || return 0
	log "--- fio stderr ($1) ---"
	head -n 40 "$3"
	fail "fio $1: $_bad"
}

# fio_run_check NAME JOBFILE: run fio on JOBFILE (terse v3 output in fio.out, stderr in
# fio.err, both in the current directory) and judge the run with fio_check NAME.
fio_run_check() {
	_frc_rc=0
	fio --output-format=terse --terse-version=3 "$2" > fio.out 2> fio.err || _frc_rc=$?
	fio_check "$1" fio.out fio.err "$_frc_rc"
}

# fio_verify_matrix DEV DEVSIZE_MIB HALF: write-then-verify (crc32c, libaio, O_DIRECT) on DEV,
# one job after the other, for every block size (512, 4k, 44k = one full ring request of 11
# pages, 64k and 1M, which the block layer splits) x rw (write, randwrite), each at one iodepth:
# HALF 0 runs (bs #b, rw #r) at iodepth 1 if b + r is even, else 32; HALF 1 the other way round.
# So each half covers every bs with both iodepths and both rw modes, every rw mode with both
# iodepths, and the two halves together (mem and file backend tests) the full 5 x 2 x 2 cross
# product, in half the time of running it twice (TCG + KASAN: a few hundred requests/s at
# iodepth 1). One more job per half uses bs 3584 (7 sectors) at iodepth 32: fio lays its
# buffers out back to back, so most requests start in the middle of a page and straddle two,
# giving segments with non-zero first_sect and partial pages.
# Each job covers min(8 MiB, 1024 blocks): 512 KiB at 512 bytes, 4 MiB at 4k, 8 MiB from 44k
# up, so that the small block sizes take no longer than the large ones. The jobs start at
# different offsets (multiples of 8 MiB modulo DEVSIZE - 7) so they do not all check the same
# blocks.
fio_verify_matrix() {
	_dev=$1 _devmib=$2 _half=$3
	[ -b "$_dev" ] || fail "$_dev is not a block device" # fio would create a file
	{
		printf '[global]\nfilename=%s\nioengine=libaio\ndirect=1\nverify=crc32c\n' "$_dev"
		printf 'do_verify=1\nverify_fatal=1\nrandrepeat=1\n'
		_i=0 _b=0
		for _bs in 512 4k 44k 64k 1M; do
			case $_bs in 512) _kib=512 ;; 4k) _kib=4096 ;; *) _kib=8192 ;; esac
			_r=0
			for _rw in write randwrite; do
				if [ $(((_b + _r + _half) % 2)) = 0 ]; then _qd=1; else _qd=32; fi
				_off=$(((_i * 8) % (_devmib - 7)))
				printf '[%s-bs%s-qd%s]\nstonewall\nbs=%s\nrw=%s\niodepth=%s\n' \
					"$_rw" "$_bs" "$_qd" "$_bs" "$_rw" "$_qd"
				printf 'offset=%dm\nsize=%dk\n' "$_off" "$_kib"
				_i=$((_i + 1)) _r=$((_r + 1))
			done
			_b=$((_b + 1))
		done
		if [ "$_half" = 0 ]; then _rw='randwrite'; else _rw='write'; fi
		printf '[%s-bs3584-qd32]\nstonewall\nbs=3584\nrw=%s\niodepth=32\n' "$_rw" "$_rw"
		printf 'offset=%dm\nsize=%dk\n' "$(((_i * 8) % (_devmib - 7)))" 3584
	} > verify.fio
	_rc=0
	fio --output-format=terse --terse-version=3 verify.fio > fio.out 2> fio.err || _rc=$?
	fio_check "verify matrix on $_dev" fio.out fio.err "$_rc"
}

# now: seconds since boot (/proc/uptime); since T: seconds elapsed since T, one decimal.
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- Fault, teardown, fuzz, security and stress tests -----------------------------------------

# scaled CHECK STRESS: CHECK in `make check`, STRESS when the VM was booted for `make stress`
# (BLKTAP_STRESS=1 on the kernel command line, which init passes on as environment).
scaled() { if [ "${BLKTAP_STRESS:-0}" != 0 ]; then echo "$2"; else echo "$1"; fi; }

# test_seed: the seed of a randomised test: $BLKTAP_SEED if set, else from the clock. Print it.
test_seed() { echo "${BLKTAP_SEED:-$(($(date +%s) % 1000000007 + $$))}"; }

# stat_report GROUP ITERATIONS IOS FAILED: the line scripts/stress.sh sums up per group (I/Os
# issued, and I/Os that failed as the test expected).
stat_report() { log "STAT group=$1 iterations=$2 ios=$3 failed=$4"; }

# tap_counts MINOR: "SENT FAILED" requests of the tap, from its debug attribute ("0 0" if gone).
tap_counts() {
	awk '{ for (i = 1; i <= NF; i++) { if ($i ~ /^sent:/) s = substr($i, 6); if ($i ~ /^failed:/) f = substr($i, 8) } }
		END { print s + 0, f + 0 }' "$(tap_sysfs "$1")/debug" 2>/dev/null || echo "0 0"
}

# tap_mapped MINOR: the tap's ring is mapped (a daemon serves it).
tap_mapped() { grep -q 'mapped:true' "$(tap_sysfs "$1")/debug" 2>/dev/null; }

# disk_present MINOR: the tap's disk exists.
disk_present() { [ -e "/sys/block/$(disk_name "$1")" ]; }

# disk_gone MINOR
disk_gone() { ! disk_present "$1"; }

# proc_alive PID: PID runs (a zombie does not count: a daemonised tapdisk that exits is init's
# child, and init reaps it only when it next waits; a killed test daemon until the test reaps it).
proc_alive() {
	[ -r "/proc/$1/stat" ] || return 1
	! awk '{ sub(/.*\) /, ""); exit !($1 == "Z") }' "/proc/$1/stat" 2>/dev/null
}

# tap_alloc: allocate a tap (blktap-ctl alloc); sets TAP_MINOR. No cleanup is registered.
tap_alloc() {
	TAP_MINOR=$(blktap-ctl alloc) || fail "blktap-ctl alloc failed"
	wait_for 5 test -c "/dev/blktap/blktap$TAP_MINOR" || fail "no ring node for tap $TAP_MINOR"
}

# serve_tap MINOR BACKEND [BLKTAPD ARGS...]: start blktapd in the foreground, in the background
# (so in this test's process group), on tap MINOR; wait until it maps the ring and the disk
# exists. Sets DAEMON_PID. Its log goes to ./blktapd.MINOR.log.
serve_tap() {
	serve_tap_start "$@"
	serve_tap_wait "$1"
}

# serve_tap_start MINOR BACKEND [BLKTAPD ARGS...]: the first half of serve_tap (no waiting).
serve_tap_start() {
	_st_m=$1
	shift
	# Closing 3-8: a daemon that inherited an fd of its own disk could never remove it.
	blktapd --minor "$_st_m" --backend "$@" --foreground --log "$PWD/blktapd.$_st_m.log" \
		</dev/null >/dev/null 2>&1 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- &
	DAEMON_PID=$!
}

# serve_tap_wait MINOR: the second half of serve_tap.
serve_tap_wait() {
	wait_for 20 tap_mapped "$1" || fail "blktapd on tap $1 did not map its ring: $(tail -n 3 "$PWD/blktapd.$1.log" 2>/dev/null)"
	wait_for 20 test -b "/dev/$(disk_name "$1")" || fail "no disk node for tap $1"
}

# kill_daemon PID [SIGNAL]: signal (default KILL) a daemon started by serve_tap and reap it.
kill_daemon() {
	kill "-${2:-KILL}" "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

# kill_daemon_under_fio DAEMON_PID FIO_PID BOUND WHAT: kill -9 a daemon (as kill_daemon) while
# fio (FIO_PID, a background job of this shell) does I/O on its disk, and give fio BOUND + 5 s
# to exit. Fails "WHAT: fio still running ..." (killing fio) if it did not; else reaps fio and
# sets FIO_RC to its exit status and FIO_ELAPSED to the seconds from the kill to its exit.
kill_daemon_under_fio() {
	_kf_t0=$(now)
	kill_daemon "$1"
	while kill -0 "$2" 2>/dev/null; do
		[ "$(awk -v e="$(since "$_kf_t0")" -v b="$3" 'BEGIN { print (e > b + 5) }')" = 0 ] || break
		sleep 0.1
	done
	FIO_ELAPSED=$(since "$_kf_t0")
	if kill -0 "$2" 2>/dev/null; then
		kill -KILL "$2"
		fail "$4: fio still running ${FIO_ELAPSED}s after its daemon was killed"
	fi
	FIO_RC=0
	wait "$2" || FIO_RC=$?
}

# free_tap MINOR: FREE_TAP, retried for up to 5 s while busy (the disk's removal work may still
# be running). 1 if it still fails.
free_tap() { wait_for 5 blktap-ctl free -m "$1" 2>/dev/null; }

# dstate_watch_start [BOUND]: report every task that stays in uninterruptible sleep (D) longer
# than BOUND seconds (default 10) until dstate_watch_check.
dstate_watch_start() {
	_dw_dir=$PWD
	: > "$_dw_dir/dstate.out"
	rm -f "$_dw_dir/dstate.stop"
	blktap-test dstate --bound "${1:-10}" --out "$_dw_dir/dstate.out" --until "$_dw_dir/dstate.stop" \
		>/dev/null 2>&1 &
	_dw_pid=$!
	atexit dstate_watch_stop
}
dstate_watch_stop() {
	[ -n "${_dw_pid:-}" ] || return 0
	touch "$_dw_dir/dstate.stop"
	wait "$_dw_pid" 2>/dev/null
	_dw_pid=
}
# dstate_watch_check: stop the watcher; fail if it saw a task in D state for too long.
dstate_watch_check() {
	dstate_watch_stop
	[ -s "$_dw_dir/dstate.out" ] || return 0
	cat "$_dw_dir/dstate.out"
	fail "a task stayed in D state longer than the bound"
}

# ktap_run NAME CMD...: run a KTAP-printing command (blktap-test), keep its output in NAME.out,
# print its failures; 0 if it passed (exit 0), else fail the test.
ktap_run() {
	_kr_name=$1
	shift
	_kr_rc=0
	"$@" > "$_kr_name.out" 2>&1 || _kr_rc=$?
	grep -E '^(not ok|# )' "$_kr_name.out" | grep -v '^# totals' | head -n 60
	grep -E '^# totals' "$_kr_name.out"
	[ "$_kr_rc" = 0 ] || fail "$_kr_name: $* exited with $_kr_rc"
}

# ktap_io_totals FILE: "IOS FAILED" summed over the "# io-total: ios=N failed=M" lines of FILE.
ktap_io_totals() {
	awk '/^# io-total:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^ios=/) s += substr($i, 5); if ($i ~ /^failed=/) f += substr($i, 8) } }
		END { print s + 0, f + 0 }' "$1"
}
