#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# fio write-then-verify (crc32c, libaio, O_DIRECT, verify_fatal) through the real tapdisk 3.55.5
# on a raw image: 4k and 44k blocks (44k: one full ring request of 11 segments) at QD1 and QD32,
# sequential and random, at different offsets; then what the tapdev reads back equals the
# image after destroy, and what a new tapdisk reads.
# timeout: 300
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/tapdisk.sh"

require_cmd fio sha256sum
tapdisk_env
truncate -s 128M disk.img || fail "cannot create disk.img"
td_create -a "aio:$PWD/disk.img"

{
	printf '[global]\nfilename=%s\nioengine=libaio\ndirect=1\nverify=crc32c\n' "$TD_DEV"
	printf 'do_verify=1\nverify_fatal=1\nrandrepeat=1\nstonewall\n'
	off=0
	for bs in 4k 44k; do
		for qd in 1 32; do
			for rw in write randwrite; do
				# 4k: 2 MiB at QD1 (512 requests), 4 MiB at QD32; 44k: 8 MiB.
				case $bs-$qd in 4k-1) kib=2048 ;; 4k-*) kib=4096 ;; *) kib=8184 ;; esac
				printf '[%s-%s-qd%s]\nbs=%s\nrw=%s\niodepth=%s\noffset=%dm\nsize=%dk\n' \
					"$rw" "$bs" "$qd" "$bs" "$rw" "$qd" "$off" "$kib"
				off=$((off + 8))
			done
		done
	done
} > verify.fio
fio_run_check "tapdisk verify matrix" verify.fio
# What the jobs wrote (off MiB from 0), as this tapdisk reads it, and as the image holds it.
sum_dev() { dd if="$1" bs=1M count="$off" iflag=direct status=none | sha256sum; }
before=$(sum_dev "$TD_DEV") || td_fail "cannot read $TD_DEV back"
td_destroy "$TD_MINOR"
[ "$(dd if=disk.img bs=1M count="$off" status=none | sha256sum)" = "$before" ] ||
	fail "the image does not hold what tapdisk read back through the tapdev"
# A new tapdisk reads the same.
td_create -a "aio:$PWD/disk.img"
[ "$(sum_dev "$TD_DEV")" = "$before" ] || td_fail "a new tapdisk reads other data than the old one wrote"
td_destroy "$TD_MINOR"
