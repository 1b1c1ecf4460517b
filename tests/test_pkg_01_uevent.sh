#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The device facts udev/60-blktap.rules relies on, as the driver really registers them (the
# host test scripts/test-udev.sh replays the rules against a fake sysfs built from these):
#   - control: /sys/devices/virtual/misc/blktap!control (DEVNAME=blktap/control) and
#     .../misc/blktap-control (DEVNAME=blktap-control), subsystem misc;
#   - ring of tap N: /sys/devices/virtual/blktap2/blktap!blktap<N>, subsystem blktap2,
#     DEVNAME=blktap/blktap<N>, MINOR=N;
#   - disk of tap N: /sys/devices/virtual/block/td<letters>, DEVTYPE=disk, MINOR=N, no
#     partitions;
#   - devtmpfs creates every node root:root 0600 under exactly those names.
. "$(dirname "$0")/lib/common.sh"

require_cmd blktap-ctl blktapd
load_blktap

# uevent_is SYSDIR SUBSYSTEM DEVNAME [MINOR [DEVTYPE]]
uevent_is() {
	_d=$1
	[ -f "$_d/uevent" ] || fail "$_d/uevent does not exist"
	_sub=$(basename "$(readlink "$_d/subsystem")")
	[ "$_sub" = "$2" ] || fail "$_d: subsystem $_sub, expected $2"
	_name=$(sed -n 's/^DEVNAME=//p' "$_d/uevent")
	[ "$_name" = "$3" ] || fail "$_d: DEVNAME=$_name, expected $3"
	if [ -n "${4:-}" ]; then
		_minor=$(sed -n 's/^MINOR=//p' "$_d/uevent")
		[ "$_minor" = "$4" ] || fail "$_d: MINOR=$_minor, expected $4"
	fi
	if [ -n "${5:-}" ]; then
		_type=$(sed -n 's/^DEVTYPE=//p' "$_d/uevent")
		[ "$_type" = "$5" ] || fail "$_d: DEVTYPE=$_type, expected $5"
	fi
	log "$_d: subsystem $_sub, DEVNAME=$_name${4:+, MINOR=$4}${5:+, DEVTYPE=$5}"
}
# real_path_is LINK PATH: the class link resolves to the device directory PATH.
real_path_is() {
	_p=$(readlink -f "$1")
	[ "$_p" = "$2" ] || fail "$1 resolves to $_p, expected $2"
}
# node_is PATH TYPE: the devtmpfs node exists with type TYPE (c or b), root:root, mode 0600.
node_is() {
	wait_for 5 test -e "$1" || fail "devtmpfs did not create $1"
	[ "$2" = c ] && { [ -c "$1" ] || fail "$1 is not a character device"; }
	[ "$2" = b ] && { [ -b "$1" ] || fail "$1 is not a block device"; }
	_perm=$(stat -c '%u:%g %a' "$1")
	[ "$_perm" = "0:0 600" ] || fail "$1 is $_perm, expected 0:0 600"
}

real_path_is '/sys/class/misc/blktap!control' '/sys/devices/virtual/misc/blktap!control'
uevent_is '/sys/devices/virtual/misc/blktap!control' misc blktap/control
real_path_is /sys/class/misc/blktap-control /sys/devices/virtual/misc/blktap-control
uevent_is /sys/devices/virtual/misc/blktap-control misc blktap-control
node_is /dev/blktap/control c
node_is /dev/blktap-control c

tap_create --backend mem:1M
ring="/sys/devices/virtual/blktap2/blktap!blktap$TAP_MINOR"
real_path_is "$(tap_sysfs "$TAP_MINOR")" "$ring"
uevent_is "$ring" blktap2 "blktap/blktap$TAP_MINOR" "$TAP_MINOR"
node_is "/dev/blktap/blktap$TAP_MINOR" c

disk=/sys/devices/virtual/block/$TAP_DISK
real_path_is "/sys/block/$TAP_DISK" "$disk"
uevent_is "$disk" block "$TAP_DISK" "$TAP_MINOR" disk
node_is "$TAP_DEV" b
parts=$(find "$disk" -mindepth 1 -maxdepth 1 -name "${TAP_DISK}*" | wc -l)
[ "$parts" = 0 ] || fail "$TAP_DEV has $parts partition(s); the driver sets no partition scan"
log "tap $TAP_MINOR: ring and disk facts as the udev rules expect"
