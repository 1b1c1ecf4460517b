#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Checks udev/*.rules with the host's own udev (`udevadm test`), without touching the host:
#
#   scripts/test-udev.sh [RULES...]      (default: udev/*.rules; needs root for a mount namespace)
#
# In a private mount namespace, tmpfs hides /sys, /dev, /run and /etc/udev. A fake sysfs
# holds the blktap devices exactly as the driver registers them (names, subsystems, uevent
# variables; tests/test_pkg_01_uevent.sh checks those facts against the real driver in the VM),
# /dev holds their nodes with wrong owners and modes, and the rules under test go to
# /etc/udev/rules.d next to the system's own rules (/usr/lib/udev/rules.d). `udevadm test`
# then runs the whole rule set for each device as udevd would, applies owner and mode to the
# nodes and creates the symbolic links, all in the tmpfs. Verified, per device:
#   - the rules files parse without a warning;
#   - the links (/dev/xen/blktap-2/{control,blktap<N>,tapdev<N>}) exist and point to the node;
#   - the node ends up root:root 0600;
#   - tapdevs are not probed (no ID_FS_*, no /dev/disk/by-* links; UDISKS_IGNORE=1), so that md,
#     LVM and friends never look at a guest's disk; partitions and other disks are left alone.
# Not verified: the kernel side (uevents, devtmpfs), which the VM test covers.
#
# Prints KTAP; exit status 0 if every check passed (or all were skipped), 1 otherwise.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != --inner ]; then
	rules=("$@")
	[ ${#rules[@]} -gt 0 ] || rules=("$TOP"/udev/*.rules)
	for r in "${rules[@]}"; do [ -f "$r" ] || { echo "no such rules file: $r" >&2; exit 2; }; done
	echo "TAP version 13"
	if ! command -v udevadm >/dev/null || [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
		echo "1..1"
		echo "ok 1 udev rules # SKIP needs root, unshare -m and udevadm"
		exit 0
	fi
	exec unshare -m --propagation private "$0" --inner "${rules[@]}"
fi
shift
rules=("$@")

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n $1"; shift; printf '# %s\n' "$@"; }
check() { # check DESCRIPTION COMMAND...: one test
	local d=$1; shift
	if out=$("$@" 2>&1); then ok "$d"; else not_ok "$d" "${out:-failed}"; fi
}

# Majors and minors as the driver gets them (dynamic; the values do not matter to the rules).
MISC=10 CTL_MINOR=120 CTL2_MINOR=121 RING_MAJOR=240 BDEV_MAJOR=250

# Only existing directories are mounted over: nothing is created on the host.
for d in /sys /dev /run /etc/udev; do
	mount -t tmpfs -o mode=0755 blktap-test "$d" || { echo "Bail out! cannot mount tmpfs on $d"; exit 1; }
done
mknod -m 0666 /dev/null c 1 3
mkdir -p /run/udev /etc/udev/rules.d /sys/class/misc /sys/class/blktap2 /sys/class/block
for r in "${rules[@]}"; do cp "$r" /etc/udev/rules.d/; done

# fake_dev SYSDIR SUBSYSTEM TYPE MAJOR MINOR DEVNAME [DEVTYPE]: a device in the fake sysfs and
# its node in /dev, owned by nobody with mode 0666 (so the rules must change both).
fake_dev() {
	local dir=/sys/devices/virtual/$1
	mkdir -p "$dir"
	ln -s "../../../../class/$2" "$dir/subsystem"
	{
		printf 'MAJOR=%s\nMINOR=%s\nDEVNAME=%s\n' "$4" "$5" "$6"
		[ -z "${7:-}" ] || printf 'DEVTYPE=%s\n' "$7"
	} > "$dir/uevent"
	echo "$4:$5" > "$dir/dev"
	mkdir -p "$(dirname "/dev/$6")"
	mknod -m 0666 "/dev/$6" "$3" "$4" "$5"
	chown 65534:65534 "/dev/$6"
}
fake_dev 'misc/blktap!control' misc c "$MISC" "$CTL_MINOR" blktap/control
fake_dev misc/blktap-control misc c "$MISC" "$CTL2_MINOR" blktap-control
fake_dev 'blktap2/blktap!blktap3' blktap2 c "$RING_MAJOR" 3 blktap/blktap3
fake_dev 'blktap2/blktap!blktap30' blktap2 c "$RING_MAJOR" 30 blktap/blktap30
fake_dev block/tdd block b "$BDEV_MAJOR" 3 tdd disk
fake_dev block/tdae block b "$BDEV_MAJOR" 30 tdae disk
# A partition named like a tapdev (the driver never creates one) and an unrelated disk.
mkdir -p /sys/devices/virtual/block/tdd/tdd1
ln -s ../../../../../class/block /sys/devices/virtual/block/tdd/tdd1/subsystem
printf 'MAJOR=%s\nMINOR=4\nDEVNAME=tdd1\nDEVTYPE=partition\nPARTN=1\n' "$BDEV_MAJOR" \
	> /sys/devices/virtual/block/tdd/tdd1/uevent
mknod -m 0666 /dev/tdd1 b "$BDEV_MAJOR" 4
fake_dev block/zzb block b 251 0 zzb disk

declare -A props
# run_udev SYSPATH: udevadm test for an "add" event; keeps the log and the final properties.
run_udev() {
	local sys=$1 log
	log=$(SYSTEMD_DEVICE_VERIFY_SYSFS=0 SYSTEMD_LOG_LEVEL=debug udevadm test --action=add "$sys" 2>&1)
	echo "$log" > "/run/udev/test-$(basename "$sys").log"
	props[$sys]=$(echo "$log" | sed -n '/^DEVPATH=/,$p')
}
prop() { echo "${props[$1]}" | sed -n "s/^$2=//p"; }

# rules_parse: no warning about a line of the rules under test while udev reads them.
rules_parse() {
	local r bad=
	for r in "${rules[@]}"; do
		bad+=$(grep -hiE "$(basename "$r"):[0-9]+.*(invalid|ignor|unknown|error|fail|deprecat|expect)" \
			/run/udev/test-*.log | sort -u)
	done
	[ -z "$bad" ] || { echo "$bad"; return 1; }
}
# node_is PATH OWNER:GROUP MODE
node_is() {
	local got
	got=$(stat -c '%U:%G %a' "$1") || return 1
	[ "$got" = "$2 $3" ] || { echo "$1 is $got, expected $2 $3"; return 1; }
}
# link_is LINK TARGET: LINK is a symbolic link that resolves to TARGET.
link_is() {
	[ -L "$1" ] || { echo "$1 is not a symbolic link"; ls -la "$(dirname "$1")" 2>&1; return 1; }
	[ "$(readlink -f "$1")" = "$2" ] || { echo "$1 -> $(readlink "$1"), expected $2"; return 1; }
}
# has_link SYSPATH LINK / lacks_links SYSPATH PATTERN: the DEVLINKS property.
has_link() { echo " $(prop "$1" DEVLINKS) " | grep -qF " $2 " || { echo "DEVLINKS: $(prop "$1" DEVLINKS)"; return 1; }; }
no_links_like() {
	local l; l=$(prop "$1" DEVLINKS)
	! echo "$l" | grep -qE "$2" || { echo "DEVLINKS: $l"; return 1; }
}
not_probed() { # no ID_FS_* property, probing disabled, hidden from udisks
	local p=${props[$1]}
	! echo "$p" | grep -q '^ID_FS_' || { echo "$p"; return 1; }
	echo "$p" | grep -qx 'UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG=1' || { echo "$p"; return 1; }
	echo "$p" | grep -qx 'UDISKS_IGNORE=1' || { echo "$p"; return 1; }
}
untouched() { # no blktap property or link
	! echo "${props[$1]}" | grep -qE 'UDISKS_IGNORE|UDEV_DISABLE_PERSISTENT|xen/blktap' ||
		{ echo "${props[$1]}"; return 1; }
}

CTL='/sys/devices/virtual/misc/blktap!control'
CTL2=/sys/devices/virtual/misc/blktap-control
RING3='/sys/devices/virtual/blktap2/blktap!blktap3'
RING30='/sys/devices/virtual/blktap2/blktap!blktap30'
TDD=/sys/devices/virtual/block/tdd
TDAE=/sys/devices/virtual/block/tdae
PART=/sys/devices/virtual/block/tdd/tdd1
OTHER=/sys/devices/virtual/block/zzb
for s in "$CTL" "$CTL2" "$RING3" "$RING30" "$TDD" "$TDAE" "$PART" "$OTHER"; do run_udev "$s"; done

echo "1..16"
check "rules parse without warnings" rules_parse
check "control: /dev/xen/blktap-2/control -> /dev/blktap/control" \
	link_is /dev/xen/blktap-2/control /dev/blktap/control
check "control: /dev/blktap/control is root:root 0600" node_is /dev/blktap/control root:root 600
check "control: /dev/blktap-control is root:root 0600" node_is /dev/blktap-control root:root 600
check "ring 3: DEVLINKS has /dev/xen/blktap-2/blktap3" has_link "$RING3" /dev/xen/blktap-2/blktap3
check "ring 3: /dev/xen/blktap-2/blktap3 -> /dev/blktap/blktap3" \
	link_is /dev/xen/blktap-2/blktap3 /dev/blktap/blktap3
check "ring 30: /dev/xen/blktap-2/blktap30 -> /dev/blktap/blktap30" \
	link_is /dev/xen/blktap-2/blktap30 /dev/blktap/blktap30
check "ring 3: /dev/blktap/blktap3 is root:root 0600" node_is /dev/blktap/blktap3 root:root 600
check "tap 3 disk: /dev/xen/blktap-2/tapdev3 -> /dev/tdd" link_is /dev/xen/blktap-2/tapdev3 /dev/tdd
check "tap 30 disk: /dev/xen/blktap-2/tapdev30 -> /dev/tdae" link_is /dev/xen/blktap-2/tapdev30 /dev/tdae
check "tap 3 disk: /dev/tdd is root:root 0600" node_is /dev/tdd root:root 600
check "tap 3 disk: not probed (no ID_FS_*, UDISKS_IGNORE=1)" not_probed "$TDD"
check "tap 3 disk: no /dev/disk/by-* links" no_links_like "$TDD" '/dev/disk/'
check "tapdev-named partition: no blktap link or flag" untouched "$PART"
check "tapdev-named partition: node keeps the default owner" node_is /dev/tdd1 root:disk 660
check "other disk: no blktap link or flag" untouched "$OTHER"
echo "# udev-rules: $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
