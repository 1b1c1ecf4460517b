#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Each feature of issue 20 alone, and all together, under fio verify (crc32c) on blktapd's mem
# backend: flush (fio fsync every few writes), flush,fua (plus O_SYNC writes), discard
# (blkdiscard of a MiB in the middle of fio's verified region: it reads back as zeroes, and a
# verify-only pass over the rest of the region still passes) and write-zeroes (BLKZEROOUT,
# checked the same way). After each, the tap's debug counters show exactly the operations that
# were negotiated and no other. (fio's own trim_percentage verify aborts in fio 3.33 with an
# assertion, so the discards are blkdiscard's.)
# timeout: 400
. "$(dirname "$0")/lib/common.sh"

require_cmd fio blktap-ctl blktapd blktap-test blkdiscard
load_blktap

counters() {
	sed -n 's/.*flushes:\([0-9]*\) fua writes:\([0-9]*\) discards:\([0-9]*\) write-zeroes:\([0-9]*\).*/\1 \2 \3 \4/p' \
		"$(tap_sysfs "$1")/debug"
}

for feats in flush flush,fua discard write-zeroes all; do
	tap_create --backend mem:64M --features "$feats"
	log "--- $feats: tap $TAP_MINOR, $TAP_DEV"
	{
		printf '[global]\nfilename=%s\ndirect=1\nverify=crc32c\nverify_fatal=1\nrandrepeat=1\n' "$TAP_DEV"
		printf '[randwrite]\nioengine=libaio\nbsrange=512-64k\nrw=randwrite\niodepth=16\noffset=0\nsize=8m\n'
		case $feats in flush* | all) printf 'fsync=6\n' ;; esac
		case $feats in *fua* | all)
			printf '[osync]\nstonewall\nioengine=libaio\nbs=8k\nrw=write\niodepth=4\nsync=1\noffset=16m\nsize=2m\n' ;;
		esac
	} > each.fio
	fio_run_check "verify with $feats" each.fio
	# A 3 MiB region written with a verify pattern in 64 KiB blocks; its middle MiB discarded or
	# zeroed must read zeroes, the rest must still verify.
	global() {
		printf '[global]\nfilename=%s\nioengine=libaio\ndirect=1\nverify=crc32c\nverify_fatal=1\n' "$TAP_DEV"
		printf 'randrepeat=1\nbs=64k\nrw=write\niodepth=8\n'
	}
	region() { printf '[%s]\noffset=%s\nsize=1m\n' "$1" "$2"; }
	# check_hole OP OFF_MIB: a region at 32 + OFF_MIB MiB; OP (blkdiscard or zeroout) its middle.
	check_hole() {
		base=$((32 + $2))
		{ global; region a "${base}m"; region b "$((base + 1))m"; region c "$((base + 2))m"; } > region.fio
		fio_run_check "$feats: region before $1" region.fio
		case $1 in
		blkdiscard) blkdiscard -o $(((base + 1) * 1048576)) -l 1048576 "$TAP_DEV" || fail "$feats: blkdiscard failed" ;;
		*) blktap-test zeroout "$TAP_DEV" $(((base + 1) * 1048576)) 1048576 || fail "$feats: BLKZEROOUT failed" ;;
		esac
		z=$(dd if="$TAP_DEV" bs=1048576 skip=$((base + 1)) count=1 iflag=direct status=none | tr -d '\000' | wc -c)
		[ "$z" = 0 ] || fail "$feats: $1: the MiB has $z non-zero bytes"
		{ global; region a "${base}m"; region c "$((base + 2))m"; } > region.fio
		rc=0
		fio --output-format=terse --terse-version=3 --verify_only region.fio > fio.out 2> fio.err || rc=$?
		[ "$rc" = 0 ] || { head -n 5 fio.err; fail "$feats: $1 damaged the data around its range"; }
		log "$feats: $1 of 1 MiB reads zeroes, its neighbours still verify"
	}
	case $feats in discard | all) check_hole blkdiscard 0 ;; esac
	case $feats in write-zeroes | all) check_hole zeroout 8 ;; esac
	set -- $(counters "$TAP_MINOR")
	log "$feats: flushes $1, FUA writes $2, discards $3, write-zeroes $4"
	case $feats in flush* | all) [ "$1" -gt 0 ] || fail "$feats: no flush reached the daemon" ;;
	*) [ "$1" = 0 ] || fail "$feats: $1 flushes reached the daemon without flush" ;; esac
	case $feats in *fua | all) [ "$2" -gt 0 ] || fail "$feats: no FUA write reached the daemon" ;;
	*) [ "$2" = 0 ] || fail "$feats: $2 FUA writes reached the daemon without fua" ;; esac
	case $feats in discard | all) [ "$3" -gt 0 ] || fail "$feats: no discard reached the daemon" ;;
	*) [ "$3" = 0 ] || fail "$feats: $3 discards reached the daemon without discard" ;; esac
	case $feats in write-zeroes | all) [ "$4" -gt 0 ] || fail "$feats: no write-zeroes reached the daemon" ;;
	*) [ "$4" = 0 ] || fail "$feats: $4 write-zeroes reached the daemon without write-zeroes" ;; esac
	tap_destroy "$TAP_MINOR" || fail "$feats: destroy failed"
done
