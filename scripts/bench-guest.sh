#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The `make bench` workload, run inside the perf-kernel VM (busybox ash) by scripts/bench.sh.
#
#   sh bench-guest.sh CONFIG
#
# CONFIG is a shell fragment setting:
#   TARGETS   space-separated, from: blktap-null blktap-null-large blktap-null-lowlat ublk-null
#             blktap-null-deep ublk-null-deep (depth 128) nullb blktap-file
#             blktap-file-large blktap-file-sync
#             blktap-file-uring blktap-ext4-sync blktap-ext4-uring loop ublk-loop
#             tapdisk-blktap tapdisk-nbd (the real tapdisk serving the image through its tap,
#             or through its NBD socket and the kernel's NBD client: one tapdisk process each)
#   JOBS      space-separated job names (see job_args below)
#   REPS      repetitions; the loops run rep -> job -> target, so that the targets compared
#             with each other run seconds apart, and slow drifts of the host (other VMs,
#             builds) spread over all targets instead of hitting one of them
#   RUNTIME   seconds measured per job; RAMP: seconds of warm-up before that
#   IMG_MB    size of the tmpfs image of the file targets; SIZE: fio's region (--size)
#   PIN       split: fio on CPU 1, user-space servers on CPU 0; same: both on CPU 0 (the
#             other vCPU idles); none: no pinning
#   PROFILE   1: sample every CPU with perf (cpu-clock, call graphs) over each run's measured
#             window and emit perf's report as "profile/<target>/<job>/<rep>" (the sampling
#             costs CPU itself: such runs profile the path, they do not rank the targets)
#
# Results leave the VM on a second serial port (/dev/ttyS1, a file on the host), each record as
#   BENCH-BEGIN <name>\n <base64 of gzip of the payload> \nBENCH-END <name>
# with names "fio/<target>/<job>/<rep>" (fio --output-format=json), "cpu/<target>/<job>/<rep>"
# (CPU accounting of the run, one JSON line) and "meta/..." (text). Without ttyS1 the records go
# to the console instead (the host extracts them from the console log; vm-init prefixes "# ").
set -u
CONF=${1:-/tests/bench.conf}
# shellcheck disable=SC1090
. "$CONF"
: "${TARGETS:?}" "${JOBS:?}" "${REPS:=3}" "${RUNTIME:=4}" "${RAMP:=1}" "${IMG_MB:=1024}"
: "${SIZE:=1g}" "${PIN:=split}" "${PROFILE:=0}"
case "$PIN" in 1) PIN='split' ;; 0) PIN='none' ;; esac

say() { printf 'bench: %s\n' "$*"; }
fail() { say "FAILED: $*"; exit 1; }

# --- data channel ---------------------------------------------------------------------------
DATA=/dev/console
if [ -c /dev/ttyS1 ] && stty -F /dev/ttyS1 raw -echo 115200 2>/dev/null; then
	DATA=/dev/ttyS1
fi
emit() { # emit NAME FILE
	{
		echo "BENCH-BEGIN $1"
		gzip -c "$2" | base64
		echo "BENCH-END $1"
	} > "$DATA"
}
emit_text() { # emit_text NAME TEXT
	printf '%s\n' "$2" > /tmp/emit.txt
	emit "$1" /tmp/emit.txt
}
say "data channel: $DATA"

# --- fio jobs -------------------------------------------------------------------------------
# 44k is one full blktap request (11 segments of 4 KiB); 1M is split into 24 of them by blktap
# (and into 2 by rublk's default 512 KiB buffers).
job_args() {
	case "$1" in
	randread-4k-qd1)   echo "--rw=randread --bs=4k --iodepth=1" ;;
	randread-4k-qd32)  echo "--rw=randread --bs=4k --iodepth=32" ;;
	randwrite-4k-qd1)  echo "--rw=randwrite --bs=4k --iodepth=1" ;;
	randwrite-4k-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
	randrw70-4k-qd32)  echo "--rw=randrw --rwmixread=70 --bs=4k --iodepth=32" ;;
	read-44k-qd32)     echo "--rw=read --bs=44k --iodepth=32" ;;
	write-44k-qd32)    echo "--rw=write --bs=44k --iodepth=32" ;;
	read-1m-qd8)       echo "--rw=read --bs=1m --iodepth=8" ;;
	write-1m-qd8)      echo "--rw=write --bs=1m --iodepth=8" ;;
	randread-4k-qd128) echo "--rw=randread --bs=4k --iodepth=128" ;;
	randwrite-4k-qd128) echo "--rw=randwrite --bs=4k --iodepth=128" ;;
	*) return 1 ;;
	esac
}
for j in $JOBS; do job_args "$j" >/dev/null || fail "unknown job $j"; done

# --- targets --------------------------------------------------------------------------------
# Each setup_* sets DEV (block device) and SRV (pid of its user-space server, or empty).
IMG=/tmp/bench/disk.img
on_cpu0() { if [ "$PIN" != none ]; then taskset -c 0 "$@"; else "$@"; fi; }
new_pid() { # new_pid NAME OLD_PIDS: a pid of NAME that is not in OLD_PIDS
	for p in $(pidof "$1"); do
		case " $2 " in *" $p "*) ;; *) echo "$p"; return 0 ;; esac
	done
}
wait_blk() { # wait_blk DEV: up to 10 s for a block device node
	i=0
	while [ ! -b "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	[ -b "$1" ]
}
load() { # load MODULE [ARGS...]: once
	m=$1; shift
	[ -d "/sys/module/$(echo "$m" | tr - _)" ] || insmod "/lib/modules/$m.ko" "$@" || fail "insmod $m"
}
image() {
	[ -f "$IMG" ] && return 0
	mkdir -p /tmp/bench
	mount -t tmpfs -o size=$((IMG_MB + 64))m tmpfs /tmp/bench || fail "tmpfs"
	# Written through, so that every target reads real tmpfs pages, not holes.
	dd if=/dev/zero of="$IMG" bs=1M count="$IMG_MB" 2>/dev/null || fail "image"
}
# The image on ext4 (on a loop device over a tmpfs file): a file system that can start I/O
# without blocking (RWF_NOWAIT), where blktapd --io auto chooses io_uring; tmpfs cannot.
EXT4_IMG=/tmp/bench-ext4/disk.img
ext4_image() {
	[ -f "$EXT4_IMG" ] && return 0
	mkdir -p /tmp/bench-ext4-back /tmp/bench-ext4
	mount -t tmpfs -o size=$((IMG_MB + 192))m tmpfs /tmp/bench-ext4-back || fail "tmpfs"
	truncate -s $((IMG_MB + 128))M /tmp/bench-ext4-back/ext4.img || fail "ext4 backing file"
	if [ -x /usr/bin/losetup ]; then
		EXT4_LOOP=$(/usr/bin/losetup --direct-io=on --show -f /tmp/bench-ext4-back/ext4.img) ||
			fail "losetup"
	else
		EXT4_LOOP=$(losetup -f) || fail "losetup"
		losetup "$EXT4_LOOP" /tmp/bench-ext4-back/ext4.img || fail "losetup"
	fi
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$EXT4_LOOP" || fail "mkfs.ext4"
	mount -t ext4 "$EXT4_LOOP" /tmp/bench-ext4 || fail "mount ext4"
	dd if=/dev/zero of="$EXT4_IMG" bs=1M count="$IMG_MB" conv=fsync 2>/dev/null || fail "image"
}
blktap_dev() { # blktap_dev SPEC [BLKTAP-CTL CREATE ARGS...]
	load blktap
	old=$(pidof blktapd)
	spec=$1; shift
	DEV=$(on_cpu0 blktap-ctl create --backend "$spec" "$@" --log /tmp/blktapd.log) || fail "blktap-ctl create $spec $*"
	wait_blk "$DEV" || fail "no $DEV"
	SRV=$(new_pid blktapd "$old")
}
ublk_dev() { # ublk_dev ID TARGET [ARGS...]: one queue, depth $UBLK_DEPTH (32 unless set),
	# default (kernel copy) buffers
	load ublk_drv
	id=$1; shift
	old=$(pidof rublk)
	on_cpu0 rublk add "$@" -n "$id" -q 1 -d "${UBLK_DEPTH:-32}" --quiet >"/tmp/rublk.$id.log" 2>&1 ||
		{ cat "/tmp/rublk.$id.log"; fail "rublk add $*"; }
	DEV=/dev/ublkb$id
	wait_blk "$DEV" || fail "no $DEV"
	SRV=$(new_pid rublk "$old")
}
# The real tapdisk (xapi-project/blktap 3.55.5; bench.sh puts it where tap-ctl looks for it).
# What it needs at run time: /var/run for its control sockets, syslog on /dev/log.
TD_MINORS=
tapdisk_env() {
	if [ ! -x /usr/libexec/tapdisk ] || [ ! -x /usr/sbin/tap-ctl ]; then
		fail "no tapdisk in the VM: $(cat /etc/blktap-rs/tapdisk-skip 2>/dev/null || echo 'not passed by bench.sh')"
	fi
	mkdir -p /var/run /var/log /run
	if [ ! -S /dev/log ]; then
		syslogd -O /var/log/messages || fail "syslogd"
		i=0
		while [ ! -S /dev/log ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	fi
	load blktap
}
td_pid() { # td_pid MINOR: the tapdisk serving the tap ("pid=P minor=M state=S args=A" lines)
	tap-ctl list -m "$1" < /dev/null 2>/dev/null | awk -v m="minor=$1" '
		{ for (i = 1; i <= NF; i++) if ($i == m) for (k = 1; k <= NF; k++)
			if ($k ~ /^pid=/) { print substr($k, 5); exit } }'
}
tapdisk_dev() { # tapdisk_dev NAME: a new tapdisk serving the image; sets DEV (its tapdev), SRV, TD_MINOR
	tapdisk_env
	# tap-ctl spawns tapdisk, which inherits stdout and stderr: into files, never into a pipe
	# (a command substitution would wait for the daemon). It inherits the CPU affinity too.
	on_cpu0 tap-ctl create -a "aio:$IMG" < /dev/null > "/tmp/td-$1.out" 2> "/tmp/td-$1.err" ||
		{ cat "/tmp/td-$1.err"; tail -n 20 /var/log/messages; fail "tap-ctl create -a aio:$IMG"; }
	DEV=$(tail -n 1 "/tmp/td-$1.out")
	TD_MINOR=${DEV##*tapdev}
	case "$TD_MINOR" in ''|*[!0-9]*) fail "tap-ctl create printed '$DEV'" ;; esac
	TD_MINORS="$TD_MINORS $TD_MINOR"
	wait_blk "$DEV" || fail "no $DEV"
	SRV=$(td_pid "$TD_MINOR")
	[ -n "$SRV" ] || fail "tap-ctl list shows no tapdisk for tap $TD_MINOR"
}
# tapdisk opens an NBD server for every VBD: /var/run/blktap-control/nbd<pid>.<minor> speaks
# the fixed newstyle handshake (NBD_OPT_GO, single export, no flush or trim); nbd-client hands
# the connected socket to nbd.ko over netlink and exits. One connection: the server does not
# offer multi-conn.
#
# nbd.ko receives every reply in one long-running work item of an unbound workqueue
# (nbd0-recv), started at connect time in a kworker allowed on every CPU. Left there, it ran on
# vCPU 1 while tapdisk sent from vCPU 0, and under TCG the two spun against each other on the
# socket's wait-queue lock (two thirds of the samples in a profile): that measures TCG's
# cross-vCPU locking, not NBD. So, like the servers, it is put on the server CPU: the unbound
# workqueue cpumask is narrowed while nbd-client connects (the worker keeps the affinity of the
# pool it started in) and restored at once, so that no other target is affected.
NBD_DEV=/dev/nbd0
WQ_MASK=/sys/devices/virtual/workqueue/cpumask
nbd_recv_cpus() { # PID:CPUS of the kworker running nbd0's receive work ("kworker/uN:M+nbd0-recv")
	for k in /proc/[0-9]*; do
		case "$(cat "$k/comm" 2>/dev/null)" in
		*+nbd0-recv*) echo "${k#/proc/}:$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' "$k/status")" ;;
		esac
	done
}
nbd_dev() { # nbd_dev NAME: /dev/nbd0 on the NBD socket of tapdisk $SRV, tap $TD_MINOR
	load nbd nbds_max=1
	sock=/var/run/blktap-control/nbd$SRV.$TD_MINOR
	i=0
	while [ ! -S "$sock" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -S "$sock" ] || { ls -l /var/run/blktap-control; fail "tapdisk $SRV has no NBD socket $sock"; }
	wq_mask=
	if [ "$PIN" != none ] && [ -w "$WQ_MASK" ]; then
		wq_mask=$(cat "$WQ_MASK")
		echo 1 > "$WQ_MASK" || say "cannot narrow $WQ_MASK: nbd0-recv may run on any vCPU"
	fi
	# The same logical block size as the tapdev (512).
	nbd_rc=0
	on_cpu0 /usr/bin/nbd-client -unix "$sock" "$NBD_DEV" -b 512 < /dev/null > "/tmp/nbd-$1.out" 2>&1 ||
		nbd_rc=$?
	[ -z "$wq_mask" ] || echo "$wq_mask" > "$WQ_MASK" || say "cannot restore $WQ_MASK to $wq_mask"
	[ "$nbd_rc" = 0 ] ||
		{ cat "/tmp/nbd-$1.out"; tail -n 20 /var/log/messages; fail "nbd-client -unix $sock $NBD_DEV"; }
	wait_blk "$NBD_DEV" || fail "no $NBD_DEV"
	i=0
	while [ "$(cat /sys/block/nbd0/size)" = 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	[ "$(cat /sys/block/nbd0/size)" != 0 ] || fail "$NBD_DEV has no size after nbd-client"
	DEV=$NBD_DEV
}
setup_target() {
	SRV=
	case "$1" in
	blktap-null) blktap_dev null:1G ;;
	blktap-file) image; blktap_dev "file:$IMG" ;;
	blktap-file-sync) image; blktap_dev "file:$IMG" --io sync ;;
	blktap-file-uring) image; blktap_dev "file:$IMG" --io uring ;;
	blktap-null-large) blktap_dev null:1G --features large ;;
	blktap-null-lowlat) blktap_dev null:1G --features large,low-latency ;;
	blktap-file-large) image; blktap_dev "file:$IMG" --features all,large ;;
	blktap-ext4-sync) ext4_image; blktap_dev "file:$EXT4_IMG" --io sync ;;
	blktap-ext4-uring) ext4_image; blktap_dev "file:$EXT4_IMG" --io uring ;;
	ublk-null) ublk_dev 0 null ;;
	# Depth 128: a deep blktap ring (FEAT_DEEP) against ublk at the same depth.
	blktap-null-deep) blktap_dev null:1G --features large,deep --ring-slots 128 ;;
	ublk-null-deep) UBLK_DEPTH=128 ublk_dev 2 null ;;
	ublk-loop) image; ublk_dev 1 loop -f "$IMG" ;;
	tapdisk-blktap) image; tapdisk_dev "$1" ;;
	tapdisk-nbd) image; tapdisk_dev "$1"; nbd_dev "$1" ;;
	nullb)
		load null_blk queue_mode=2 irqmode=0 hw_queue_depth=32 submit_queues=1 \
			memory_backed=0 gb=1 nr_devices=1
		DEV=/dev/nullb0; wait_blk "$DEV" || fail "no $DEV" ;;
	loop)
		image
		# busybox ash runs its own applets before anything on PATH: name util-linux's
		# losetup (bench.sh adds it when the host has it) by its path.
		if [ -x /usr/bin/losetup ]; then
			DEV=$(/usr/bin/losetup --direct-io=on --show -f "$IMG") || fail "losetup"
		else
			say "no util-linux losetup: loop without direct I/O"
			DEV=$(losetup -f) || fail "losetup"
			losetup "$DEV" "$IMG" || fail "losetup"
		fi
		wait_blk "$DEV" || fail "no $DEV" ;;
	*) fail "unknown target $1" ;;
	esac
	# Servers pick their own affinity (rublk pins its queue thread to a CPU of its choosing,
	# not always vCPU 0): put every thread they have now on vCPU 0. (Threads created later, such
	# as io_uring's io-wq workers, take the kernel's default mask.)
	if [ -n "$SRV" ] && [ "$PIN" != none ]; then
		for t in /proc/"$SRV"/task/*; do taskset -p 1 "${t##*/}" >/dev/null 2>&1; done
	fi
	# Same block-layer settings everywhere: no I/O scheduler.
	# (tap-ctl style nodes are not named after the disk: find it by number)
	mm=$(stat -L -c '%t %T' "$DEV")
	q=/sys/dev/block/$(printf '%d:%d' "0x${mm% *}" "0x${mm#* }")/queue
	[ ! -w "$q/scheduler" ] || echo none > "$q/scheduler" 2>/dev/null
	eval "DEV_$(echo "$1" | tr - _)=\$DEV SRV_$(echo "$1" | tr - _)=\$SRV SYS_$(echo "$1" | tr - _)=\${q%/queue}"
	# A tap's counters (batching): its disk has the tap's minor.
	case "$1" in
	blktap-*|tapdisk-blktap)
		eval "TAP_$(echo "$1" | tr - _)=/sys/class/blktap2/blktap!blktap$(printf '%d' "0x${mm#* }")/debug" ;;
	esac
	info="$1: dev=$DEV server_pid=${SRV:-none}"
	for a in scheduler nr_requests max_sectors_kb max_hw_sectors_kb max_segments \
		logical_block_size nomerges rq_affinity; do
		info="$info $a=$(tr ' ' _ < "$q/$a" 2>/dev/null)"
	done
	[ "$1" != loop ] || info="$info dio=$(cat "${q%/queue}/loop/dio" 2>/dev/null)"
	case "$1" in tapdisk-*) info="$info tap=$TD_MINOR" ;; esac
	if [ "$1" = tapdisk-nbd ]; then
		info="$info nbd_socket=$sock"
		info="$info nbd_recv=$(nbd_recv_cpus)"
	fi
	if [ -n "$SRV" ]; then
		for t in /proc/"$SRV"/task/*; do
			info="$info thread=${t##*/}:$(taskset -p "${t##*/}" 2>/dev/null | sed 's/.*: //')"
		done
	fi
	say "$info"
	META="$META
$info"
}

teardown() {
	# The tapdisk targets first: "blktap-ctl list" below would see their taps too.
	[ -z "${DEV_tapdisk_nbd:-}" ] || /usr/bin/nbd-client -d "$NBD_DEV" < /dev/null > /tmp/nbd-d.out 2>&1 ||
		{ cat /tmp/nbd-d.out; say "nbd-client -d failed"; }
	for m in $TD_MINORS; do
		p=$(td_pid "$m")
		tap-ctl destroy -p "$p" -m "$m" < /dev/null > /tmp/td-destroy.out 2>&1 ||
			{ cat /tmp/td-destroy.out; say "tap-ctl destroy -m $m failed"; }
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	done
	set | grep -q '^DEV_blktap_' && {
		blktap-ctl list
		for m in $(blktap-ctl list | awk '$1 ~ /^[0-9]+$/ { print $1 }'); do
			blktap-ctl destroy -m "$m" || say "destroy $m failed"
		done
	}
	[ -z "${DEV_ublk_null:-}" ] || rublk del -n 0 || say "rublk del 0 failed"
	[ -z "${DEV_ublk_loop:-}" ] || rublk del -n 1 || say "rublk del 1 failed"
	[ -z "${DEV_loop:-}" ] || losetup -d "$DEV_loop" || say "losetup -d failed"
	for m in null_blk ublk_drv nbd blktap; do
		[ ! -d "/sys/module/$m" ] || rmmod "$m" || say "rmmod $m failed"
	done
}

# --- accounting -----------------------------------------------------------------------------
# Busy and idle ticks (USER_HZ) over all CPUs, and the utime+stime ticks of a process.
cpu_ticks() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat; }
proc_ticks() { if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; else echo 0; fi; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# Requests and sectors completed by the disk (reads, then writes).
dev_stat() { awk '{ print $1, $3, $5, $7 }' "$1/stat"; }
# A tap's requests sent, wake-ups, batches sent (polls) and batches answered (RESPONDs).
tap_counts() {
	if [ -n "$1" ] && [ -r "$1" ]; then
		awk '{ for (i = 1; i <= NF; i++) {
			if ($i ~ /^sent:/) s = substr($i, 6); if ($i ~ /^wakeups:/) w = substr($i, 9)
			if ($i ~ /^dispatches:/) d = substr($i, 12); if ($i ~ /^responds:/) r = substr($i, 10) } }
			END { print s + 0, w + 0, d + 0, r + 0 }' "$1"
	else echo 0 0 0 0; fi
}
snapshot() { # snapshot SYSDEV SERVER_PID TAP_DEBUG: one line of 12 counters
	echo "$(uptime_s) $(cpu_ticks) $(proc_ticks "$2") $(dev_stat "$1") $(tap_counts "$3")"
}

# Where the CPU time of the sampled window went: per task (comm), per symbol without and with
# callees, and the call chains into the blktap module.
profile_report() { # profile_report TARGET JOB REP
	[ -s /tmp/perf.data ] || return 0
	r="perf report -i /tmp/perf.data --stdio --no-header --percent-limit 0.5"
	{
		echo "== samples by task and object"
		$r --sort comm,dso -g none
		echo "== samples by symbol (self)"
		$r --no-children --sort sym -g none
		echo "== samples by symbol (with callees)"
		$r --children --sort sym -g none
	} > /tmp/profile.txt 2>&1
	emit "profile/$1/$2/$3" /tmp/profile.txt
	rm -f /tmp/perf.data
}

# Runs one fio job. While it runs, the CPU and disk counters are read at the end of fio's ramp
# (first I/O seen on the disk + RAMP) and RUNTIME - 1 s later (the snapshots themselves take a
# while under TCG): the CPU cost per I/O of the steady state, without fio's start-up and exit.
run_job() { # run_job TARGET JOB REP
	dev='' srv='' sys='' tap=''
	eval "dev=\$DEV_$(echo "$1" | tr - _) srv=\$SRV_$(echo "$1" | tr - _) sys=\$SYS_$(echo "$1" | tr - _) tap=\${TAP_$(echo "$1" | tr - _):-}"
	case "$PIN" in
	split) pin=--cpus_allowed=1 ;;
	same) pin=--cpus_allowed=0 ;;
	*) pin= ;;
	esac
	# shellcheck disable=SC2046 # job_args is a word list
	fio --name="$2" --filename="$dev" --ioengine=libaio --direct=1 \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --size="$SIZE" --numjobs=1 \
		--norandommap --randrepeat=0 --lat_percentiles=1 $pin $(job_args "$2") \
		--output-format=json --output=/tmp/fio.json >/tmp/fio.err 2>&1 &
	fpid=$!
	d0=$(dev_stat "$sys") i=0
	while [ "$(dev_stat "$sys")" = "$d0" ] && [ $i -lt 600 ] && kill -0 "$fpid" 2>/dev/null; do
		sleep 0.05; i=$((i + 1))
	done
	sleep "$RAMP"
	a=$(snapshot "$sys" "$srv" "$tap")
	window=$(awk -v r="$RUNTIME" 'BEGIN { print (r > 2) ? r - 1 : r / 2 }')
	if [ "$PROFILE" = 1 ]; then
		# cpu-clock is a software event: TCG has no PMU. Frame pointers give call chains.
		perf record -q -a -g -e cpu-clock -F 997 -o /tmp/perf.data -- sleep "$window" \
			>/tmp/perf.err 2>&1 || say "perf record failed: $(head -c 300 /tmp/perf.err)"
	else
		sleep "$window"
	fi
	b=$(snapshot "$sys" "$srv" "$tap")
	wait "$fpid"
	rc=$?
	[ "$PROFILE" != 1 ] || profile_report "$1" "$2" "$3"
	if [ $rc != 0 ]; then
		say "fio $1 $2 rep $3 failed (rc=$rc): $(head -c 400 /tmp/fio.err)"
		FAILED=$((FAILED + 1))
		return 0
	fi
	emit "fio/$1/$2/$3" /tmp/fio.json
	echo "$a $b" | awk -v t="$1" -v j="$2" -v r="$3" '{
		printf "{\"target\":\"%s\",\"job\":\"%s\",\"rep\":%s,\"window_s\":%.2f,", t, j, r, $13-$1
		printf "\"busy_ticks\":%d,\"idle_ticks\":%d,\"server_ticks\":%d,", $14-$2, $15-$3, $16-$4
		printf "\"rd_reqs\":%d,\"rd_sectors\":%d,\"wr_reqs\":%d,\"wr_sectors\":%d,", $17-$5, $18-$6, $19-$7, $20-$8
		printf "\"tap_sent\":%d,\"tap_wakeups\":%d,\"tap_dispatches\":%d,\"tap_responds\":%d,", $21-$9, $22-$10, $23-$11, $24-$12
		printf "\"user_hz\":100}\n" }' > /tmp/cpu.json
	emit "cpu/$1/$2/$3" /tmp/cpu.json
	awk -v t="$1" -v j="$2" -v r="$3" '
		/"iops" :/ { gsub(/[ ,]/, ""); split($0, a, ":"); s += a[2] }
		END { printf "bench: %-12s %-18s rep %s: %.0f IOPS\n", t, j, r, s }' /tmp/fio.json
}

# --- main -----------------------------------------------------------------------------------
FAILED=0
META="kernel: $(uname -r) $(uname -v)
cpus: $(nproc) model: $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)
mem: $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)
clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
fio: $(fio --version)
rublk: $(rublk --version 2>/dev/null || echo none)
nbd-client: $(if [ -x /usr/bin/nbd-client ]; then /usr/bin/nbd-client -V 2>&1 | head -n 1; else echo none; fi)
config: targets=[$TARGETS] jobs=[$JOBS] reps=$REPS runtime=$RUNTIME ramp=$RAMP size=$SIZE pin=$PIN img_mb=$IMG_MB"
say "setting up: $TARGETS"
for t in $TARGETS; do setup_target "$t"; done
emit_text meta/setup "$META"
t_start=$(uptime_s)
rep=1
while [ "$rep" -le "$REPS" ]; do
	for j in $JOBS; do
		for t in $TARGETS; do run_job "$t" "$j" "$rep"; done
	done
	rep=$((rep + 1))
done
say "measured in $(awk -v a="$t_start" -v b="$(uptime_s)" 'BEGIN { printf "%.0f", b - a }') s"
# Diagnostics for the whole run: the blktap driver's counters, where interrupts and CPU time went.
diag="failed_runs=$FAILED"
[ -z "${DEV_tapdisk_nbd:-}" ] || diag="$diag
nbd_recv_worker_at_end=$(nbd_recv_cpus)"
for f in /sys/class/blktap2/*/debug; do
	[ -r "$f" ] && diag="$diag
== $f
$(cat "$f")"
done
diag="$diag
== /proc/stat
$(grep '^cpu' /proc/stat)
== /proc/interrupts
$(cat /proc/interrupts)
== /proc/softirqs
$(cat /proc/softirqs)"
# tapdisk logs through syslog: its NBD handshake, its errors.
[ ! -f /var/log/messages ] || diag="$diag
== /var/log/messages (tapdisk, last 60 lines)
$(tail -n 60 /var/log/messages)"
teardown
emit_text meta/end "$diag"
echo "BENCH-DONE failed=$FAILED" > "$DATA"
sync
[ "$FAILED" = 0 ] || fail "$FAILED fio run(s) failed"
say "done"
