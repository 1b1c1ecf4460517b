#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# tap-ctl list, stats and read-only (-R) with the real tapdisk 3.55.5.
# list: one line per tap with its tapdisk's pid, its minor, state 0 and the image as given;
# "list -m" selects by minor. stats: tapdisk's JSON names the image and its sector counters
# grow by exactly what was read and written through the tapdev (O_DIRECT).
# -R: the tapdev is read-only (/sys/block/tdX/ro = 1, blockdev --getro = 1), writes fail with
# EPERM (buffered and O_DIRECT), reads return the image; the image is unchanged afterwards.
# timeout: 150
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd cmp blockdev sha256sum
tapdisk_env

truncate -s 32M rw.img || fail "cannot create rw.img"
pattern ro.img 16
sum=$(sha256sum < ro.img)

td_create -a "aio:$PWD/rw.img"
rw_minor=$TD_MINOR rw_pid=$TD_PID rw_dev=$TD_DEV
td_create -R -a "aio:$PWD/ro.img"
ro_minor=$TD_MINOR ro_pid=$TD_PID ro_dev=$TD_DEV ro_disk=$TD_DISK
[ "$rw_minor" != "$ro_minor" ] || td_fail "two taps got the same minor $rw_minor"
[ "$rw_pid" != "$ro_pid" ] || td_fail "two taps are served by the same tapdisk $rw_pid"

# --- list -----------------------------------------------------------------------------------
td_run list tap-ctl list || { cat list.err; td_fail "tap-ctl list failed"; }
cat list.out
for t in "$rw_minor $rw_pid aio:$PWD/rw.img" "$ro_minor $ro_pid aio:$PWD/ro.img"; do
	# shellcheck disable=SC2086 # minor, pid, image
	set -- $t
	grep -qx "pid=$2 minor=$1 state=0 args=$3" list.out ||
		td_fail "tap-ctl list has no line 'pid=$2 minor=$1 state=0 args=$3'"
done
[ "$(wc -l < list.out)" = 2 ] || td_fail "tap-ctl list shows $(wc -l < list.out) lines for 2 taps"
[ "$(td_list_field "$ro_minor" args)" = "aio:$PWD/ro.img" ] || td_fail "tap-ctl list -m $ro_minor does not show its image"

# --- stats ----------------------------------------------------------------------------------
before=$(td_stat_secs "$rw_minor" "$rw_pid") || { cat td-stats.err; td_fail "tap-ctl stats failed"; }
cat td-stats.out
grep -q "\"name\": *\"aio:$PWD/rw.img\"" td-stats.out || grep -q "$PWD/rw.img" td-stats.out ||
	td_fail "tap-ctl stats does not name the image"
dd if=/dev/urandom of="$rw_dev" bs=64k count=48 oflag=direct status=none || td_fail "write to $rw_dev failed"
dd if="$rw_dev" of=/dev/null bs=64k count=16 iflag=direct status=none || td_fail "read of $rw_dev failed"
after=$(td_stat_secs "$rw_minor" "$rw_pid") || td_fail "tap-ctl stats failed"
# shellcheck disable=SC2086 # "READ WRITTEN"
set -- $before $after
log "stats: sectors read $1 -> $3, written $2 -> $4"
[ $(($3 - $1)) = 2048 ] || td_fail "tapdisk counted $(($3 - $1)) sectors read, 1 MiB (2048) was read"
[ $(($4 - $2)) = 6144 ] || td_fail "tapdisk counted $(($4 - $2)) sectors written, 3 MiB (6144) was written"

# --- read-only ------------------------------------------------------------------------------
[ "$(cat "/sys/block/$ro_disk/ro")" = 1 ] || td_fail "/sys/block/$ro_disk/ro is not 1 for tap-ctl create -R"
[ "$(blockdev --getro "$ro_dev")" = 1 ] || td_fail "blockdev --getro $ro_dev is not 1"
for how in "buffered" "O_DIRECT oflag=direct" "O_DIRECT at 8 MiB oflag=direct seek=2048"; do
	what=${how%% oflag*}
	args=${how#"$what"}
	# shellcheck disable=SC2086 # dd operands
	if out=$(dd if=/dev/zero of="$ro_dev" bs=4096 count=1 conv=notrunc status=none $args 2>&1); then
		td_fail "$what write to the read-only tapdev succeeded"
	fi
	case "$out" in
	*"Operation not permitted"*) log "-R: $what write refused (EPERM)" ;;
	*) td_fail "-R: $what write failed with '$out', expected EPERM" ;;
	esac
done
drop_caches
region_equal "$ro_dev" 0 16 ro.img || td_fail "-R: O_DIRECT read of the tapdev differs from the image"
cmp -s "$ro_dev" ro.img || td_fail "-R: buffered read of the tapdev differs from the image"
td_destroy "$ro_minor"
td_destroy "$rw_minor"
[ "$(sha256sum < ro.img)" = "$sum" ] || fail "-R: the image of the read-only tap changed"
td_run list2 tap-ctl list || td_fail "tap-ctl list failed after destroy"
[ ! -s list2.out ] || { cat list2.out; fail "tap-ctl list still shows taps after destroy"; }
