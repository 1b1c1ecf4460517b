# SPDX-License-Identifier: GPL-2.0
# Helpers for the tests that drive blktap.ko with OpenXT's clients (the openxt group):
#   - OpenXT's legacy userspace (OpenXT/blktap a0f94d7: tapdisk2, tap-ctl, vhd-util), built by
#     scripts/build-openxt.sh and put in /opt/openxt/bin by scripts/mkinitramfs.sh --openxt;
#   - tapdisk 3.55.5 built with OpenXT's control name "blktap-control" (scripts/build-tapdisk.sh
#     --openxt-name), in /usr/libexec/blktap-oxt by mkinitramfs.sh --tapdisk-oxt.
# Sourced after lib/common.sh; it sources lib/tapdisk.sh, whose td_* helpers serve both: a tap is
# made with td_create_with (oxt_create here), and then listed, destroyed and cleaned up by the
# tap-ctl that made it.

. "$(dirname "$0")/lib/tapdisk.sh"

# shellcheck disable=SC2034 # used by the tests that source this file
{
OXT_BIN=/opt/openxt/bin
OXT_TAPCTL=$OXT_BIN/tap-ctl
OXT_VHDUTIL=$OXT_BIN/vhd-util
OXT3_DIR=/usr/libexec/blktap-oxt
OXT3_TAPCTL=$OXT3_DIR/tap-ctl
}

# require_openxt: skip the test when OpenXT's legacy userspace is not in the VM (with the reason
# the host gave); otherwise make the run-time environment of lib/tapdisk.sh (syslog, /var/run,
# blktap.ko, cleanup at exit). Its tap-ctl starts the tapdisk2 named by $TAPDISK2.
require_openxt() {
	if [ ! -x "$OXT_TAPCTL" ] || [ ! -x "$OXT_BIN/tapdisk2" ] || [ ! -x "$OXT_VHDUTIL" ]; then
		skip "OpenXT's legacy userspace not in the VM: $(cat /etc/blktap-rs/openxt-skip 2>/dev/null ||
			echo 'the VM was built without --openxt')"
	fi
	export TAPDISK2="$OXT_BIN/tapdisk2"
	td_runtime_env
}

# require_tapdisk_oxt: the same for tapdisk 3.55.5 with OpenXT's control name.
require_tapdisk_oxt() {
	if [ ! -x "$OXT3_TAPCTL" ] || [ ! -x "$OXT3_DIR/tapdisk" ]; then
		skip "tapdisk 3.55.5 with OpenXT's control name not in the VM: $(cat /etc/blktap-rs/tapdisk-oxt-skip 2>/dev/null ||
			echo 'the VM was built without --tapdisk-oxt')"
	fi
	td_runtime_env
}

# oxt_create [create ARGS...]: td_create with OpenXT's legacy tap-ctl (allocate, spawn tapdisk2,
# attach, open). Sets TD_MINOR, TD_DEV, TD_DISK and TD_PID; the tap is destroyed at exit.
oxt_create() { td_create_with "$OXT_TAPCTL" "$@"; }

# oxt_destroy MINOR: td_destroy (OpenXT's tap-ctl destroy -p PID -m MINOR: close with ioctl 207,
# detach, free with ioctl 201), checking that the tap and its tapdisk2 are gone.
oxt_destroy() { td_destroy "$1"; }

# oxt3_create [create ARGS...]: td_create with the tap-ctl of tapdisk 3.55.5 with OpenXT's
# control name.
oxt3_create() { td_create_with "$OXT3_TAPCTL" "$@"; }

# oxt_pid_of_ring MINOR: the pid of the process that holds MINOR's ring node open (empty if none),
# found without tap-ctl.
oxt_pid_of_ring() {
	for _f in /proc/[0-9]*/fd/*; do
		[ "$(readlink "$_f" 2>/dev/null)" = "$TD_NODE_DIR/blktap$1" ] || continue
		_p=${_f#/proc/}
		echo "${_p%%/*}"
		return 0
	done
}

# fio_verify_job NAME DEV MIB [FIO OPTIONS...]: write MIB MiB of DEV and verify it (crc32c,
# libaio, O_DIRECT, random 4k-64k blocks, QD8); fio_check judges the result.
fio_verify_job() {
	_fv_name=$1 _fv_dev=$2 _fv_mib=$3
	shift 3
	_fv_rc=0
	fio --name="$_fv_name" --filename="$_fv_dev" --ioengine=libaio --direct=1 --rw=randwrite \
		--bsrange=4k-64k --iodepth=8 --size="${_fv_mib}m" --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --randrepeat=0 --output-format=terse --terse-version=3 "$@" \
		> "$_fv_name.out" 2> "$_fv_name.err" || _fv_rc=$?
	fio_check "$_fv_name" "$_fv_name.out" "$_fv_name.err" "$_fv_rc"
}
