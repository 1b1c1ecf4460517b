#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Both driver lines at once in one module: four taps of OpenXT's legacy tapdisk2 (ioctl 202 only,
# SETMODE ignored) beside four of tapdisk 3.55.5 (V-XS). Each client's tap-ctl lists its own taps
# with their images (and the other client's as minors it does not serve: their control
# protocols differ). One fio run writes and verifies (crc32c) every tapdev at once; each image
# then holds exactly what its tapdev reads back (no crossed rings or pages). All are destroyed,
# each with its own tap-ctl, and nothing is left in sysfs.
# OpenXT's tap-ctl spends seconds on every tapdisk 3.55.5 it asks for its list (it gets no answer
# it can use: the control messages differ), so the legacy taps are made first and destroyed
# last, and each client's list is read once while both are there.
# timeout: 240
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/openxt.sh"

require_cmd fio cmp
require_openxt
tapdisk_env
N=4
oxt='' xs='' all_minors='' i=0
while [ "$i" -lt "$N" ]; do
	truncate -s 4M "oxt$i.img" "xs$i.img" || fail "cannot create the images"
	oxt_create -a "aio:$PWD/oxt$i.img"
	oxt="$oxt $TD_MINOR:$TD_PID:$TD_DEV:oxt$i.img"
	all_minors="$all_minors $TD_MINOR"
	i=$((i + 1))
done
i=0
while [ "$i" -lt "$N" ]; do
	td_create -a "aio:$PWD/xs$i.img"
	xs="$xs $TD_MINOR:$TD_PID:$TD_DEV:xs$i.img"
	all_minors="$all_minors $TD_MINOR"
	i=$((i + 1))
done
# shellcheck disable=SC2086 # one word per minor
[ "$(printf '%s\n' $all_minors | sort -u | wc -l)" = $((2 * N)) ] || td_fail "minors not distinct:$all_minors"
log "OpenXT legacy taps (minor:pid:dev:image):$oxt"
log "tapdisk 3.55.5 taps:$xs"

# Each client lists its own taps with their tapdisks and images, and the other's minors bare.
# list_check NAME TAP-CTL OWN OTHER
list_check() {
	td_run "$1" "$2" list || { cat "$1.err"; td_fail "$2 list failed"; }
	for t in $3; do
		m=${t%%:*} rest=${t#*:}
		line="pid=${rest%%:*} minor=$m state=0 args=aio:$PWD/${t##*:}"
		grep -qx "$line" "$1.out" || { cat "$1.out"; td_fail "$2 list does not show '$line'"; }
	done
	for t in $4; do
		grep -qx "minor=${t%%:*}" "$1.out" || { cat "$1.out"; td_fail "$2 list does not show minor ${t%%:*}"; }
	done
	[ "$(wc -l < "$1.out")" = $((2 * N)) ] || { cat "$1.out"; td_fail "$2 list has other than $((2 * N)) lines"; }
}
list_check list-oxt "$OXT_TAPCTL" "$oxt" "$xs"
list_check list-xs tap-ctl "$xs" "$oxt"

# One fio run, every tapdev a job of its own, all at once.
# (Not fio_verify_job: its [global] filename would be added to every job's file list.)
{
	printf '[global]\nioengine=libaio\ndirect=1\nverify=crc32c\nverify_fatal=1\ndo_verify=1\n'
	printf 'rw=randwrite\nbsrange=4k-64k\niodepth=8\nsize=3m\n'
	for t in $oxt $xs; do
		rest=${t#*:} rest=${rest#*:}
		dev=${rest%%:*} img=${rest#*:}
		printf '[%s]\nfilename=%s\n' "${img%.img}" "$dev"
	done
} > mixed.fio
fio_run_check "four OpenXT legacy + four tapdisk 3.55.5 taps" mixed.fio
drop_caches
for t in $oxt $xs; do
	rest=${t#*:} rest=${rest#*:}
	dev=${rest%%:*} img=${rest#*:}
	dd if="$dev" bs=1M count=4 iflag=direct status=none > "$img.back" 2> read.err ||
		{ cat read.err; td_fail "reading $dev back failed"; }
	cmp -s "$img.back" "$img" || td_fail "$img does not hold exactly what $dev reads"
done
log "fio verify clean on all $((2 * N)) tapdevs; every image equals its tapdev"

for t in $xs $oxt; do td_destroy "${t%%:*}"; done
for m in $all_minors; do
	[ ! -e "$(tap_sysfs "$m")" ] && [ ! -e "$BLKTAP_CLASS/blktap$m" ] || td_fail "tap $m left in sysfs"
done
