#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# blktapd's two I/O paths for the file backend (issue 22): the same checks with --io sync
# (preadv/pwritev) and --io uring (io_uring: one io_uring_enter per ring batch, the ring's data
# pages as a registered buffer). For each path, on a disk with all features negotiated: the log
# says which path serves it; fio write-then-verify (crc32c, libaio, O_DIRECT) at 4 KiB, 44 KiB
# (one full ring request), 128 KiB and 1 MiB, random writes at iodepth 16 with an fsync (FLUSH)
# every 8 writes, plus O_SYNC (FUA) sequential writes at 128 KiB; blkdiscard and BLKZEROOUT read
# back as zeroes with their neighbours intact; the image equals the disk; and at exit the io_uring
# daemon reports exactly one io_uring_enter per batch and nothing served again synchronously.
# The image is on tmpfs, where --io auto would choose sync (test_data_06): --io uring forces
# io_uring. The existing file-backend tests (data_02, feature_02, feature_03) run on either path
# with BLKTAPD_IO=sync or BLKTAPD_IO=uring in the environment (scripts/vm-run.sh --append
# blktap.io=uring).
# timeout: 300
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test blkdiscard
load_blktap

img=/tmp/$TEST_NAME.img
MiB=1048576
atexit "rm -f $img"
nonzero() {
	dd if="$1" bs=$MiB skip="$2" count="$3" iflag=direct status=none | tr -d '\000' | wc -c
}

for io in sync uring; do
	t0=$(now)
	rm -f "$img"
	truncate -s 64M "$img" || fail "cannot create $img"
	dlog=$PWD/blktapd.$io.log
	rm -f "$dlog"
	tap_create --backend "file:$img" --features all --io "$io" --log "$dlog"
	case $io in
	sync) grep -q 'I/O path: synchronous preadv/pwritev (--io sync)' "$dlog" ||
		{ cat "$dlog"; fail "--io sync: the log does not name the synchronous path"; } ;;
	uring) grep -q 'I/O path: io_uring' "$dlog" ||
		{ cat "$dlog"; fail "--io uring: the log does not name the io_uring path"; }
		grep -q 'data pages are registered as a fixed buffer' "$dlog" ||
			{ cat "$dlog"; fail "--io uring: the ring's data pages were not registered"; } ;;
	esac
	log "$io: $(grep -m1 'I/O path' "$dlog" | sed 's/^blktapd\[[0-9]*\]: //')"

	{
		printf '[global]\nfilename=%s\nioengine=libaio\ndirect=1\nverify=crc32c\n' "$TAP_DEV"
		printf 'verify_fatal=1\nrandrepeat=1\n'
		off=0
		for bs in 4k 44k 128k 1M; do
			case $bs in 4k) size=1m ;; 44k) size=2m ;; *) size=4m ;; esac
			printf '[randwrite-%s-qd16-fsync8]\nstonewall\nbs=%s\nrw=randwrite\n' "$bs" "$bs"
			printf 'iodepth=16\nfsync=8\noffset=%dm\nsize=%s\n' "$off" "$size"
			off=$((off + 8))
		done
		printf '[write-128k-osync]\nstonewall\nbs=128k\nrw=write\niodepth=4\nsync=1\n'
		printf 'offset=%dm\nsize=2m\n' "$off"
	} > paths.fio
	fio_run_check "$io paths" paths.fio

	# Discard 1 MiB and zero 1 MiB of the data written above (44k job: 8-10 MiB, 128k: 16-20).
	blkdiscard -o $((8 * MiB)) -l "$MiB" "$TAP_DEV" || fail "$io: blkdiscard failed"
	[ "$(nonzero "$TAP_DEV" 8 1)" = 0 ] || fail "$io: the discarded range does not read zeroes"
	blktap-test zeroout "$TAP_DEV" $((16 * MiB)) "$MiB" || fail "$io: BLKZEROOUT failed"
	[ "$(nonzero "$TAP_DEV" 16 1)" = 0 ] || fail "$io: the zeroed range does not read zeroes"
	[ "$(nonzero "$TAP_DEV" 9 1)" -gt 0 ] || fail "$io: the data after the discard is gone"
	[ "$(nonzero "$TAP_DEV" 17 1)" -gt 0 ] || fail "$io: the data after the zeroed range is gone"
	drop_caches
	cmp "$TAP_DEV" "$img" || fail "$io: $TAP_DEV and $img differ"
	tap_destroy "$TAP_MINOR" || fail "$io: destroy failed"
	if [ "$io" = uring ]; then
		rep=$(grep 'io_uring_enter for' "$dlog") ||
			{ tail -n 5 "$dlog"; fail "uring: no io_uring report at exit"; }
		set -- $(echo "$rep" | sed 's/.*io_uring: \([0-9]*\) io_uring_enter for \([0-9]*\) batches, \([0-9]*\) SQEs (\([0-9]*\) fixed-buffer), \([0-9]*\) requests.*/\1 \2 \3 \4 \5/')
		[ "$#" = 5 ] || fail "uring: cannot parse '$rep'"
		[ "$1" = "$2" ] || fail "uring: $1 io_uring_enter for $2 batches, expected one each"
		[ "$2" -gt 50 ] || fail "uring: only $2 batches went through io_uring"
		[ "$4" -gt 0 ] || fail "uring: no SQE used the registered buffer"
		[ "$5" = 0 ] || fail "uring: $5 requests were served again synchronously"
		log "uring: $(echo "$rep" | sed 's/^blktapd\[[0-9]*\]: //')"
	fi
	log "$io: verified, discard and zeroes ok, image equals disk ($(since "$t0") s)"
done
