#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The Xen suite's cases, run in dom0 (Debian bookworm user space with xl; see
# tests/xen/dom0-init.sh) by scripts/xen-check.sh. Each case serves disk images in /srv through
# blktap.ko, with blktapd or the real tapdisk 3.55.5, hands the tapdev to PV or PVH guests
# through xen-blkback (phy:/dev/xen/blktap-2/tapdevN) and checks what the guests did
# (tests/xen/guest-init.sh prints it on its console, which xenconsoled logs here).
#
#   cases.sh all | CASE...     run cases, print KTAP and "XEN-RESULT: passed=P failed=F"
#   cases.sh one CASE          run one case (exit 0 pass, 1 fail; a failure that no emulation
#                              flake can explain also leaves the file $CASEDIR/hard)
#
# Markers in the kernel log, as in the VM selftests (scripts/check-kmsg.sh blames a kernel
# report on the case whose "blktap-test: start N NAME" precedes it):
#   blktap-test: start N NAME   blktap-test: end N NAME rc=RC   blktap-test: ktap LINE
# Guest console logs are copied to the console after each case as "@@G NAME| LINE" lines, which
# the host files apart (results/xen/guest-*.log).

# shellcheck shell=bash
set -uo pipefail
export PATH=$(echo /usr/lib/xen-4.*/bin):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

X=/xen                       # what the host put in (guest kernel and initramfs, tools)
FLAVOUR=$(cat $X/flavour 2>/dev/null || echo bookworm) # the dom0 (scripts/xen-check.sh --flavour)
CONLOG=/var/log/xen/console  # xenconsoled's guest logs
CASEDIR=${CASEDIR:-/tmp/case}
BOUND=5                      # seconds within which I/O must fail after its daemon died
# Seconds a domain may take to go once its guest powered off or xl destroy returned. With
# Xen's block-tap disks (trixie) the domain's teardown runs that hotplug script (bash, dozens
# of xenstore and tap-ctl calls), which under TCG on a loaded host took over 30 s.
GONE_WAIT=30
[ "$FLAVOUR" = bookworm ] || GONE_WAIT=120

kmsg() { echo "<5>blktap-test: $*" > /dev/kmsg 2>/dev/null || true; }
ktap() { echo "$*"; kmsg "ktap $*"; }
log() { local up _; read -r up _ < /proc/uptime; echo "($up) $*"; } # dom0's uptime first
now() { local up _; read -r up _ < /proc/uptime; echo "$up"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# fail WHY: the case failed. hard_fail WHY: it failed in a way no emulation flake explains
# (data mismatch, a hang, a tap that cannot be destroyed): never retried.
fail() { log "FAIL: $*"; exit 1; }
hard_fail() { : > "$CASEDIR/hard"; fail "$@"; }

wait_for() { # wait_for SECS CMD...: poll CMD every 0.5 s until it succeeds; 1 on timeout
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.5
	done
}

sha_of() { sha256sum | cut -d' ' -f1; }
# region_sha FILE OFF_MIB LEN_MIB
region_sha() { dd if="$1" bs=1M skip="$2" count="$3" status=none | sha_of; }

# --- images ---------------------------------------------------------------------------------

# img_new NAME MIB [PAT_OFF PAT_LEN]: a sparse image /srv/NAME.img; with a pattern region, dom0
# writes random data there and keeps its hash in $CASEDIR/NAME.pat.
img_new() {
	local img=/srv/$1.img
	rm -f "$img"
	truncate -s "$2M" "$img" || hard_fail "cannot make $img"
	if [ -n "${3:-}" ]; then
		dd if=/dev/urandom of="$CASEDIR/$1.pat" bs=1M count="$4" status=none
		dd if="$CASEDIR/$1.pat" of="$img" bs=1M seek="$3" conv=notrunc status=none ||
			hard_fail "cannot write the pattern into $img"
		sha_of < "$CASEDIR/$1.pat" > "$CASEDIR/$1.pat.sha"
	fi
}

# --- taps -----------------------------------------------------------------------------------

# Each served tap is recorded as "MINOR KIND IMAGE" in $CASEDIR/taps (KIND blktapd or tapdisk),
# so that the cleanup can destroy what a failed case left.

# create_tap KIND IMAGE COMMAND...: run a create COMMAND that prints the new tapdev on its last
# line; sets DEV (/dev/xen/blktap-2/tapdevN) and MINOR, and records the tap.
create_tap() {
	local kind=$1 image=$2 rc=0
	shift 2
	# Never $(COMMAND): the daemon it starts would inherit the pipe.
	"$@" < /dev/null > "$CASEDIR/create.out" 2> "$CASEDIR/create.err" || rc=$?
	[ "$rc" = 0 ] || fail "$* failed (rc=$rc): $(cat "$CASEDIR/create.err")"
	DEV=$(tail -n 1 "$CASEDIR/create.out")
	MINOR=${DEV##*tapdev}
	[ -b "$DEV" ] || fail "$1 $2 printed '$DEV', not a block device"
	echo "$MINOR $kind $image" >> "$CASEDIR/taps"
}

# serve_blktapd IMAGE: blktap-ctl create (blktapd); sets DEV, MINOR.
serve_blktapd() {
	create_tap blktapd "$1" blktap-ctl create --backend "file:$1" --log "$CASEDIR/blktapd.log"
	log "served $1 with blktapd on $DEV"
}

# serve_tapdisk IMAGE: tap-ctl create -a aio:IMAGE (the real tapdisk); sets DEV, MINOR.
serve_tapdisk() {
	[ -x /usr/libexec/tapdisk ] || fail "the real tapdisk is not in dom0: $(cat $X/tapdisk-skip 2>/dev/null)"
	create_tap tapdisk "$1" tap-ctl create -a "aio:$1"
	log "served $1 with tapdisk $(td_pid "$MINOR") on $DEV"
}

# td_pid MINOR: the tapdisk serving MINOR ("tap-ctl list" lines: pid=P minor=M state=S args=A).
td_pid() {
	tap-ctl list -m "$1" < /dev/null 2>/dev/null |
		sed -n "s/^pid=\([0-9]*\) minor=$1 .*/\1/p" | head -n 1
}

tap_sysfs() { echo "/sys/class/blktap2/blktap!blktap$1"; }
tap_gone() { [ ! -d "$(tap_sysfs "$1")" ]; }
tap_debug() { tr '\n' ' ' < "$(tap_sysfs "$1")/debug" 2>/dev/null; }
# tap_stat MINOR FIELD: sent, failed, ... from the debug attribute
tap_stat() { tap_debug "$1" | tr ' ' '\n' | sed -n "s/^$2:\([0-9]*\).*/\1/p" | head -n 1; }
disk_of() { # disk_of MINOR: td + base-26 letters
	awk -v m="$1" 'BEGIN { l = "abcdefghijklmnopqrstuvwxyz"
		if (m < 26) s = substr(l, m + 1, 1)
		else s = substr(l, int(m / 26), 1) substr(l, m % 26 + 1, 1)
		print "td" s }'
}

# tap_destroy MINOR: stop its daemon and free it, within 30 s; a tap that cannot be destroyed
# is a hard failure (something still holds it, or the driver hangs).
tap_destroy() {
	local m=$1 kind pid rc=0
	kind=$(awk -v m="$m" '$1 == m { k = $2 } END { print k }' "$CASEDIR/taps")
	tap_gone "$m" && { sed -i "/^$m /d" "$CASEDIR/taps"; return 0; }
	if [ "$kind" = tapdisk ] && pid=$(td_pid "$m") && [ -n "$pid" ]; then
		timeout 30 tap-ctl destroy -p "$pid" -m "$m" -t 25 < /dev/null > "$CASEDIR/destroy.out" 2>&1 || rc=$?
	else
		timeout 30 blktap-ctl destroy -m "$m" < /dev/null > "$CASEDIR/destroy.out" 2>&1 || rc=$?
	fi
	[ "$rc" = 0 ] || hard_fail "destroying tap $m ($kind) failed (rc=$rc): $(cat "$CASEDIR/destroy.out")"
	wait_for 10 tap_gone "$m" || hard_fail "tap $m still allocated after destroy"
	sed -i "/^$m /d" "$CASEDIR/taps"
}

# --- guests ---------------------------------------------------------------------------------

# guest_config NAME pv|pvh small|fio MEM "EXTRA" [DISK...]: write $CASEDIR/NAME.cfg, a guest
# running tests/xen/guest-init.sh; EXTRA are its xg.* words; DISK: "TARGET,VDEV" (phy:,
# writable), or a disk spec of xl-disk-configuration(5) in KEY=VALUE form (script=block-tap,...)
# as it is.
guest_config() {
	local name=$1 type=$2 initrd=$3 mem=$4 extra=$5 disks="" d
	shift 5
	for d; do
		case "$d" in
		*=*) disks="$disks${disks:+, }'$d'" ;;
		*) disks="$disks${disks:+, }'phy:$d,w'" ;;
		esac
	done
	{
		echo "name = \"$name\""
		echo "type = \"$type\""
		echo "kernel = \"$X/guest/vmlinuz\""
		echo "ramdisk = \"$X/guest/$initrd.cpio\""
		echo "extra = \"console=hvc0 $extra\""
		echo "memory = $mem"
		echo "vcpus = 1"
		echo "disk = [ $disks ]"
		echo "on_poweroff = \"destroy\""
		echo "on_reboot = \"destroy\""
		echo "on_crash = \"destroy\""
		if [ "$type" = pvh ]; then
			# Under QEMU TCG: RDTSCP is not emulated for HVM guests, and the emulated XSAVE
			# state makes the guest kernel oops in fpu__init_system_xstate.
			echo "tsc_mode = \"native\""
			echo "cpuid = \"host,xsave=0\""
		fi
	} > "$CASEDIR/$name.cfg"
}

# guest_start NAME pv|pvh small|fio MEM "EXTRA" [DISK...]: xl create the guest of guest_config.
guest_start() {
	local name=$1 type=$2 mem=$4 extra=$5 rc=0
	guest_config "$@"
	rm -f "$CONLOG/guest-$name.log"
	echo "$name" >> "$CASEDIR/guests"
	timeout 120 xl create "$CASEDIR/$name.cfg" < /dev/null > "$CASEDIR/$name.create" 2>&1 || rc=$?
	[ "$rc" = 0 ] || { cat "$CASEDIR/$name.create"; "${XL_FAIL_HOOK:-true}"; fail "xl create $name failed (rc=$rc)"; }
	log "guest $name ($type, $mem MiB) created: $extra"
}

# Under TCG every process dom0 starts costs tens of milliseconds (hundreds when the host is
# busy), so the polling below reads the logs with one grep or sed and looks at the domain
# list (xl, the slowest) only every few seconds.
guest_logfile() { echo "$CONLOG/guest-$1.log"; }
guest_log() { { tr -d '\r' < "$(guest_logfile "$1")"; } 2>/dev/null; }
guest_says() { grep -aq -- "$2" "$(guest_logfile "$1")" 2>/dev/null; }
guest_alive() { xl domid "$1" > /dev/null 2>&1; }
guest_gone() { ! guest_alive "$1"; }
guest_domid() { xl domid "$1" 2>/dev/null; }
# guest_data NAME KEY: the value of "XG-DATA ... KEY=VALUE" in the guest's log
guest_data() { sed -n "s/^XG-DATA .*$2=\([^ \r]*\).*/\1/p" "$(guest_logfile "$1")" 2>/dev/null | tail -n 1; }
guest_result() { sed -n 's/.*\(XG-RESULT: [^\r]*\).*/\1/p' "$(guest_logfile "$1")" 2>/dev/null | tail -n 1; }

# guest_wait NAME MARK SECS: wait until the guest printed MARK (a grep pattern); fail if it
# died or took too long.
guest_wait() {
	local name=$1 mark=$2 end=$((SECONDS + $3)) i=0
	while ! guest_says "$name" "$mark"; do
		i=$((i + 1))
		if [ $((i % 10)) = 0 ] && guest_gone "$name"; then
			guest_says "$name" "$mark" && return 0
			fail "guest $name ended before '$mark' ($(guest_result "$name"))"
		fi
		[ "$SECONDS" -lt "$end" ] ||
			fail "guest $name: no '$mark' within $3 s (last: $(guest_log "$name" | grep '^XG' | tail -n 1))"
		sleep 0.5
	done
}

# guest_end NAME SECS: wait for the guest's result and for its domain to be gone; fail unless
# the result is ok. A domain left shut down ("---s--") with its vbd backends closed is the
# emulation flake of the notes: it is destroyed and said so.
guest_end() {
	local name=$1 secs=$2
	guest_wait "$name" 'XG-RESULT: ' "$secs"
	if ! wait_for "$GONE_WAIT" guest_gone "$name"; then
		local state domid
		domid=$(guest_domid "$name")
		state=$(xl list "$name" 2>/dev/null | awk 'NR == 2 { print $5 }')
		log "guest $name: domain $domid still there $GONE_WAIT s after its result (state $state):" \
			"$(backend_states "$domid")"
		if [ "${state#*s}" != "$state" ] && ! backend_states "$domid" | grep -qv 'state=6'; then
			log "FLAKE: guest $name stayed shut down with its backends closed; xl destroy"
			xl destroy "$name" > /dev/null 2>&1
		fi
		wait_for 10 guest_gone "$name" || hard_fail "guest $name cannot be destroyed"
	fi
	case "$(guest_result "$name")" in
	"XG-RESULT: ok") ;;
	*) fail "guest $name: $(guest_result "$name")" ;;
	esac
}

# backend_states DOMID: "vbd/DOMID/DEV state=S" for each of its block backends
backend_states() {
	local b
	for b in $(xenstore-list "/local/domain/0/backend/vbd/$1" 2>/dev/null); do
		echo "vbd/$1/$b state=$(xenstore-read "/local/domain/0/backend/vbd/$1/$b/state" 2>/dev/null)"
	done
}

# check_pattern NAME IMAGE VDEV IN OUT LEN: after the guest ran the pattern job on VDEV, the
# guest read dom0's pattern bit-exact (in_sha) and the image holds what the guest wrote.
check_pattern() {
	local name=$1 img=$2 vdev=$3 in=$4 out=$5 len=$6 want got
	want=$(cat "$CASEDIR/$(basename "$img" .img).pat.sha")
	got=$(guest_data "$name" "$vdev.in_sha")
	[ -n "$got" ] || fail "guest $name reported no $vdev.in_sha"
	[ "$got" = "$want" ] || hard_fail "guest $name read $got from $vdev at ${in} MiB, dom0 wrote $want"
	want=$(guest_data "$name" "$vdev.out_sha")
	[ -n "$want" ] || fail "guest $name reported no $vdev.out_sha"
	got=$(region_sha "$img" "$out" "$len")
	[ "$got" = "$want" ] || hard_fail "$img at ${out} MiB holds $got, guest $name wrote $want"
	log "data ok: guest $name read dom0's ${len} MiB at ${in} MiB and wrote ${len} MiB at ${out} MiB of $img, bit-exact"
}

# --- watching dom0 ----------------------------------------------------------------------------

# dstate_check SECS: fail if a task is in uninterruptible sleep (D) now and still SECS later
# (the debug kernel's hung-task detector is not in every dom0 kernel).
dstate_tasks() {
	local f
	for f in /proc/[0-9]*/stat; do
		awk '{ s = $0; sub(/.*\) /, "", s); split(s, a, " "); if (a[1] == "D") print $1 }' "$f" 2>/dev/null
	done | sort
}
dstate_check() {
	local first later p
	first=$(dstate_tasks)
	[ -n "$first" ] || return 0
	sleep "$1"
	later=$(comm -12 <(echo "$first") <(dstate_tasks))
	[ -z "$later" ] && return 0
	for p in $later; do
		log "task $p ($(cat "/proc/$p/comm" 2>/dev/null)) in D state for over $1 s: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)"
		sed 's/^/  /' "/proc/$p/stack" 2>/dev/null | head -n 20
	done
	hard_fail "task(s) stuck in D state in dom0"
}

# dom0_healthy: the toolstack answers and nothing hangs.
dom0_healthy() {
	timeout 20 xl list > /dev/null 2>&1 || hard_fail "xl list does not answer"
	timeout 20 xenstore-ls /local/domain/0 > /dev/null 2>&1 || hard_fail "xenstore does not answer"
	dstate_check 10
}

# --- the cases --------------------------------------------------------------------------------

# Xen and dom0 up, the toolstack works, xen-blkback is loaded; bookworm: blktap.ko is loaded;
# trixie: systemd-modules-load loaded it at boot (the package's modules-load.d), the .debs are
# installed and the module is the one DKMS built for the running kernel.
case_dom0_boot() {
	local f
	xl info > "$CASEDIR/xl-info" 2>&1 || { cat "$CASEDIR/xl-info"; fail "xl info failed"; }
	grep -E '^(xen_version|virt_caps|total_memory|free_memory|nr_cpus) ' "$CASEDIR/xl-info"
	grep -q '^virt_caps .*pv' "$CASEDIR/xl-info" || fail "Xen offers no PV guests"
	grep -q '^virt_caps .*hvm' "$CASEDIR/xl-info" || fail "Xen offers no HVM (PVH) guests"
	[ -d /sys/module/xen_blkback ] || fail "xen-blkback not loaded"
	if [ "$FLAVOUR" = bookworm ]; then
		[ -d /sys/module/blktap ] || fail "blktap.ko not loaded"
		log "dom0 kernel $(uname -r); blktap and xen-blkback loaded"
		return 0
	fi
	# Loaded at boot by systemd-modules-load, from the package's modules-load.d (dom0-init
	# runs it as systemd would): Xen 4.20's block-tap runs no modprobe, and tap-ctl refuses
	# to run while /proc/misc has no blktap/control.
	[ -d /sys/module/blktap ] ||
		fail "blktap is not loaded at boot (modules-load.d: $(cat /usr/lib/modules-load.d/blktap.conf 2>&1 | grep -v '^#' | tr '\n' ' '))"
	grep -q '^248 blktap/control$' /proc/misc || fail "blktap/control is not at minor 248: $(grep blktap /proc/misc | tr '\n' ' ')"
	dpkg-query -W -f '${Package} ${Version} ${Status}\n' blktap-rs-dkms blktap-rs-tools
	[ "$(dpkg-query -W -f '${Status}\n' blktap-rs-dkms blktap-rs-tools | grep -c 'install ok installed')" = 2 ] ||
		fail "the blktap-rs packages are not both installed"
	dkms status blktap
	f=$(modinfo -F filename blktap 2>&1) || fail "modinfo blktap: $f"
	case "$f" in
	"/lib/modules/$(uname -r)/updates/dkms/"*) ;;
	*) fail "modinfo finds blktap at $f, not in DKMS's updates/dkms of $(uname -r)" ;;
	esac
	# DKMS signs what it builds with its key (enrolled as a MOK, Secure Boot accepts it).
	[ -n "$(modinfo -F signer blktap)" ] || fail "$f is not signed (DKMS had no signing key)"
	log "dom0 kernel $(uname -r); blktap loaded at boot by systemd-modules-load: $f" \
		"(vermagic $(modinfo -F vermagic blktap); signer $(modinfo -F signer blktap));" \
		"$(ls -l /dev/xen/blktap-2/control 2>&1)"
}

# guest_pattern_case TYPE DAEMON: one guest on one tapdev; dom0's pattern read in the guest,
# the guest's write found in the image.
guest_pattern_case() {
	local type=$1 daemon=$2 name=g-$1-$2
	img_new "$name" 64 0 8
	"serve_$daemon" "/srv/$name.img"
	guest_start "$name" "$type" small 256 "xg.job=pattern xg.in=0 xg.out=16 xg.len=8" "$DEV,xvda"
	guest_end "$name" 180
	tap_destroy "$MINOR"
	check_pattern "$name" "/srv/$name.img" xvda 0 16 8
	rm -f "/srv/$name.img"
}
case_pv_blktapd() { guest_pattern_case pv blktapd; }
case_pvh_blktapd() { guest_pattern_case pvh blktapd; }
case_pv_tapdisk() { guest_pattern_case pv tapdisk; }
case_pvh_tapdisk() { guest_pattern_case pvh tapdisk; }

# ext4 made in a guest on a tapdisk tapdev; after the guest is gone and the tap destroyed, dom0
# checks the image with e2fsck and finds the guest's tree, bit-exact, in a loop mount.
case_ext4_fsck() {
	local name=g-ext4 img=/srv/g-ext4.img
	img_new g-ext4 128
	serve_tapdisk "$img"
	guest_start "$name" pv small 256 "xg.job=ext4" "$DEV,xvda"
	guest_end "$name" 240
	tap_destroy "$MINOR"
	ext4_verify "$name" "$img"
}

# ext4_verify NAME IMAGE: after guest NAME's ext4 job on IMAGE (not in use any more), e2fsck
# finds it clean and a loop mount holds the guest's tree, bit-exact.
ext4_verify() {
	local name=$1 img=$2 files sum
	e2fsck -fn "$img" > "$CASEDIR/fsck.out" 2>&1 || { cat "$CASEDIR/fsck.out"; hard_fail "e2fsck of $img: not clean"; }
	tail -n 1 "$CASEDIR/fsck.out"
	mkdir -p /mnt/ext4
	mount -o loop,ro -t ext4 "$img" /mnt/ext4 || fail "cannot loop-mount $img in dom0"
	(cd /mnt/ext4 && find tree -type f | LC_ALL=C sort | xargs sha256sum) > "$CASEDIR/manifest"
	umount /mnt/ext4
	files=$(wc -l < "$CASEDIR/manifest")
	sum=$(sha_of < "$CASEDIR/manifest")
	[ "$files" = "$(guest_data "$name" ext4.files)" ] ||
		hard_fail "dom0 finds $files files, the guest wrote $(guest_data "$name" ext4.files)"
	[ "$sum" = "$(guest_data "$name" ext4.manifest_sha)" ] || hard_fail "the tree in $img differs from what the guest wrote"
	log "e2fsck clean; $files files bit-exact in dom0's loop mount"
	rm -f "$img"
}

# snap DOMID DISK MINOR: one line of counters: blkback's for the guest's xvda (rd_req wr_req
# f_req ds_req oo_req rd_sect wr_sect: requests taken from the ring, by kind, and sectors), the
# tapdev's (t_*: requests and sectors that reached the tap, discards, flushes) and the tap's
# ring requests sent to the daemon (sent).
snap() {
	local d=/sys/bus/xen-backend/devices/vbd-$1-51712/statistics f
	for f in rd_req wr_req f_req ds_req oo_req rd_sect wr_sect; do
		printf '%s=%s ' "$f" "$(cat "$d/$f" 2>/dev/null || echo 0)"
	done
	awk '{ printf "t_r=%d t_rs=%d t_w=%d t_ws=%d t_d=%d t_f=%d ", $1, $3, $5, $7, $12, $16 }' "/sys/block/$2/stat"
	echo "sent=$(tap_stat "$3" sent)"
}

# fio_summary FILE: one line per fio job from the lines "STEP BEFORE | AFTER" of snap();
# 1 if a flush or discard reached blkback or the tap.
fio_summary() {
	awk '{
		side = 0
		for (i = 2; i <= NF; i++) {
			if ($i == "|") { side = 1; continue }
			split($i, kv, "=")
			if (side) v[kv[1]] += kv[2]; else v[kv[1]] -= kv[2]
		}
		printf "  %-18s blkback got %d reads (avg %.1f KiB) and %d writes (avg %.1f KiB), %d flushes, %d discards, %d out-of-requests; the tap got %d reads (avg %.1f KiB), %d writes (avg %.1f KiB), %d flushes, %d discards; %d ring requests\n",
			$1, v["rd_req"], v["rd_req"] ? v["rd_sect"] / v["rd_req"] / 2 : 0,
			v["wr_req"], v["wr_req"] ? v["wr_sect"] / v["wr_req"] / 2 : 0, v["f_req"], v["ds_req"], v["oo_req"],
			v["t_r"], v["t_r"] ? v["t_rs"] / v["t_r"] / 2 : 0, v["t_w"], v["t_w"] ? v["t_ws"] / v["t_w"] / 2 : 0,
			v["t_f"], v["t_d"], v["sent"]
		if (v["f_req"] || v["ds_req"] || v["t_f"] || v["t_d"]) bad = 1
		delete v
	} END { exit bad }' "$1"
}

# fio with crc32c verify in a guest at QD1 and QD32, 4k and 44k (and 1 MiB sequential), on a
# blktapd tapdev. Records, per fio job, what blkback took from the ring, what reached the tap,
# and the features blkback and blkfront negotiated; checks that no request failed and that no
# flush or discard reached the tap (it declares no write cache and no discard, so blkback must
# not offer them).
case_fio_verify() {
	local name=g-fio img=/srv/g-fio.img domid disk step prev cur failed0
	img_new g-fio 96
	serve_blktapd "$img"
	disk=$(disk_of "$MINOR")
	failed0=$(tap_stat "$MINOR" failed)
	guest_start "$name" pv fio 512 "xg.job=fio" "$DEV,xvda"
	domid=$(guest_domid "$name")
	guest_wait "$name" 'XG: ready' 120
	log "blkback's xenstore keys (backend/vbd/$domid/51712):"
	xenstore-ls "/local/domain/0/backend/vbd/$domid/51712" 2>/dev/null |
		grep -E '^(feature-|max-ring|multi-queue|sector-size|physical-sector|sectors|info|mode|discard)' | sed 's/^/  /'
	log "blkfront's keys (device/vbd/51712):"
	xenstore-ls "/local/domain/$domid/device/vbd/51712" 2>/dev/null |
		grep -E '^(feature-|ring-page-order|multi-queue|protocol)' | sed 's/^/  /'
	log "the tapdev's queue: $(cd "/sys/block/$disk/queue" && for f in max_sectors_kb max_hw_sectors_kb max_segments max_segment_size write_cache fua discard_max_bytes; do printf '%s=%s ' "$f" "$(tr ' ' _ < $f)"; done)"
	guest_wait "$name" 'XG: step start' 120
	prev=$(snap "$domid" "$disk" "$MINOR")
	: > "$CASEDIR/fio-steps"
	for step in randwrite-4k-qd1 randwrite-4k-qd32 randwrite-44k-qd1 randwrite-44k-qd32 write-1m-qd4; do
		guest_wait "$name" "XG: step $step" 600
		cur=$(snap "$domid" "$disk" "$MINOR")
		echo "$step $prev | $cur" >> "$CASEDIR/fio-steps"
		prev=$cur
	done
	guest_log "$name" | grep -E '^XG-INFO' | sed 's/^XG-INFO /guest: /'
	guest_end "$name" 120
	log "per fio job (write then verify-read), what blkback took from the ring and what reached the tap:"
	fio_summary "$CASEDIR/fio-steps" || hard_fail "a flush or discard reached blkback or the tap (see above)"
	[ "$(tap_stat "$MINOR" failed)" = "$failed0" ] || hard_fail "requests failed on tap $MINOR: $(tap_debug "$MINOR")"
	log "tap $MINOR: $(tap_debug "$MINOR")"
	tap_destroy "$MINOR"
	rm -f "$img"
}

# Two guests at once on two tapdevs (a PV guest on blktapd, a PVH guest on tapdisk), writing at
# the same time: each image holds exactly its own guest's data.
case_two_guests() {
	local a=g-two-a b=g-two-b ma mb
	img_new "$a" 64 0 16
	img_new "$b" 64 0 16
	serve_blktapd "/srv/$a.img"
	ma=$MINOR
	local deva=$DEV
	serve_tapdisk "/srv/$b.img"
	mb=$MINOR
	guest_start "$a" pv small 256 "xg.job=pattern xg.in=0 xg.out=32 xg.len=16" "$deva,xvda"
	guest_start "$b" pvh small 256 "xg.job=pattern xg.in=0 xg.out=32 xg.len=16" "$DEV,xvda"
	guest_end "$a" 240
	guest_end "$b" 240
	tap_destroy "$ma"
	tap_destroy "$mb"
	check_pattern "$a" "/srv/$a.img" xvda 0 32 16
	check_pattern "$b" "/srv/$b.img" xvda 0 32 16
	[ "$(guest_data "$a" xvda.out_sha)" != "$(guest_data "$b" xvda.out_sha)" ] ||
		hard_fail "both guests report the same data"
	rm -f "/srv/$a.img" "/srv/$b.img"
}

# io_flowing MINOR SENT: the tap sent over 200 requests more than SENT
io_flowing() { [ "$(tap_stat "$1" sent)" -gt $(($2 + 200)) ]; }

# The domain ends (xl shutdown or xl destroy) while fio (QD32) and four writers have I/O in
# flight on the tapdev: the domain goes, nothing hangs in dom0, the tap can be destroyed.
inflight_case() {
	local how=$1 daemon=$2 type=$3 name=g-$1 t0 sent
	img_new "$name" 64
	"serve_$daemon" "/srv/$name.img"
	guest_start "$name" "$type" fio 512 "xg.job=ioloop" "$DEV,xvda"
	guest_wait "$name" 'XG: io running' 120
	sent=$(tap_stat "$MINOR" sent)
	wait_for 30 io_flowing "$MINOR" "$sent" || fail "no I/O reached tap $MINOR"
	sleep 2
	log "tap $MINOR before xl $how: $(tap_debug "$MINOR")"
	t0=$(now)
	timeout 60 xl "$how" "$name" > "$CASEDIR/xl-$how.out" 2>&1 || { cat "$CASEDIR/xl-$how.out"; hard_fail "xl $how $name failed"; }
	wait_for 60 guest_gone "$name" || hard_fail "domain $name still there 60 s after xl $how"
	log "domain gone $(since "$t0") s after xl $how"
	[ "$how" = destroy ] || guest_says "$name" 'XG: shutdown requested' || fail "the guest did not see the shutdown request"
	dom0_healthy
	log "tap $MINOR after: $(tap_debug "$MINOR")"
	tap_destroy "$MINOR"
	rm -f "/srv/$name.img"
}
case_shutdown_inflight() { inflight_case shutdown tapdisk pv; }
case_destroy_inflight() { inflight_case destroy blktapd pvh; }

# blktapd killed (SIGKILL) while the guest writes and reads: the guest sees I/O errors within
# BOUND s, dom0 stays healthy, a new blktapd serves the same minor (the disk blkback holds open
# survives), the guest's I/O works again and its data reaches the image.
case_daemon_kill() {
	local name=g-kill img=/srv/g-kill.img pid t0 el
	img_new g-kill 64 32 8
	blktap-ctl alloc < /dev/null > "$CASEDIR/alloc.out" 2>&1 || fail "blktap-ctl alloc: $(cat "$CASEDIR/alloc.out")"
	MINOR=$(tail -n 1 "$CASEDIR/alloc.out")
	echo "$MINOR blktapd $img" >> "$CASEDIR/taps"
	DEV=/dev/xen/blktap-2/tapdev$MINOR
	setsid blktapd --minor "$MINOR" --backend "file:$img" --foreground --log "$CASEDIR/blktapd.1.log" \
		< /dev/null > /dev/null 2>&1 &
	pid=$!
	echo "$pid" >> "$CASEDIR/pids"
	wait_for 20 test -b "/dev/$(disk_of "$MINOR")" || fail "blktapd made no disk: $(tail -n 3 "$CASEDIR/blktapd.1.log")"
	if [ ! -b "$DEV" ]; then
		# blktap-ctl create makes this node; a bare blktapd does not.
		mkdir -p /dev/xen/blktap-2
		# shellcheck disable=SC2046 # MAJOR MINOR, two words
		mknod -m 600 "$DEV" b $(tr ':' ' ' < "/sys/block/$(disk_of "$MINOR")/dev")
	fi
	guest_start "$name" pv small 256 "xg.job=ioloop xg.recover=1 xg.in=32 xg.out=40 xg.len=8" "$DEV,xvda"
	guest_wait "$name" 'XG: io running' 120
	sleep 3
	guest_says "$name" 'XG: io error' && fail "the guest saw I/O errors before the kill"
	log "tap $MINOR before the kill: $(tap_debug "$MINOR")"
	t0=$(now)
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null
	wait_for $((BOUND + 5)) guest_says "$name" 'XG: io error' || hard_fail "no I/O error in the guest $((BOUND + 5)) s after kill -9 of blktapd"
	el=$(since "$t0")
	log "the guest saw an I/O error ${el} s after kill -9 of blktapd (bound ${BOUND} s, plus console latency)"
	awk -v e="$el" -v b="$BOUND" 'BEGIN { exit !(e <= b) }' || hard_fail "I/O error after ${el} s, more than ${BOUND} s"
	log "tap $MINOR after the kill: $(tap_debug "$MINOR")"
	dom0_healthy
	guest_alive "$name" || fail "the guest died after its disk's daemon was killed"
	setsid blktapd --minor "$MINOR" --backend "file:$img" --foreground --log "$CASEDIR/blktapd.2.log" \
		< /dev/null > /dev/null 2>&1 &
	pid=$!
	echo "$pid" >> "$CASEDIR/pids"
	wait_for 20 grep -qs 'exists already' "$CASEDIR/blktapd.2.log" ||
		fail "the new blktapd did not take over the surviving disk: $(tail -n 3 "$CASEDIR/blktapd.2.log")"
	log "a new blktapd serves minor $MINOR again"
	guest_wait "$name" 'XG: io recovered' 60
	guest_end "$name" 120
	tap_destroy "$MINOR"
	wait "$pid" 2>/dev/null
	check_pattern "$name" "$img" xvda 32 40 8
	rm -f "$img"
}

# xl block-attach to a running guest that has no disk, I/O on it, xl block-detach: the guest
# sees the disk come and go, the tap is released, the data is in the image. HOW: phy (a tapdisk
# tapdev the case serves, destroyed by the case) or block-tap (Xen's hotplug script makes the
# tap on attach and destroys it on detach).
block_attach_case() {
	local how=$1 name=g-attach img=/srv/g-attach.img spec
	img_new g-attach 64 0 8
	if [ "$how" = phy ]; then
		serve_tapdisk "$img"
		spec="phy:$DEV,xvdb,w"
	else
		spec=$(bt_disk aio "$img" xvdb)
	fi
	guest_start "$name" pv small 256 "xg.job=hotplug xg.disks= xg.in=0 xg.out=16 xg.len=8"
	guest_wait "$name" 'XG: waiting for xvdb' 120
	timeout 60 xl block-attach "$name" "$spec" > "$CASEDIR/attach.out" 2>&1 ||
		{ cat "$CASEDIR/attach.out"; fail "xl block-attach failed"; }
	log "xl block-attach $name $spec done"
	[ "$how" = phy ] || bt_find aio "$img"
	guest_wait "$name" 'XG: attached-done' 120
	timeout 60 xl block-detach "$name" xvdb > "$CASEDIR/detach.out" 2>&1 ||
		{ cat "$CASEDIR/detach.out"; hard_fail "xl block-detach failed"; }
	log "xl block-detach $name xvdb done"
	guest_wait "$name" 'XG: detached' 60
	if [ "$how" != phy ]; then
		wait_for "$GONE_WAIT" taps_none || hard_fail "after xl block-detach: $(taps_report)"
		log "after xl block-detach, the guest still running: no tapdisk, no tap left"
	fi
	guest_end "$name" 60
	[ "$how" != phy ] || tap_destroy "$MINOR"
	check_pattern "$name" "$img" xvdb 0 16 8
	rm -f "$img"
}
case_block_attach() { block_attach_case phy; }
case_blocktap_attach() {
	blktap_loaded
	block_attach_case block-tap
}

# --- Xen's block-tap hotplug script (the trixie flavour) -----------------------------------------

# bt_disk TYPE IMAGE VDEV: the disk spec of the admin guide for Xen's block-tap script. Xen
# 4.20's runs tap-ctl allocate, spawn, attach and open -a TYPE:IMAGE on attach (and records
# the tap's pid and minor in xenstore), tap-ctl destroy on detach; unlike 4.17's, it does not
# run modprobe blktap.
bt_disk() { echo "script=block-tap,vdev=$3,target=$1:$2"; }

# taps_none: no tapdisk process and, with blktap loaded, no tap (tap-ctl list, the blktap2
# class's devices).
taps_none() {
	! pgrep -x tapdisk > /dev/null || return 1
	[ -d /sys/module/blktap ] || return 0
	# (sysfs files have a size whatever they hold: read it)
	[ -z "$(tap-ctl list < /dev/null 2>/dev/null)" ] && [ -z "$(cat /sys/class/blktap2/devices)" ]
}

# blktap_loaded: modprobe blktap unless it is loaded (each case of the trixie flavour can run
# alone after a case that unloaded it; the boot loads it, see case_dom0_boot).
blktap_loaded() {
	[ -d /sys/module/blktap ] && return 0
	modprobe blktap || hard_fail "modprobe blktap failed"
	log "modprobe blktap: $(modinfo -F filename blktap)"
}
taps_report() {
	echo "tap-ctl list: '$(tap-ctl list < /dev/null 2>&1 | tr '\n' ';')'," \
		"/sys/class/blktap2/devices: '$(tr '\n' ';' < /sys/class/blktap2/devices 2>&1)'," \
		"tapdisk pids: '$(pgrep -x tapdisk | tr '\n' ' ')'"
}

# bt_find TYPE IMAGE: the tap block-tap made for IMAGE (sets MINOR), recorded for the cleanup.
bt_find() {
	local line
	line=$(tap-ctl list -t "$1" -f "$2" < /dev/null 2>&1)
	MINOR=$(echo "$line" | sed -n 's/.*minor=\([0-9]*\).*/\1/p' | head -n 1)
	[ -n "$MINOR" ] || fail "block-tap made no tap for $1:$2 (tap-ctl list: $line)"
	echo "$MINOR tapdisk $2" >> "$CASEDIR/taps"
	log "block-tap: $line; /dev/xen/blktap-2: $(ls /dev/xen/blktap-2 | tr '\n' ' ')"
}

# bt_guest NAME TYPE IMAGE EXTRA [pv|pvh]: a guest whose xvda is IMAGE through block-tap.
bt_guest() {
	guest_start "$1" "${5:-pv}" small 256 "$4" "$(bt_disk "$2" "$3" xvda)"
	bt_find "$2" "$3"
}

# bt_diag: what block-tap and tap-ctl left on record, for a failed attach (xl create) or a
# detach that left its tap: tap-ctl's own messages (syslog), the hotplug log, the kernel's,
# the nodes, and what modprobe makes of the control device's alias.
bt_diag() {
	log "diag: tap-ctl syslog: $(grep -a 'tap-ctl\|tapdisk' /var/log/messages 2>/dev/null | tail -n 6 | tr '\n' '|')"
	log "diag: hotplug log: $(grep -a 'block-tap\|tap-ctl' /var/log/xen/xen-hotplug.log 2>/dev/null | tail -n 4 | tr '\n' '|')"
	log "diag: dmesg: $(dmesg | tail -n 5 | tr '\n' '|')"
	log "diag: nodes: $(ls -l /dev/blktap/control /dev/xen/blktap-2/ 2>&1 | tr '\n' '|')"
	log "diag: kernel.modprobe $(cat /proc/sys/kernel/modprobe); modprobe -n -v char-major-10-248: $(modprobe -n -v char-major-10-248 2>&1 | tr '\n' '|')"
}

# bt_gone WHEN: after the domain went, block-tap's remove left no tap and no tapdisk.
bt_gone() {
	local t0
	t0=$(now)
	wait_for "$GONE_WAIT" taps_none || { bt_diag; hard_fail "$1: $(taps_report)"; }
	sed -i '/ tapdisk /d' "$CASEDIR/taps"
	log "$1: tap-ctl list empty, /sys/class/blktap2/devices empty, no tapdisk (after $(since "$t0") s)"
}

# A PV guest on a raw image through block-tap (target=aio:IMAGE), with blktap as the boot left
# it. The guest reads dom0's pattern and writes its own, bit-exact both ways; it shuts down by
# itself and nothing of the tap is left.
case_blocktap_aio() {
	local name=g-bt-aio img=/srv/g-bt-aio.img
	img_new g-bt-aio 64 0 8
	blktap_loaded
	XL_FAIL_HOOK=bt_diag bt_guest "$name" aio "$img" "xg.job=pattern xg.in=0 xg.out=16 xg.len=8"
	guest_end "$name" 180
	bt_gone "after the guest's shutdown"
	check_pattern "$name" "$img" xvda 0 16 8
	rm -f "$img"
}

# vhd_sha IMAGE OFF LEN [FILE]: through a tapdisk tapdev of dom0's own, write FILE at OFF MiB
# of the VHD IMAGE, or print the sha256 of LEN MiB at OFF MiB of it.
vhd_sha() {
	local img=$1 off=$2 len=$3 file=${4:-} rc=0
	create_tap tapdisk "$img" tap-ctl create -a "vhd:$img"
	if [ -n "$file" ]; then
		dd if="$file" of="$DEV" bs=1M seek="$off" oflag=direct conv=notrunc status=none || rc=$?
	else
		dd if="$DEV" bs=1M skip="$off" count="$len" iflag=direct status=none | sha_of || rc=$?
	fi
	tap_destroy "$MINOR"
	[ "$rc" = 0 ] || hard_fail "I/O on the VHD $img through $DEV failed"
}

# A PV guest on a VHD through block-tap (target=vhd:IMAGE), ended by xl destroy once its job
# is done: dom0's pattern (written through a tapdisk of its own) read bit-exact in the guest,
# the guest's data read back bit-exact in dom0 the same way; vhd-util check passes; nothing of
# the tap is left.
case_blocktap_vhd() {
	local name=g-bt-vhd img=/srv/g-bt-vhd.vhd want got
	blktap_loaded
	rm -f "$img"
	vhd-util create -n "$img" -s 64 > "$CASEDIR/vhd.out" 2>&1 || hard_fail "vhd-util create: $(cat "$CASEDIR/vhd.out")"
	dd if=/dev/urandom of="$CASEDIR/pat" bs=1M count=8 status=none
	vhd_sha "$img" 0 8 "$CASEDIR/pat"
	want=$(sha_of < "$CASEDIR/pat")
	bt_guest "$name" vhd "$img" "xg.job=pattern xg.in=0 xg.out=16 xg.len=8 xg.hold=1"
	guest_wait "$name" 'XG-RESULT: ' 180
	[ "$(guest_result "$name")" = "XG-RESULT: ok" ] || fail "guest $name: $(guest_result "$name")"
	timeout 60 xl destroy "$name" > "$CASEDIR/destroy.out" 2>&1 || { cat "$CASEDIR/destroy.out"; hard_fail "xl destroy $name failed"; }
	wait_for "$GONE_WAIT" guest_gone "$name" || hard_fail "domain $name still there $GONE_WAIT s after xl destroy"
	bt_gone "after xl destroy"
	got=$(guest_data "$name" xvda.in_sha)
	[ "$got" = "$want" ] || hard_fail "guest $name read $got from the VHD at 0 MiB, dom0 wrote $want"
	want=$(guest_data "$name" xvda.out_sha)
	[ -n "$want" ] || fail "guest $name reported no xvda.out_sha"
	got=$(vhd_sha "$img" 16 8)
	[ "$got" = "$want" ] || hard_fail "the VHD at 16 MiB holds $got, guest $name wrote $want"
	vhd-util check -n "$img" > "$CASEDIR/vhd.out" 2>&1 || hard_fail "vhd-util check: $(cat "$CASEDIR/vhd.out")"
	log "data ok: guest $name read dom0's 8 MiB at 0 MiB and wrote 8 MiB at 16 MiB of $img, bit-exact; $(cat "$CASEDIR/vhd.out")"
	rm -f "$img"
}

# A tapdev served by blktapd, made with blktap-ctl as the admin guide says, given to a PV guest
# as phy:/dev/xen/blktap-2/tapdevN.
case_blktapd_phy() {
	blktap_loaded
	guest_pattern_case pv blktapd
}

# Two guests at once through block-tap: a PV guest makes ext4 on its disk, a PVH guest runs the
# pattern job on its own; then e2fsck and a loop mount in dom0 find the PV guest's tree
# bit-exact, and the PVH guest's data is in its image.
case_pv_pvh_ext4() {
	local a=g-bt-ext4 b=g-bt-pvh
	blktap_loaded
	img_new "$a" 128
	img_new "$b" 64 0 16
	# The PVH guest first: under TCG it takes longer to boot, and the two jobs should overlap.
	guest_start "$b" pvh small 256 "xg.job=pattern xg.in=0 xg.out=32 xg.len=16" "$(bt_disk aio "/srv/$b.img" xvda)"
	guest_start "$a" pv small 256 "xg.job=ext4" "$(bt_disk aio "/srv/$a.img" xvda)"
	bt_find aio "/srv/$b.img"
	bt_find aio "/srv/$a.img"
	log "both domains up: $(xl list | awk 'NR > 1 { printf "%s(%s) ", $1, $5 }')"
	guest_end "$a" 300
	guest_end "$b" 300
	bt_gone "after both guests' shutdown"
	ext4_verify "$a" "/srv/$a.img"
	check_pattern "$b" "/srv/$b.img" xvda 0 32 16
	rm -f "/srv/$a.img" "/srv/$b.img"
}

# The packages purged (after modprobe -r blktap, as the admin guide says): no file they
# installed is left, nor DKMS's tree or registration, nor a blktap module for modprobe.
case_debs_purge() {
	local f left=""
	taps_none || fail "taps left before the purge: $(taps_report)"
	modprobe -r blktap || hard_fail "modprobe -r blktap failed"
	dpkg -L blktap-rs-dkms blktap-rs-tools > "$CASEDIR/files" 2>&1 || fail "dpkg -L: $(cat "$CASEDIR/files")"
	log "$(wc -l < "$CASEDIR/files") paths in the packages"
	timeout 300 dpkg --purge blktap-rs-tools blktap-rs-dkms > "$CASEDIR/purge.out" 2>&1 ||
		{ cat "$CASEDIR/purge.out"; fail "dpkg --purge failed"; }
	sed 's/^/  /' "$CASEDIR/purge.out"
	while read -r f; do
		[ -d "$f" ] && [ ! -L "$f" ] && continue
		[ -e "$f" ] || [ -L "$f" ] && left="$left $f"
	done < "$CASEDIR/files"
	for f in /usr/src/blktap-* /var/lib/dkms/blktap $(find /lib/modules /etc/modprobe.d /usr/lib/udev /etc/udev /usr/lib/tmpfiles.d /usr/lib/modules-load.d -name '*blktap*' 2>/dev/null); do
		[ -e "$f" ] && left="$left $f"
	done
	[ -z "$left" ] || hard_fail "left after the purge:$left"
	! dpkg-query -W blktap-rs-dkms blktap-rs-tools > /dev/null 2>&1 || hard_fail "dpkg still knows the packages"
	! modinfo blktap > /dev/null 2>&1 || hard_fail "modinfo still finds blktap: $(modinfo -F filename blktap)"
	! dkms status 2>/dev/null | grep -q blktap || hard_fail "DKMS still has blktap: $(dkms status)"
	log "purged: no file of the packages, no /usr/src/blktap-*, no /var/lib/dkms/blktap, no module, no udev rule"
}

# Not in the default list: a check of the emulation itself. While a guest keeps its vCPU busy,
# two loops in dom0 hash the same bytes again and again; any wrong hash or user-space fault is
# the emulator corrupting user-space state (the flakes of the notes), not blktap.
case_emu_check() {
	local name=g-emu img=/srv/g-emu.img n=${EMU_ROUNDS:-100} bad
	img_new g-emu 64
	serve_blktapd "$img"
	guest_start "$name" pv small 256 "xg.job=ioloop" "$DEV,xvda"
	guest_wait "$name" 'XG: io running' 120
	local stop=$((SECONDS + 150))
	emu_loop() {
		local want got i=0 bad=0
		want=$(echo "blktap-rs emulation check" | sha256sum)
		while [ $i -lt "$n" ] && [ "$SECONDS" -lt "$stop" ]; do
			got=$(echo "blktap-rs emulation check" | sha256sum)
			[ "$got" = "$want" ] || bad=$((bad + 1))
			i=$((i + 1))
		done
		echo "$bad $i"
	}
	emu_loop > "$CASEDIR/emu.1" &
	emu_loop > "$CASEDIR/emu.2"
	wait
	bad=$(awk '{ b += $1; n += $2 } END { print b + 0 }' "$CASEDIR/emu.1" "$CASEDIR/emu.2")
	log "$(awk '{ n += $2 } END { print n + 0 }' "$CASEDIR/emu.1" "$CASEDIR/emu.2") hashes in dom0 beside a busy guest: $bad wrong"
	xl destroy "$name"
	dmesg | grep -E 'segfault at|general protection fault ip' | sed 's/^\[[ 0-9.]*\] /dom0 fault: /'
	[ "$bad" = 0 ] || fail "$bad wrong hashes"
}

ALL_CASES="dom0_boot pv_blktapd pvh_blktapd pv_tapdisk pvh_tapdisk ext4_fsck fio_verify two_guests
	shutdown_inflight destroy_inflight daemon_kill block_attach flush_discard large_requests"

# Large requests (issue 22): a blktapd tapdev negotiated with FEAT_LARGE (blktap-ctl create
# --features large: 1 MiB per ring request) under a PV guest that writes and reads 8 MiB with
# 1 MiB direct I/O. blkfront sends 128 KiB requests (32 indirect segments); blkback passes
# each to the tapdev as one bio, and each reaches blktapd as one ring request, not the 3 a
# V-XS ring needs: the tap sends no more ring requests than blkback received (its sysfs
# statistics, read while the guest is up), and they averaged over 64 KiB. Data bit-exact.
case_large_requests() {
	local name=g-large img=/srv/g-large.img domid counters rd wr rs ws sent avg
	img_new g-large 64 0 8
	create_tap blktapd "$img" blktap-ctl create --backend "file:$img" --features large \
		--log "$CASEDIR/blktapd.log"
	[ "$(cat "/sys/block/$(disk_of "$MINOR")/queue/max_hw_sectors_kb")" = 1024 ] ||
		fail "the tapdev takes $(cat "/sys/block/$(disk_of "$MINOR")/queue/max_hw_sectors_kb") KiB requests, not 1024"
	log "served $img with blktapd on $DEV, large requests (1 MiB)"
	guest_start "$name" pv small 256 "xg.job=pattern xg.in=0 xg.out=16 xg.len=8 xg.hold=1" "$DEV,xvda"
	guest_wait "$name" 'XG-RESULT: ' 180
	[ "$(guest_result "$name")" = "XG-RESULT: ok" ] || fail "guest $name: $(guest_result "$name")"
	domid=$(guest_domid "$name")
	counters=$(snap "$domid" "$(disk_of "$MINOR")" "$MINOR")
	counter() { echo "$counters" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
	rd=$(counter rd_req) wr=$(counter wr_req) rs=$(counter rd_sect) ws=$(counter wr_sect)
	sent=$(counter sent)
	[ $((rd + wr)) -gt 0 ] && [ -n "$sent" ] || fail "no blkback statistics or tap counter ($counters)"
	avg=$(( (rs + ws) / 2 / (rd + wr) ))
	log "blkback: $rd reads ($((rs / 2)) KiB), $wr writes ($((ws / 2)) KiB), $avg KiB a request; tap: $sent ring requests"
	[ "$sent" -le $((rd + wr)) ] || fail "$((rd + wr)) guest requests took $sent ring requests (at most one each expected)"
	[ "$avg" -ge 64 ] || fail "the guest's requests averaged $avg KiB: not large ones"
	timeout 60 xl destroy "$name" > "$CASEDIR/destroy.out" 2>&1 || { cat "$CASEDIR/destroy.out"; hard_fail "xl destroy $name failed"; }
	wait_for "$GONE_WAIT" guest_gone "$name" || hard_fail "domain $name still there $GONE_WAIT s after xl destroy"
	tap_destroy "$MINOR"
	check_pattern "$name" "$img" xvda 0 16 8
	rm -f "$img"
}

# A blktapd tapdev with the features of issue 20 (blktap-ctl create --features all): blkback
# advertises feature-flush-cache and feature-discard to the guest, whose disk has a write-back
# cache and discard; the guest's fsyncs reach blktapd as flushes (the tap's counter), and its
# fstrim, after removing a 32 MiB file, punches holes in the image (its block count in dom0).
case_flush_discard() {
	local name=g-trim img=/srv/g-trim.img domid be f0 f1 b0 b1 d1
	img_new g-trim 128
	create_tap blktapd "$img" blktap-ctl create --backend "file:$img" --features all \
		--log "$CASEDIR/blktapd.log"
	log "served $img with blktapd on $DEV, all features"
	f0=$(tap_stat "$MINOR" flushes)
	guest_start "$name" pv small 256 "xg.job=trim" "$DEV,xvda"
	guest_wait "$name" 'XG: synced' 240
	domid=$(guest_domid "$name")
	be=/local/domain/0/backend/vbd/$domid/51712
	log "blkback: feature-flush-cache=$(xenstore-read "$be/feature-flush-cache" 2>&1)" \
		"feature-discard=$(xenstore-read "$be/feature-discard" 2>&1)" \
		"discard-granularity=$(xenstore-read "$be/discard-granularity" 2>&1)"
	[ "$(xenstore-read "$be/feature-flush-cache" 2>/dev/null)" = 1 ] ||
		fail "blkback does not advertise feature-flush-cache for a tapdev with a write-back cache"
	[ "$(xenstore-read "$be/feature-discard" 2>/dev/null)" = 1 ] ||
		fail "blkback does not advertise feature-discard for a tapdev with discard"
	f1=$(tap_stat "$MINOR" flushes)
	[ "${f1:-0}" -gt "${f0:-0}" ] || fail "the guest's fsync sent no flush to blktapd (flushes ${f0:-0} -> ${f1:-0})"
	b0=$(stat -c %b "$img")
	log "guest synced 32 MiB: flushes ${f0:-0} -> $f1; image blocks $b0"
	guest_end "$name" 240
	[ "$(guest_data "$name" trim.write_cache)" = "write_back" ] ||
		fail "the guest's xvda has write_cache $(guest_data "$name" trim.write_cache)"
	[ "$(guest_data "$name" trim.discard_max_bytes)" != 0 ] || fail "the guest's xvda has no discard"
	d1=$(tap_stat "$MINOR" discards)
	b1=$(stat -c %b "$img")
	log "guest fstrim: $(guest_data "$name" trim.fstrim); discards ${d1:-0}; image blocks $b0 -> $b1"
	[ "${d1:-0}" -gt 0 ] || fail "the guest's fstrim sent no discard to blktapd"
	[ "$b1" -le $((b0 - 24 * 2048)) ] || fail "fstrim of 32 MiB freed too little of $img: blocks $b0 -> $b1"
	tap_destroy "$MINOR"
	e2fsck -fn "$img" > "$CASEDIR/fsck.out" 2>&1 || { cat "$CASEDIR/fsck.out"; hard_fail "e2fsck of $img: not clean"; }
	rm -f "$img"
}

# --- running cases ----------------------------------------------------------------------------

# listed guests|pids: the guests (names) or daemons (pids) the case started, one a line.
listed() { cat "$CASEDIR/$1" 2>/dev/null; }

# cleanup: whatever a case left: domains, taps, daemons.
cleanup() {
	local g m
	for g in $(listed guests); do
		guest_alive "$g" && { log "cleanup: xl destroy $g"; timeout 60 xl destroy "$g" > /dev/null 2>&1; }
	done
	while read -r m _; do
		[ -n "$m" ] || continue
		tap_gone "$m" && continue
		log "cleanup: destroying tap $m"
		(tap_destroy "$m") || {
			# Daemons the case started itself (blktapd --foreground) are killed by pid.
			for p in $(listed pids); do kill -KILL "$p" 2>/dev/null; done
			sleep 1
			blktap-ctl free -m "$m" > /dev/null 2>&1 || log "cleanup: tap $m cannot be freed"
		}
	done < <(cat "$CASEDIR/taps" 2>/dev/null)
	for p in $(listed pids); do kill -KILL "$p" 2>/dev/null; done
	rm -f /srv/*.img /srv/*.vhd
}

# relay_guest_logs: every guest console log of the case, to the console for the host.
relay_guest_logs() {
	local g
	for g in $(listed guests); do
		guest_log "$g" | sed "s/^/@@G $g| /"
		# Slowly enough for Xen's serial buffer.
		sleep 0.2
	done
}

# guest_reports: kernel reports (WARN, BUG, ...) in the case's guests' logs.
guest_reports() {
	local g rc=0
	for g in $(listed guests); do
		guest_log "$g" > "$CASEDIR/$g.console"
		# A user-space fault ("traps: sh[12] general protection fault ip:...") is no kernel
		# report; flake_signs deals with it.
		if ! BLKTAP_KMSG_IGNORE='^traps: [^ ]+\[[0-9]+\] general protection fault ip:' \
			bash $X/check-kmsg.sh --quiet "$CASEDIR/$g.console"; then
			log "kernel report in guest $g's console log"
			rc=1
		fi
	done
	return $rc
}

# flake_signs MARK: user-space faults in dom0 (since MARK in its kernel log) or in the case's
# guests, and PVH guests that triple-faulted (Xen's log, cleared when the case started): the
# emulation flakes seen under QEMU TCG, retried once and reported.
flake_signs() {
	local g
	xl dmesg 2>/dev/null | grep -a 'Triple fault' | sed 's/^/xen: /'
	dmesg | awk -v m="$1" 'f && /segfault at|traps: .* general protection/ { sub(/^\[[ 0-9.]*\] /, ""); print "dom0: " $0 } index($0, m) { f = 1 }'
	for g in $(listed guests); do
		guest_log "$g" | grep -E 'segfault at|traps: .* general protection' | sed "s/^\[[ 0-9.]*\] /$g: /"
	done
}

# run_case N NAME: one case in its own process, with a time limit; retried once after a
# failure that comes with a flake sign and no hard failure.
run_case() {
	local n=$1 name=$2 rc attempt=1 mark signs note=""
	kmsg "start $n $name"
	echo "# start $n $name"
	while :; do
		rm -rf "$CASEDIR"
		mkdir -p "$CASEDIR"
		mark="case-$n-$attempt-$(now)"
		kmsg "$mark"
		xl dmesg -c > /dev/null 2>&1
		# The case's exit status goes through a file: the pipe to sed would hide it.
		{ timeout -k 10 900 bash "$0" one "$name" < /dev/null 2>&1; echo $? > "$CASEDIR.rc"; } |
			sed -u 's/^/# /'
		rc=$(cat "$CASEDIR.rc")
		if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "# TIMEOUT after 900 s"; : > "$CASEDIR/hard"; fi
		cleanup 2>&1 | sed 's/^/# /'
		if ! guest_reports 2>&1 | sed 's/^/# /'; then rc=1; : > "$CASEDIR/hard"; fi
		signs=$(flake_signs "$mark")
		relay_guest_logs
		if [ "$rc" != 0 ] && [ "$attempt" = 1 ] && [ ! -e "$CASEDIR/hard" ] && [ -n "$signs" ]; then
			printf '%s\n' "$signs" | while IFS= read -r l; do echo "# flake: $l"; done
			echo "# retrying $name once: it failed with a user-space segfault (emulation flake)"
			note=" # retried after an emulation flake: $(echo "$signs" | head -n 1 | cut -c1-100)"
			attempt=2
			continue
		fi
		break
	done
	kmsg "end $n $name rc=$rc"
	if [ "$rc" = 0 ]; then ktap "ok $n $name$note"; return 0; fi
	ktap "not ok $n $name${note:- # exit=$rc}"
	return 1
}

main() {
	local cases n=0 pass=0 failed=0 c
	cases=${*:-all}
	[ "$cases" != all ] || cases=$ALL_CASES
	# shellcheck disable=SC2086 # a list of words
	set -- $cases
	echo "TAP version 13"
	ktap "1..$#"
	for c; do
		n=$((n + 1))
		if ! declare -F "case_$c" > /dev/null; then
			ktap "not ok $n $c # no such case"
			failed=$((failed + 1))
			continue
		fi
		if run_case "$n" "$c"; then pass=$((pass + 1)); else failed=$((failed + 1)); fi
	done
	ktap "XEN-RESULT: passed=$pass failed=$failed"
}

if [ "${1:-}" = one ]; then
	mkdir -p "$CASEDIR"
	: > "$CASEDIR/taps"
	: > "$CASEDIR/guests"
	"case_$2"
	exit $?
fi
main "$@"
