#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The sysfs and naming ABI (blktap-abi.md sections 1, 4.2, 9):
#  - /proc/devices: char "blktap2", block "tapdev"; ring node /dev/blktap/blktap<N> (char, that
#    major, minor N); disk /dev/td<letters> of the tapdev major, minor N (tap 0: tda);
#  - /sys/class/blktap2/{verbosity,devices} and blktap!blktap<N>/{name,debug,task,pool}: modes;
#    verbosity 1 by default, takes an integer, rejects "x" (EINVAL); devices lists "<minor>
#    <name>" only for taps that have a disk; name shows the minor while unset, stores writes
#    as given but for one trailing newline (echo's), refuses control characters (a newline
#    inside, tab, CR, ESC, NUL: EINVAL) that would forge devices lines, 255 bytes fit, 256
#    are ENAMETOOLONG; task is empty while the ring is closed, the
#    daemon's pid while it serves the tap and empty again after it exits; pool is "default",
#    can be changed while the tap has no disk, EBUSY while it has one; debug names the tap;
#  - each tap also appears as blktap<N> (V-OXT's spelling, which OpenXT's tap-ctl parses): the
#    same attributes and values, no dev file (no second node); both go with FREE_TAP;
#  - queue limits of the disk: 11 segments of at most 4096 bytes (44 KiB requests), logical and
#    physical block size as created (512, and 4096 with --sector-size 4096), no discard, write
#    cache "write through", capacity in 512-byte sectors; BLKDISCARD is EOPNOTSUPP.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd od blockdev blkdiscard
unload_blktap # fresh module: default verbosity, first tap is minor 0
load_blktap
atexit "echo 1 2>/dev/null > $BLKTAP_CLASS/verbosity || :"

# expect_eq WHAT ACTUAL EXPECTED: a mismatch is reported and fails the test at the end, so that
# one wrong attribute does not hide the others.
errors=0
expect_eq() {
	[ "$2" = "$3" ] && return 0
	echo "FAIL: $1 is '$2', expected '$3'"
	kmsg "FAIL: $1 is '$2', expected '$3'"
	errors=$((errors + 1))
}
# expect_mode FILE MODE (octal, as stat %a prints it)
expect_mode() { expect_eq "mode of $1" "$(stat -c %a "$1")" "$2"; }
# expect_write_err FILE DATA ERRTEXT: the write must fail with that error
expect_write_err() {
	if write_attr "$1" "$2"; then fail "writing '$2' to $1 succeeded, expected '$3'"; fi
	expect_eq "the error of writing '$2' to $1" "$WRITE_ERR" "$3"
}
# hex FILE: its bytes as hex, space separated
hex() { od -An -tx1 -v "$1" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }

# --- /proc/devices --------------------------------------------------------------------------
chr=$(awk '/^Character devices:/ { s = "c" } /^Block devices:/ { s = "b" } s == "c" && $2 == "blktap2" { print $1 }' /proc/devices)
blk=$(awk '/^Character devices:/ { s = "c" } /^Block devices:/ { s = "b" } s == "b" && $2 == "tapdev" { print $1 }' /proc/devices)
[ -n "$chr" ] || fail "no character device 'blktap2' in /proc/devices"
[ -n "$blk" ] || fail "no block device 'tapdev' in /proc/devices"
log "/proc/devices: char blktap2 = $chr, block tapdev = $blk"

# --- class attributes -----------------------------------------------------------------------
expect_mode "$BLKTAP_CLASS/verbosity" 644
expect_mode "$BLKTAP_CLASS/devices" 444
expect_eq "verbosity of a fresh module" "$(cat "$BLKTAP_CLASS/verbosity")" 1
write_attr "$BLKTAP_CLASS/verbosity" 5 || fail "writing 5 to verbosity failed: $WRITE_ERR"
expect_eq "verbosity after writing 5" "$(cat "$BLKTAP_CLASS/verbosity")" 5
expect_write_err "$BLKTAP_CLASS/verbosity" x "Invalid argument"
expect_eq "verbosity after the rejected 'x'" "$(cat "$BLKTAP_CLASS/verbosity")" 5
echo 1 > "$BLKTAP_CLASS/verbosity" || fail "echo 1 > verbosity (with a newline) failed"
expect_eq "verbosity after 'echo 1'" "$(cat "$BLKTAP_CLASS/verbosity")" 1
expect_eq "devices with no tap" "$(cat "$BLKTAP_CLASS/devices")" ""

# --- two allocated taps, no daemon yet --------------------------------------------------------
a=$(blktap-ctl alloc) || fail "blktap-ctl alloc failed"
atexit "tap_destroy $a"
b=$(blktap-ctl alloc) || fail "blktap-ctl alloc (second tap) failed"
atexit "tap_destroy $b"
expect_eq "minor of the first tap" "$a" 0
expect_eq "minor of the second tap" "$b" 1
da=$(tap_sysfs "$a")
db=$(tap_sysfs "$b")
for t in "$da" "$db"; do
	[ -d "$t" ] || fail "$t does not exist after blktap-ctl alloc"
	expect_mode "$t/name" 644
	expect_mode "$t/debug" 444
	expect_mode "$t/task" 444
	expect_mode "$t/pool" 600
done
wait_for 5 test -e "/dev/blktap/blktap$a" || fail "/dev/blktap/blktap$a (devtmpfs) did not appear"
oa=$BLKTAP_CLASS/blktap$a
[ -d "$oa" ] || fail "$oa (the V-OXT name of tap $a) does not exist after blktap-ctl alloc"
[ -e "$da/dev" ] || fail "$da has no dev file"
[ ! -e "$oa/dev" ] || fail "$oa has a dev file ($(cat "$oa/dev")): it must carry no device number"
[ ! -e "/dev/blktap$a" ] || fail "/dev/blktap$a exists: the V-OXT name must not make a node"
expect_eq "subsystem of $oa" "$(basename "$(readlink "$oa/subsystem")")" blktap2
expect_mode "$oa/name" 644
expect_mode "$oa/pool" 600
expect_chrdev "/dev/blktap/blktap$a" "$chr" "$a"

expect_eq "name of tap $a while unset" "$(cat "$da/name")" "$a"
expect_eq "name of tap $b while unset" "$(cat "$db/name")" "$b"
write_attr "$oa/name" "through-oxt" || fail "writing name through $oa failed: $WRITE_ERR"
expect_eq "name of tap $a written through its V-OXT name" "$(cat "$da/name")" through-oxt
echo > "$da/name" || fail "clearing the name of tap $a (writing a newline) failed"
expect_eq "name of tap $a (V-OXT name) after clearing it" "$(cat "$oa/name")" "$a"
expect_eq "task of tap $a before any daemon" "$(cat "$da/task")" ""
expect_eq "pool of tap $a" "$(cat "$da/pool")" default
expect_eq "devices with two taps without disk" "$(cat "$BLKTAP_CLASS/devices")" ""
write_attr "$db/pool" testpool || fail "writing a pool name to tap $b (no disk) failed: $WRITE_ERR"
expect_eq "pool of tap $b after writing 'testpool'" "$(cat "$db/pool")" testpool
expect_eq "pool of tap $a after changing tap $b's" "$(cat "$da/pool")" default
printf 'p\351' > "$db/pool" || fail "writing a pool name with byte 0xe9 to tap $b failed"
expect_eq "bytes of $db/pool after writing 'p\\351'" "$(hex "$db/pool")" "70 e9 0a"

# --- a daemon serves tap a ---------------------------------------------------------------------
blktapd --minor "$a" --backend mem:8M --foreground --log "$PWD/blktapd.log" &
pid=$!
atexit "kill $pid 2>/dev/null || :"
wait_for 30 test -e /sys/block/tda || { cat blktapd.log; fail "no disk /sys/block/tda for tap 0 after starting blktapd"; }
wait_for 5 test -b /dev/tda || fail "/dev/tda (devtmpfs) did not appear"
nums=$(dev_numbers /dev/tda)
expect_eq "major:minor of /dev/tda" "${nums% *}:${nums#* }" "$blk:$a"
expect_eq "task of tap $a while served" "$(cat "$da/task")" "$pid"
expect_eq "task of tap $b (never opened)" "$(cat "$db/task")" ""
expect_eq "devices while tap $a has a disk" "$(cat "$BLKTAP_CLASS/devices")" "$a "
first=$(head -n1 "$da/debug")
case "$first" in
"tap $chr:$a "*) ;;
*) fail "first line of $da/debug is '$first', expected 'tap $chr:$a ...'" ;;
esac

# name: stored as written, but for echo's newline
write_attr "$da/name" abc || fail "writing 'abc' to $da/name failed: $WRITE_ERR"
expect_eq "bytes of $da/name after writing 'abc'" "$(hex "$da/name")" "61 62 63 0a"
expect_eq "devices after naming tap $a" "$(cat "$BLKTAP_CLASS/devices")" "$a abc"
printf 'abc\n' > "$da/name" || fail "writing 'abc\\n' to $da/name failed"
expect_eq "bytes of $da/name after writing 'abc\\n' (echo's newline dropped)" "$(hex "$da/name")" "61 62 63 0a"
# Control characters would forge "minor name" lines in devices: EINVAL, the name unchanged.
for forged in '1 x\n2 forged' 'x\n\n' 'tab\there' 'cr\r' 'esc\033[2J'; do
	if out=$(printf "$forged" | dd of="$da/name" conv=notrunc status=none 2>&1); then
		fail "writing the name '$forged' (a control character) succeeded"
	fi
	expect_eq "the error of writing '$forged' to $da/name" "${out##*: }" "Invalid argument"
done
expect_eq "devices after the refused names" "$(cat "$BLKTAP_CLASS/devices")" "$a abc"
printf 'n\351 x' > "$da/name" || fail "writing a name with byte 0xe9 and a space failed"
expect_eq "bytes of $da/name after writing 'n\\351 x'" "$(hex "$da/name")" "6e e9 20 78 0a"
cat "$BLKTAP_CLASS/devices" > devices.out
printf '%s ' "$a" > prefix.out
expect_eq "bytes of $BLKTAP_CLASS/devices with that name" "$(hex devices.out)" "$(hex prefix.out) 6e e9 20 78 0a"
long=$(printf '%0255d' 0 | tr 0 N)
write_attr "$da/name" "$long" || fail "writing a 255-byte name failed: $WRITE_ERR"
expect_eq "length of $da/name after writing 255 bytes" "$(wc -c < "$da/name")" 256
expect_write_err "$da/name" "${long}N" "File name too long"
expect_eq "length of $da/name after the rejected 256-byte name" "$(wc -c < "$da/name")" 256
if out=$(printf 'a\000b' | dd of="$da/name" conv=notrunc status=none 2>&1); then
	fail "writing a name with an embedded NUL succeeded"
fi
expect_eq "the error of writing 'a\\0b' to $da/name" "${out##*: }" "Invalid argument"
write_attr "$da/name" vm-disk-1 || fail "writing 'vm-disk-1' failed: $WRITE_ERR"
expect_eq "devices after renaming tap $a" "$(cat "$BLKTAP_CLASS/devices")" "$a vm-disk-1"

# pool: fixed while the disk exists
expect_write_err "$da/pool" other "Device or resource busy"
expect_eq "pool of tap $a after the refused change" "$(cat "$da/pool")" default

# queue limits
q=/sys/block/tda/queue
expect_eq "$q/max_segments" "$(cat $q/max_segments)" 11
expect_eq "$q/max_segment_size" "$(cat $q/max_segment_size)" 4096
expect_eq "$q/max_hw_sectors_kb" "$(cat $q/max_hw_sectors_kb)" 44
expect_eq "$q/logical_block_size" "$(cat $q/logical_block_size)" 512
expect_eq "$q/physical_block_size" "$(cat $q/physical_block_size)" 512
expect_eq "$q/discard_max_bytes" "$(cat $q/discard_max_bytes)" 0
expect_eq "$q/write_cache" "$(cat $q/write_cache)" "write through"
expect_eq "/sys/block/tda/size (8 MiB)" "$(cat /sys/block/tda/size)" 16384
expect_eq "/sys/block/tda/ro" "$(cat /sys/block/tda/ro)" 0
out=$(blkdiscard /dev/tda 2>&1) && fail "blkdiscard /dev/tda succeeded on a disk without discard support"
case "$out" in
*"Operation not supported"*) ;;
*) expect_eq "the error of blkdiscard /dev/tda" "$out" "... Operation not supported" ;;
esac

# --- the daemon exits ------------------------------------------------------------------------
kill -TERM "$pid" || fail "cannot signal blktapd ($pid)"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 0 ] || { cat blktapd.log; fail "blktapd exited with $rc after SIGTERM"; }
expect_eq "task of tap $a after its daemon exited" "$(cat "$da/task")" ""
[ ! -e /sys/block/tda ] || fail "/sys/block/tda still exists after the daemon removed the disk and exited"
expect_eq "devices after the disk was removed" "$(cat "$BLKTAP_CLASS/devices")" ""
expect_eq "name of tap $a after its daemon exited" "$(cat "$da/name")" vm-disk-1
write_attr "$da/pool" other || fail "changing the pool of tap $a (disk gone) failed: $WRITE_ERR"
expect_eq "pool of tap $a after the change" "$(cat "$da/pool")" other
blktap-ctl free -m "$a" || fail "blktap-ctl free -m $a failed"
blktap-ctl free -m "$b" || fail "blktap-ctl free -m $b failed"
[ ! -e "$da" ] || fail "$da still exists after FREE_TAP"
[ ! -e "$db" ] || fail "$db still exists after FREE_TAP"
[ ! -e "$oa" ] || fail "$oa still exists after FREE_TAP"
[ ! -e "$BLKTAP_CLASS/blktap$b" ] || fail "$BLKTAP_CLASS/blktap$b still exists after FREE_TAP"

# --- 4096-byte sectors -------------------------------------------------------------------------
tap_create --backend mem:8M --sector-size 4096
q=/sys/block/$TAP_DISK/queue
expect_eq "disk of the first tap after all were freed" "$TAP_DISK" tda
expect_eq "$q/logical_block_size (--sector-size 4096)" "$(cat "$q/logical_block_size")" 4096
expect_eq "$q/physical_block_size (--sector-size 4096)" "$(cat "$q/physical_block_size")" 4096
expect_eq "blockdev --getss" "$(blockdev --getss "$TAP_DEV")" 4096
expect_eq "/sys/block/$TAP_DISK/size (8 MiB in 512-byte sectors)" "$(cat "/sys/block/$TAP_DISK/size")" 16384
expect_eq "blockdev --getsize64" "$(blockdev --getsize64 "$TAP_DEV")" 8388608
expect_eq "$q/max_segments" "$(cat "$q/max_segments")" 11
# 4 KiB I/O works (busybox dd cannot show that 512-byte O_DIRECT is refused: it retries
# without O_DIRECT on EINVAL)
dd if=/dev/urandom of=pat bs=8192 count=1 status=none || fail "cannot make a pattern"
dd if=pat of="$TAP_DEV" bs=8192 seek=100 oflag=direct conv=notrunc status=none || fail "8 KiB O_DIRECT write failed"
dd if="$TAP_DEV" of=back bs=8192 skip=100 count=1 iflag=direct status=none || fail "8 KiB O_DIRECT read failed"
cmp -s pat back || fail "8 KiB written to the 4096-byte-sector disk read back differently"

[ "$errors" = 0 ] || fail "$errors check(s) failed (see above)"
