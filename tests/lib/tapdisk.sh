# SPDX-License-Identifier: GPL-2.0
# Helpers for the tests that drive blktap.ko with the real tapdisk 3.55.5 and tap-ctl (the
# xapi-project/blktap userspace, built by scripts/build-tapdisk.sh and put into the VM by
# scripts/mkinitramfs.sh --tapdisk). Sourced after lib/common.sh.

# shellcheck disable=SC2034 # used by the tests that source this file
TD_NODE_DIR=/dev/xen/blktap-2
TD_MINORS=
TD_SYSLOG=/var/log/messages

# tapdisk_env: skip the test when tapdisk is not in the VM (with the reason the host gave);
# otherwise td_runtime_env.
tapdisk_env() {
	if [ ! -x /usr/libexec/tapdisk ] || ! command -v tap-ctl >/dev/null 2>&1; then
		skip "real tapdisk not in the VM: $(cat /etc/blktap-rs/tapdisk-skip 2>/dev/null ||
			echo 'the VM was built without --tapdisk')"
	fi
	td_runtime_env
}

# td_runtime_env: make what the tapdisks need at run time (/var/run for their control sockets,
# /var/log, syslog on /dev/log), load blktap.ko and register the cleanup of every tap made by
# td_create (once, whichever client's setup calls it first).
td_runtime_env() {
	[ -z "${_td_env_done:-}" ] || return 0
	_td_env_done=1
	mkdir -p /var/run /var/log /run || fail "cannot create /var/run, /var/log"
	if [ ! -S /dev/log ]; then
		# Started once, it outlives the test (it daemonises): later tests reuse it.
		syslogd -O "$TD_SYSLOG" || fail "cannot start syslogd"
		wait_for 5 test -S /dev/log || fail "syslogd made no /dev/log"
	fi
	_td_log_start=$(wc -l < "$TD_SYSLOG" 2>/dev/null || echo 0)
	load_blktap
	atexit td_cleanup
}

# td_ctl MINOR: the tap-ctl that made tap MINOR with td_create_with (tap-ctl, 3.55.5's, if none
# did): the control protocols of the clients differ, so each tap is driven by its own.
td_ctl() { eval "echo \"\${TD_CTL_$1:-tap-ctl}\""; }

# td_log: what tapdisk and tap-ctl logged since tapdisk_env (last 40 lines).
td_log() {
	[ -f "$TD_SYSLOG" ] || return 0
	log "--- syslog since the test started ---"
	tail -n "+$((_td_log_start + 1))" "$TD_SYSLOG" | tail -n 40
}

# td_fail MESSAGE: fail with tapdisk's log printed first.
td_fail() {
	td_log
	fail "$@"
}

# td_run NAME CMD...: run CMD (tap-ctl ...) with stdout and stderr in files NAME.out and
# NAME.err. Never use $(tap-ctl ...): a tapdisk it spawns inherits the pipe, and the command
# substitution waits for it. Returns CMD's exit status.
td_run() {
	_tr_name=$1
	shift
	"$@" < /dev/null > "$_tr_name.out" 2> "$_tr_name.err"
}

# td_create [tap-ctl create ARGS...]: tap-ctl create (allocate, spawn, attach, open). Sets
# TD_MINOR, TD_DEV (the node tap-ctl made, /dev/xen/blktap-2/tapdevN), TD_DISK (tdX) and TD_PID
# (the tapdisk serving it); the tap is destroyed at exit.
td_create() { td_create_with tap-ctl "$@"; }

# td_create_with TAP-CTL [create ARGS...]: td_create with another client's tap-ctl (OpenXT's),
# which then also lists, destroys and cleans up that tap (td_ctl).
td_create_with() {
	_tc_ctl=$1
	shift
	_tc_rc=0
	td_run td-create "$_tc_ctl" create "$@" || _tc_rc=$?
	[ "$_tc_rc" = 0 ] || { cat td-create.err; td_fail "$_tc_ctl create $* failed (rc=$_tc_rc)"; }
	TD_DEV=$(tail -n 1 td-create.out)
	TD_MINOR=${TD_DEV##*tapdev}
	case "$TD_MINOR" in
	'' | *[!0-9]*) td_fail "tap-ctl create $* printed '$TD_DEV', expected $TD_NODE_DIR/tapdev<N>" ;;
	esac
	TD_MINORS="$TD_MINORS $TD_MINOR"
	eval "TD_CTL_$TD_MINOR=\$_tc_ctl"
	TD_DISK=$(disk_name "$TD_MINOR")
	[ -b "$TD_DEV" ] || td_fail "$TD_DEV is not a block device"
	wait_for 5 test -b "/dev/$TD_DISK" || td_fail "no /dev/$TD_DISK for tap $TD_MINOR"
	TD_PID=$(td_pid "$TD_MINOR")
	[ -n "$TD_PID" ] || td_fail "tap-ctl list shows no tapdisk for minor $TD_MINOR"
}

# td_list_field MINOR FIELD: FIELD (pid, state, args) of MINOR's line in "tap-ctl list -m MINOR",
# whose lines read "pid=P minor=M state=0xS args=TYPE:PATH" when stdout is not a terminal (the
# same in OpenXT's tap-ctl).
td_list_field() {
	"$(td_ctl "$1")" list -m "$1" 2>/dev/null < /dev/null | awk -v m="$1" -v f="$2" '
		{ delete kv; for (i = 1; i <= NF; i++) { split($i, p, "="); kv[p[1]] = substr($i, length(p[1]) + 2) } }
		kv["minor"] == m && (f in kv) { print kv[f]; exit }'
}

# td_pid MINOR: the pid of the tapdisk serving MINOR (empty if none).
td_pid() { td_list_field "$1" pid; }

# td_destroy MINOR: tap-ctl destroy (close, detach, free) of the tap and check that it is gone:
# the minor's sysfs directory and its tapdisk. Fails the test if not.
td_destroy() {
	_td_pid=$(td_pid "$1")
	[ -n "$_td_pid" ] || td_fail "no tapdisk serves minor $1"
	_td_rc=0
	td_run "td-destroy-$1" "$(td_ctl "$1")" destroy -p "$_td_pid" -m "$1" || _td_rc=$?
	[ "$_td_rc" = 0 ] || { cat "td-destroy-$1.err"; td_fail "$(td_ctl "$1") destroy -p $_td_pid -m $1 failed (rc=$_td_rc)"; }
	wait_for 10 td_gone "$1" "$_td_pid" || td_fail "tap $1 or its tapdisk $_td_pid still there after destroy"
	TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

# td_gone MINOR [PID]: the tap is freed and PID (its tapdisk) has exited.
td_gone() {
	[ ! -d "$(tap_sysfs "$1")" ] || return 1
	[ -z "${2:-}" ] || ! proc_alive "$2"
}

# td_cleanup: destroy what td_create made and the test did not; a tapdisk that does not answer is
# killed and its tap freed.
td_cleanup() {
	for _m in $TD_MINORS; do
		[ -d "$(tap_sysfs "$_m")" ] || continue
		_p=$(td_pid "$_m")
		if [ -n "$_p" ] && td_run "td-cleanup-$_m" "$(td_ctl "$_m")" destroy -p "$_p" -m "$_m" -t 20; then
			continue
		fi
		[ -z "$_p" ] || kill -KILL "$_p" 2>/dev/null
		free_tap "$_m" || log "cleanup: cannot free tap $_m"
	done
	TD_MINORS=
	return 0
}

# td_verify_under_fio: a tap on a new 64 MiB image disk.img (TD_MINOR, TD_PID, TD_DEV) with fio
# writing and verifying on it in the background (crc32c, O_DIRECT, QD16, 48 MiB of 4k random
# writes; FIO_PID, output in fio.out and fio.err); returns once 300 requests were sent, so that
# fio has most of its work still to do. End it with td_verify_done.
td_verify_under_fio() {
	truncate -s 64M disk.img || fail "cannot create disk.img"
	td_create -a "aio:$PWD/disk.img"
	fio --name=pause --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
		--bs=4k --size=48M --verify=crc32c --do_verify=1 --verify_fatal=1 --randrepeat=1 \
		--output-format=terse --terse-version=3 > fio.out 2> fio.err &
	FIO_PID=$!
	_td_flowing() { [ "$(td_sent)" -gt 300 ]; }
	wait_for 60 _td_flowing || td_fail "fio did not get going on $TD_DEV"
}

# td_sent: requests the driver has sent to the daemon of TD_MINOR so far.
td_sent() { tap_counts "$TD_MINOR" | cut -d' ' -f1; }

# td_pause LABEL: tap-ctl pause of TD_MINOR, which tap-ctl list must then show paused
# (TD_VBD_PAUSED is 0x20 in tapdisk's VBD state bits).
td_pause() {
	td_run "pause$1" tap-ctl pause -p "$TD_PID" -m "$TD_MINOR" || { cat "pause$1.err"; td_fail "$1: tap-ctl pause failed"; }
	_state=$(td_list_field "$TD_MINOR" state)
	[ $((_state & 0x20)) = 32 ] || td_fail "$1: tap-ctl list shows state $_state while paused"
}

# td_unpause LABEL SENT: tap-ctl unpause of TD_MINOR; requests must flow again (the sent count
# passes SENT) within 20 s.
td_unpause() {
	td_run "unpause$1" tap-ctl unpause -p "$TD_PID" -m "$TD_MINOR" || { cat "unpause$1.err"; td_fail "$1: tap-ctl unpause failed"; }
	_state=$(td_list_field "$TD_MINOR" state)
	[ "$_state" = 0 ] || td_fail "$1: state $_state after unpause"
	_since=$2
	_td_grown() { [ "$(td_sent)" -gt "$_since" ]; }
	wait_for 20 _td_grown || td_fail "$1: no request was sent in 20 s after unpause"
	log "$1: unpaused, I/O resumed (sent $(td_sent))"
}

# td_verify_done WHAT: waits for the fio of td_verify_under_fio, which must have verified every
# block with no I/O error, and for the tap to have failed no request.
td_verify_done() {
	_rc=0
	wait "$FIO_PID" || _rc=$?
	fio_check "$1" fio.out fio.err "$_rc"
	# shellcheck disable=SC2046 # "SENT FAILED"
	set -- $(tap_counts "$TD_MINOR")
	[ "$2" = 0 ] || td_fail "$2 requests failed on the tap"
}

# td_stat_secs MINOR PID: "READ WRITTEN" sectors from tap-ctl stats (its "secs": [rd, wr]).
td_stat_secs() {
	td_run td-stats tap-ctl stats -p "$2" -m "$1" || return 1
	sed -n 's/.*"secs": *\[ *\([0-9]*\) *, *\([0-9]*\) *\].*/\1 \2/p' td-stats.out | head -n 1
}

# pattern FILE MIB [SEED]: a file of MIB MiB of pseudo-random data (different for every SEED).
pattern() {
	dd if=/dev/urandom of="$1" bs=1M count="$2" status=none || fail "cannot make $1"
}

# region_equal FILE OFFSET_MIB MIB EXPECTED: MIB MiB of FILE (a file or a block device, read with
# O_DIRECT if a block device) at OFFSET_MIB are the bytes of file EXPECTED.
region_equal() {
	_flag=
	[ ! -b "$1" ] || _flag=iflag=direct
	# shellcheck disable=SC2086 # empty or one word
	dd if="$1" bs=1M skip="$2" count="$3" $_flag status=none 2>region.err | cmp -s - "$4"
}

# write_region DEV OFFSET_MIB FILE: write FILE onto DEV at OFFSET_MIB with O_DIRECT.
write_region() {
	dd if="$3" of="$1" bs=1M seek="$2" oflag=direct conv=notrunc status=none 2>write.err ||
		{ cat write.err; td_fail "writing $3 to $1 at ${2} MiB failed"; }
}

# td_kill_fio_round CREATE BOUND NAME FIO-OPTION...: one round of "kill -9 under fio". CREATE
# (td_create, oxt_create, ...) makes a tap on ./disk.img (at least 16 MiB), fio runs on its
# tapdev at QD32 (randrw, O_DIRECT, the block size options given), and its tapdisk is killed
# once I/O flows. fio must exit with EIO within BOUND s of the kill, the disk must go once fio
# has closed it and the tapdisk must be gone; the tap's tap-ctl then lists the minor unserved
# ("minor=M"), frees it, and CREATE gets the same minor back, whose tapdev reads back a pattern
# written through it and puts it in the image. Needs ./data.bin (4 MiB, see pattern).
td_kill_fio_round() {
	_kr_create=$1 _kr_bound=$2 _kr_name=$3
	shift 3
	"$_kr_create" -a "aio:$PWD/disk.img"
	_kr_m=$TD_MINOR _kr_pid=$TD_PID _kr_ctl=$(td_ctl "$TD_MINOR")
	fio --name="kill-$_kr_name" --filename="$TD_DEV" --direct=1 --ioengine=libaio --iodepth=32 \
		--rw=randrw "$@" --size=16M --time_based --runtime=300 > "fio.$_kr_name.out" 2>&1 &
	_kr_fio=$!
	wait_for 60 _kr_flowing || td_fail "$_kr_name: fio did not get going on $TD_DEV"
	kill_daemon_under_fio "$_kr_pid" "$_kr_fio" "$_kr_bound" "$_kr_name"
	log "$_kr_name: fio exited (rc=$FIO_RC) ${FIO_ELAPSED}s after kill -9 of tapdisk $_kr_pid"
	awk -v e="$FIO_ELAPSED" -v b="$_kr_bound" 'BEGIN { exit !(e <= b) }' ||
		td_fail "$_kr_name: fio took ${FIO_ELAPSED}s to fail, more than ${_kr_bound}s"
	[ "$FIO_RC" != 0 ] || td_fail "$_kr_name: fio succeeded although tapdisk was killed"
	grep -q 'Input/output error' "fio.$_kr_name.out" ||
		{ cat "fio.$_kr_name.out"; td_fail "$_kr_name: fio did not report EIO"; }
	wait_for "$_kr_bound" disk_gone "$_kr_m" || td_fail "$_kr_name: disk still there ${_kr_bound}s after fio closed it"
	wait_for 5 _kr_pid_gone || td_fail "$_kr_name: tapdisk $_kr_pid survived kill -9"
	td_run "list-$_kr_name" "$_kr_ctl" list -m "$_kr_m" || { cat "list-$_kr_name.err"; td_fail "$_kr_name: tap-ctl list failed"; }
	[ "$(cat "list-$_kr_name.out")" = "minor=$_kr_m" ] ||
		{ cat "list-$_kr_name.out"; td_fail "$_kr_name: tap-ctl list does not show minor $_kr_m unserved"; }
	td_run "free-$_kr_name" "$_kr_ctl" free -m "$_kr_m" ||
		{ cat "free-$_kr_name.err"; td_fail "$_kr_name: tap-ctl free -m $_kr_m failed after tapdisk died"; }
	wait_for 5 test ! -d "$(tap_sysfs "$_kr_m")" || td_fail "$_kr_name: tap $_kr_m still in sysfs after free"
	TD_MINORS=$(echo "$TD_MINORS" | tr ' ' '\n' | grep -vx "$_kr_m" | tr '\n' ' ')
	"$_kr_create" -a "aio:$PWD/disk.img"
	[ "$TD_MINOR" = "$_kr_m" ] || td_fail "$_kr_name: the freed minor $_kr_m was not reused (got $TD_MINOR)"
	write_region "$TD_DEV" 8 data.bin
	drop_caches
	region_equal "$TD_DEV" 8 4 data.bin || td_fail "$_kr_name: the re-served tap does not read back its write"
	region_equal disk.img 8 4 data.bin || td_fail "$_kr_name: the re-served tap's write is not in the image"
	td_destroy "$TD_MINOR"
	log "$_kr_name: minor $_kr_m freed and served again, data bit-exact"
}
_kr_flowing() { [ "$(tap_counts "$_kr_m" | cut -d' ' -f1)" -gt 300 ]; }
_kr_pid_gone() { ! proc_alive "$_kr_pid"; }

# td_raw_roundtrip CREATE WHAT: a 32 MiB raw image (./raw.img) served by a tap that CREATE
# (td_create, oxt_create, ...) makes over aio:. The tapdev has the image's size; 4 MiB of data
# put into the image at 4 MiB reads back bit-exact through the tapdev (O_DIRECT); 4 MiB written
# through the tapdev with O_DIRECT at 16 MiB and 4 MiB buffered at 24 MiB (written back by
# sync) are found bit-exact in the image after drop_caches and after destroy.
td_raw_roundtrip() {
	pattern rr-a.bin 4
	pattern rr-b.bin 4
	pattern rr-c.bin 4
	truncate -s 32M raw.img || fail "cannot create raw.img"
	dd if=rr-a.bin of=raw.img bs=1M seek=4 conv=notrunc status=none || fail "cannot fill raw.img"
	"$1" -a "aio:$PWD/raw.img"
	log "raw: tap $TD_MINOR ($TD_DEV, $TD_DISK) served by $2 $TD_PID"
	_rr_size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
	[ "$_rr_size" = $((32 << 20)) ] || td_fail "raw: $TD_DEV has $_rr_size bytes, the image 32 MiB"
	region_equal "$TD_DEV" 4 4 rr-a.bin || td_fail "raw: the tapdev does not read back what the image holds at 4 MiB"
	write_region "$TD_DEV" 16 rr-b.bin
	dd if=rr-c.bin of="$TD_DEV" bs=1M seek=24 conv=notrunc status=none || td_fail "raw: buffered write failed"
	drop_caches
	region_equal raw.img 16 4 rr-b.bin || td_fail "raw: the O_DIRECT write at 16 MiB is not in the image"
	region_equal raw.img 24 4 rr-c.bin || td_fail "raw: the buffered write at 24 MiB is not in the image"
	region_equal raw.img 4 4 rr-a.bin || td_fail "raw: the data at 4 MiB changed"
	region_equal "$TD_DEV" 16 4 rr-b.bin || td_fail "raw: the tapdev does not read back its own write"
	td_destroy "$TD_MINOR"
	region_equal raw.img 16 4 rr-b.bin || fail "raw: the image lost data at destroy"
	log "raw: image -> tapdev and tapdev -> image bit-exact"
}

# td_vhd_roundtrip CREATE VHD-UTIL WHAT: a new 32 MiB VHD (./disk.vhd, made by VHD-UTIL) served by
# a tap that CREATE makes over vhd:. The tapdev has the image's size and reads as zeros; 4 MiB
# written at 8 MiB (./vhd-mid.bin) and 2 MiB in the image's last block (./vhd-end.bin) read
# back through it after drop_caches; after destroy, VHD-UTIL check finds the image valid, and a
# new tap made by CREATE, served by a new tapdisk, reads both back and zeros where nothing was
# written. Sets VHD_OLD_PID, the first tapdisk.
td_vhd_roundtrip() {
	pattern vhd-mid.bin 4
	pattern vhd-end.bin 2
	dd if=/dev/zero of=vhd-zero.bin bs=1M count=4 status=none
	"$2" create -n "$PWD/disk.vhd" -s 32 > vhd.log 2>&1 || { cat vhd.log; fail "vhd-util create failed"; }
	"$1" -a "vhd:$PWD/disk.vhd"
	log "vhd: tap $TD_MINOR ($TD_DEV) served by $3 $TD_PID"
	_vr_size=$(blockdev --getsize64 "$TD_DEV") || td_fail "blockdev --getsize64 $TD_DEV failed"
	[ "$_vr_size" = $((32 << 20)) ] || td_fail "vhd: $TD_DEV has $_vr_size bytes, the image 32 MiB"
	region_equal "$TD_DEV" 8 4 vhd-zero.bin || td_fail "vhd: a new image does not read as zeros"
	write_region "$TD_DEV" 8 vhd-mid.bin
	write_region "$TD_DEV" 30 vhd-end.bin
	drop_caches
	region_equal "$TD_DEV" 30 2 vhd-end.bin || td_fail "vhd: the last 2 MiB do not read back"
	region_equal "$TD_DEV" 8 4 vhd-mid.bin || td_fail "vhd: the tapdev does not read back its write at 8 MiB"
	VHD_OLD_PID=$TD_PID
	td_destroy "$TD_MINOR"
	"$2" check -n "$PWD/disk.vhd" > check.log 2>&1 || { cat check.log; fail "vhd: vhd-util check rejects the image"; }
	"$1" -a "vhd:$PWD/disk.vhd"
	[ "$TD_PID" != "$VHD_OLD_PID" ] || td_fail "vhd: the new tap is served by the old $3 $VHD_OLD_PID"
	region_equal "$TD_DEV" 8 4 vhd-mid.bin || td_fail "vhd: a new $3 does not read back the data at 8 MiB"
	region_equal "$TD_DEV" 30 2 vhd-end.bin || td_fail "vhd: a new $3 does not read back the last 2 MiB"
	region_equal "$TD_DEV" 16 4 vhd-zero.bin || td_fail "vhd: an unwritten region does not read as zeros"
	td_destroy "$TD_MINOR"
	log "vhd: tapdev -> image -> new $3 bit-exact; vhd-util check clean"
}
